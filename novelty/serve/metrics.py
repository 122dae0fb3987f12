"""The service's metrics in the Prometheus text format (version 0.0.4); every series starts with ``novelty_``.

A small thread-safe registry of counters, gauges and histograms with fixed label names — all this service
needs, without a dependency.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

__all__ = ["LATENCY_BUCKETS", "Metrics"]

#: seconds; from a cached small image to a slow batch
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str, labels: Sequence[str]):
        self.name, self.kind, self.help, self.label_names = name, kind, help_text, tuple(labels)


class Metrics:
    """Counters, gauges and histograms keyed by label values; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._values: dict[str, dict[tuple[str, ...], float]] = {}
        self._hists: dict[str, tuple[tuple[float, ...], dict[tuple[str, ...], list[float]]]] = {}
        self._callbacks: dict[str, Callable[[], dict[tuple[str, ...], float]]] = {}

    def _family(self, name: str, kind: str, help_text: str, labels: Sequence[str]) -> None:
        if not name.startswith("novelty_"):
            raise ValueError(f"metric {name!r} must start with novelty_")
        self._families[name] = _Family(name, kind, help_text, labels)

    def counter(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        read: Callable[[], dict[tuple[str, ...], float]] | None = None,
    ) -> None:
        """A counter increased with :meth:`inc`, or read at scrape time from ``read()`` (a count kept elsewhere)."""
        self._simple(name, "counter", help_text, labels, read)

    def gauge(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        read: Callable[[], dict[tuple[str, ...], float]] | None = None,
    ) -> None:
        """A gauge set with :meth:`set`, or read at scrape time from ``read()`` (label values → value)."""
        self._simple(name, "gauge", help_text, labels, read)

    def _simple(
        self,
        name: str,
        kind: str,
        help_text: str,
        labels: Sequence[str],
        read: Callable[[], dict[tuple[str, ...], float]] | None,
    ) -> None:
        self._family(name, kind, help_text, labels)
        self._values[name] = {}
        if read is not None:
            self._callbacks[name] = read

    def histogram(
        self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        self._family(name, "histogram", help_text, labels)
        self._hists[name] = (tuple(sorted(buckets)), {})

    def inc(self, name: str, *labels: str, by: float = 1.0) -> None:
        with self._lock:
            series = self._values[name]
            series[labels] = series.get(labels, 0.0) + by

    def set(self, name: str, value: float, *labels: str) -> None:
        with self._lock:
            self._values[name][labels] = value

    def observe(self, name: str, value: float, *labels: str) -> None:
        buckets, series = self._hists[name]
        with self._lock:
            counts = series.get(labels)
            if counts is None:
                counts = series[labels] = [0.0] * (len(buckets) + 2)  # buckets..., +Inf, sum
            for i, b in enumerate(buckets):
                if value <= b:
                    counts[i] += 1
            counts[len(buckets)] += 1
            counts[-1] += value

    def value(self, name: str, *labels: str) -> float:
        """The current value of a counter or gauge series (0 when never set): for tests and health."""
        with self._lock:
            return self._values[name].get(labels, 0.0)

    def render(self) -> str:
        callbacks = {name: read() for name, read in self._callbacks.items()}
        lines: list[str] = []
        with self._lock:
            for name, fam in self._families.items():
                lines.append(f"# HELP {name} {fam.help}")
                lines.append(f"# TYPE {name} {fam.kind}")
                if fam.kind == "histogram":
                    buckets, series = self._hists[name]
                    for lv, counts in sorted(series.items()):
                        for i, b in enumerate(buckets):
                            le = _labels(fam.label_names, lv, f'le="{_num(b)}"')
                            lines.append(f"{name}_bucket{le} {_num(counts[i])}")
                        inf = _labels(fam.label_names, lv, 'le="+Inf"')
                        lines.append(f"{name}_bucket{inf} {_num(counts[len(buckets)])}")
                        lines.append(f"{name}_sum{_labels(fam.label_names, lv)} {_num(counts[-1])}")
                        lines.append(
                            f"{name}_count{_labels(fam.label_names, lv)} {_num(counts[len(buckets)])}"
                        )
                    continue
                values = dict(self._values[name])
                values.update(callbacks.get(name, {}))
                for lv, v in sorted(values.items()):
                    lines.append(f"{name}{_labels(fam.label_names, lv)} {_num(v)}")
        return "\n".join(lines) + "\n"
