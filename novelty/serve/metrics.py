"""The service's metrics, exposed with ``prometheus_client``; every series of the service starts with ``novelty_``.

Each :class:`Metrics` keeps its own :class:`~prometheus_client.CollectorRegistry` — never the process-wide
default one — so several apps in one process (and tests) keep separate counts. Next to the ``novelty_*``
series that registry carries prometheus_client's process, GC and platform collectors (``process_*``,
``python_*``). ``render()`` gives the Prometheus text format, version 0.0.4 (:data:`CONTENT_TYPE`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["BATCH_BUCKETS", "CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics"]

#: seconds; from a cached small image to a slow batch
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

#: the format ``generate_latest`` writes (prometheus_client >= 0.23 calls it ``CONTENT_TYPE_PLAIN_0_0_4``; its
#: ``CONTENT_TYPE_LATEST`` names version 1.0.0 there)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Read = Callable[[], dict[tuple[str, ...], float]]


class _ReadAtScrape:
    """A counter or gauge family whose series are read at scrape time from ``read()`` (label values → value)."""

    def __init__(self, name: str, kind: str, help_text: str, labels: Sequence[str], read: Read):
        self.name, self.kind, self.help, self.label_names, self.read = (
            name,
            kind,
            help_text,
            list(labels),
            read,
        )

    def _family(self) -> CounterMetricFamily | GaugeMetricFamily:
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        return cls(self.name, self.help, labels=self.label_names)

    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        # the names without calling read(): the registry asks when registering, before the service is built
        yield self._family()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        family = self._family()
        for values, v in sorted(self.read().items()):
            family.add_metric(list(values), float(v))
        yield family


class Metrics:
    """Counters, gauges and histograms with fixed label names on this instance's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self._kinds: dict[str, tuple[str, tuple[str, ...]]] = {}  # name → (kind, label names)

    def _declare(self, name: str, kind: str, labels: Sequence[str]) -> None:
        if not name.startswith("novelty_"):
            raise ValueError(f"metric {name!r} must start with novelty_")
        self._kinds[name] = (kind, tuple(labels))

    def counter(
        self, name: str, help_text: str, labels: Sequence[str] = (), read: Read | None = None
    ) -> None:
        """A counter increased with :meth:`inc`, or read at scrape time from ``read()`` (a count kept elsewhere)."""
        self._simple(name, "counter", help_text, labels, read)

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = (), read: Read | None = None) -> None:
        """A gauge set with :meth:`set`, or read at scrape time from ``read()`` (label values → value)."""
        self._simple(name, "gauge", help_text, labels, read)

    def _simple(self, name: str, kind: str, help_text: str, labels: Sequence[str], read: Read | None) -> None:
        self._declare(name, kind, labels)
        if read is not None:
            self.registry.register(_ReadAtScrape(name, kind, help_text, labels, read))
        elif kind == "counter":
            self._metrics[name] = Counter(name, help_text, labels, registry=self.registry)
        else:
            self._metrics[name] = Gauge(name, help_text, labels, registry=self.registry)

    def histogram(
        self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        self._declare(name, "histogram", labels)
        self._metrics[name] = Histogram(name, help_text, labels, registry=self.registry, buckets=buckets)

    def _series(self, name: str, labels: tuple[str, ...]) -> Counter | Gauge | Histogram:
        metric = self._metrics[name]
        return metric.labels(*labels) if labels else metric

    def inc(self, name: str, *labels: str, by: float = 1.0) -> None:
        series = self._series(name, labels)
        if not isinstance(series, Counter | Gauge):
            raise TypeError(f"{name} is not a counter or gauge")
        series.inc(by)

    def set(self, name: str, value: float, *labels: str) -> None:
        series = self._series(name, labels)
        if not isinstance(series, Gauge):
            raise TypeError(f"{name} is not a gauge")
        series.set(value)

    def observe(self, name: str, value: float, *labels: str) -> None:
        series = self._series(name, labels)
        if not isinstance(series, Histogram):
            raise TypeError(f"{name} is not a histogram")
        series.observe(value)

    def value(self, name: str, *labels: str) -> float:
        """The current value of a counter or gauge series (0 when never set): for tests and health."""
        kind, label_names = self._kinds[name]
        sample = name + "_total" if kind == "counter" and not name.endswith("_total") else name
        got = self.registry.get_sample_value(sample, dict(zip(label_names, labels, strict=True)))
        return 0.0 if got is None else got

    def render(self) -> bytes:
        """The exposition text of every series on this registry (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry)
