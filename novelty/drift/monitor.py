"""Windowed monitoring: cut a stream into windows, test each against the reference, correct for multiplicity.

    run = monitor(ref, embeddings, p_values=p, times=t, window="1d")
    print(run.table()); run.to_json()

**Windows** (:func:`parse_window`): a duration (``"12h"``, ``"1d"``, ``"7d"``, ``"2w"``; days and weeks start
at midnight UTC of the first image's day, hours on the hour) or a count (``"500"``: consecutive images in time
order, the last window may be shorter). Windows with fewer than two images are listed and left untested.

**Multiple testing.** Each window runs several tests, and a stream has many windows: testing every p-value at
``level`` would raise false alarms in about ``1 − (1 − level)^(windows × tests)`` of quiet streams. The
p-values of all windows and tests of one run form one family, adjusted by Holm's step-down method
(``correction="holm"``, the default: it controls the family-wise error rate at ``level`` under any dependence,
and is uniformly more powerful than Bonferroni, also offered) or left alone (``"none"``). A window *drifts*
when any of its adjusted p-values is below ``level``. Because the family grows with the stream, a long stream
needs a stronger shift per window to alarm; the thresholds from the reference's own windows (see
:mod:`novelty.drift.reference`) are a second, per-window alarm that does not depend on the number of windows.
"""

from __future__ import annotations

import math
import numbers
import re
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from novelty.clock import MAX_TIME, MIN_TIME, check_epoch_seconds, iso_seconds
from novelty.drift.errors import DriftError, EmptyWindowError
from novelty.drift.predictions import prediction_test
from novelty.drift.reference import EMBEDDING_TESTS, PVALUE_TESTS, DriftReference, check_tests
from novelty.drift.result import MIN_WINDOW, DriftTestResult, as_pvalues, as_sample
from novelty.errors import InvalidInputError
from novelty.formatting import format_p_value
from novelty.params import check_int, check_real

__all__ = [
    "DriftRun",
    "Window",
    "WindowResult",
    "WindowSpec",
    "adjust_p_values",
    "check_times",
    "monitor",
    "parse_window",
    "split_windows",
]

_UNITS = {"m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_LOW, _HIGH = MIN_TIME.timestamp(), MAX_TIME.timestamp()
#: the longest duration a window can have: the whole range of times the package accepts
_SPAN = _HIGH - _LOW


@dataclass(frozen=True)
class WindowSpec:
    """``kind`` is ``"time"`` (``seconds`` long) or ``"count"`` (``size`` images)."""

    text: str
    kind: str
    seconds: float | None = None
    size: int | None = None


def parse_window(text: str | int) -> WindowSpec:
    """``"1d"``, ``"7d"``, ``"12h"``, ``"2w"``, ``"30m"`` (durations) or ``"500"`` (a count)."""
    if isinstance(text, bool) or not isinstance(text, (str, numbers.Integral)):
        raise InvalidInputError(
            f"window must be a duration (e.g. '1d') or a number of images, got {type(text).__name__}"
        )
    if isinstance(text, numbers.Integral) and text >= 10**12:  # also no str() of an int past 4300 digits
        raise InvalidInputError(
            "a window of over 10¹² images is no window: give a duration or a smaller count"
        )
    s = str(text).strip().lower()
    if len(s) > 32:
        raise InvalidInputError(f"window {reprlib.repr(text)} is too long to be a duration or a count")
    if re.fullmatch(r"\d+", s):
        size = int(s)
        if size < MIN_WINDOW:
            raise InvalidInputError(
                f"a window of {size} image(s) is too small: the tests need at least {MIN_WINDOW}"
            )
        return WindowSpec(s, "count", size=size)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", s)
    if not m or float(m.group(1)) <= 0 or float(m.group(1)) * _UNITS[m.group(2)] > _SPAN:
        raise InvalidInputError(
            f"window {text!r} is neither a duration (e.g. 12h, 1d, 7d, 2w) nor a number of images (e.g. 500)"
        )
    return WindowSpec(s, "time", seconds=float(m.group(1)) * _UNITS[m.group(2)])


@dataclass
class Window:
    label: str
    index: np.ndarray  # positions in the stream
    start: float | None = None  # seconds since the epoch (time windows and timed count windows)
    end: float | None = None


def check_times(times: object, n: int) -> np.ndarray | None:
    """``times`` (seconds since the epoch, one per image; NaN where unknown) as float64, or ``None``.

    Raises :class:`~novelty.errors.InvalidInputError` for anything else: another shape, values that are not
    numbers, ±inf, or a time outside the range of :func:`novelty.clock.check_epoch_seconds` (``1e300`` seconds,
    year 10000), naming the first such image."""
    if times is None:
        return None
    try:
        t = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise InvalidInputError(
            f"times must be seconds since the epoch, one number per image ({str(e)[:200]})"
        ) from None
    if t.shape != (n,):
        raise InvalidInputError(f"times has shape {t.shape} for {n} images")
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(t) & ~((t >= _LOW) & (t < _HIGH))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        check_epoch_seconds(float(t[i]), f"times[{i}]")  # raises, with the range in its message
    return t


def split_windows(n: int, spec: WindowSpec, times: np.ndarray | None = None) -> list[Window]:
    """The windows of a stream of ``n`` images (with ``times`` in seconds since the epoch, or in stream
    order). Time windows need a finite time for every image; empty windows are left out."""
    if n == 0:
        raise EmptyWindowError("the stream holds no scored image")
    t = check_times(times, n)
    if spec.kind == "time":
        if t is None:
            raise DriftError(
                f"--window {spec.text} needs a timestamp per image; use a count window (e.g. 500)"
            )
        if not np.isfinite(t).all():
            raise DriftError(
                f"{int((~np.isfinite(t)).sum())} image(s) have no timestamp; a time window ({spec.text}) needs one "
                "for every image (score with --embeddings, or give --timestamps), or use a count window"
            )
        if spec.seconds is None:
            raise InvalidInputError(f"time window {spec.text!r} has no length; make it with parse_window")
        step = spec.seconds
        unit = 86400.0 if step >= 86400.0 else (3600.0 if step >= 3600.0 else 60.0)
        origin = math.floor(float(t.min()) / unit) * unit
        wid = np.floor((t - origin) / step).astype(np.int64)
        out = []
        for w in np.unique(wid):
            idx = np.flatnonzero(wid == w)
            idx = idx[np.argsort(t[idx], kind="stable")]
            start = origin + w * step
            out.append(Window(iso_seconds(start) or str(w), idx, start, start + step))
        return out
    if spec.size is None:
        raise InvalidInputError(f"count window {spec.text!r} has no size; make it with parse_window")
    order = np.arange(n) if t is None or not np.isfinite(t).all() else np.argsort(t, kind="stable")
    out = []
    for j, s in enumerate(range(0, n, spec.size)):
        idx = order[s : s + spec.size]
        start = end = None
        if t is not None and np.isfinite(t[idx]).all():
            start, end = float(t[idx].min()), float(t[idx].max())
        out.append(Window(f"#{j + 1} (images {s + 1}–{s + idx.size})", idx, start, end))
    return out


def adjust_p_values(p: Sequence[float], method: str = "holm") -> np.ndarray:
    """Family-wise adjusted p-values: ``"holm"`` (step-down), ``"bonferroni"`` or ``"none"``. NaNs stay NaN
    and do not count in the family."""
    arr = np.asarray(p, dtype=np.float64)
    out = np.full(arr.shape, np.nan)
    ok = np.isfinite(arr)
    m = int(ok.sum())
    if method == "none":
        out[ok] = arr[ok]
        return out
    if method == "bonferroni":
        out[ok] = np.minimum(1.0, arr[ok] * m)
        return out
    if method != "holm":
        raise InvalidInputError(f"unknown correction {method!r}; choose holm, bonferroni or none")
    vals = arr[ok]
    order = np.argsort(vals, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * vals[order])
    res = np.empty(m)
    res[order] = np.minimum(1.0, adj)
    out[ok] = res
    return out


@dataclass
class WindowResult:
    label: str
    n: int
    start: float | None
    end: float | None
    tests: dict[str, DriftTestResult] = field(default_factory=dict)
    adjusted: dict[str, float] = field(default_factory=dict)
    beyond_threshold: dict[str, bool] = field(default_factory=dict)
    predictions: DriftTestResult | None = None
    novel_share: float | None = None
    note: str = ""
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    def drift(self, level: float) -> bool:
        """Any adjusted p-value below ``level``."""
        return any(p < level for p in self.adjusted.values())

    def to_json(self, level: float) -> dict[str, Any]:
        return {
            "window": self.label,
            "start": iso_seconds(self.start),
            "end": iso_seconds(self.end),
            "n": self.n,
            "novel_share": self.novel_share,
            "drift": self.drift(level),
            "beyond_threshold": self.beyond_threshold,
            "adjusted_p_values": {k: (v if math.isfinite(v) else None) for k, v in self.adjusted.items()},
            "tests": {k: r.to_json() for k, r in self.tests.items()},
            "predictions": None if self.predictions is None else self.predictions.to_json(),
            "note": self.note,
        }


@dataclass
class DriftRun:
    windows: list[WindowResult]
    window: WindowSpec
    tests: tuple[str, ...]
    correction: str
    level: float
    thresholds: dict[str, dict[str, Any]]
    settings: dict[str, Any]

    @property
    def first_drift(self) -> WindowResult | None:
        return next((w for w in self.windows if w.drift(self.level)), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "window": self.window.text,
            "tests": list(self.tests),
            "correction": self.correction,
            "level": self.level,
            "family_size": sum(1 for w in self.windows for v in w.adjusted.values() if math.isfinite(v)),
            "thresholds": self.thresholds,
            "settings": self.settings,
            "first_drift": None if self.first_drift is None else self.first_drift.label,
            "windows": [w.to_json(self.level) for w in self.windows],
        }

    def table(self) -> str:
        """A plain-text table: one line per window, the effect of each test with its adjusted p-value."""
        head = ["window", "n", "novel"] + [f"{t}" for t in self.tests] + ["drift"]
        rows = [head]
        for w in self.windows:
            cells = [
                w.label if w.start is None or w.label.startswith("#") else w.label[:16].replace("T", " "),
                str(w.n),
            ]
            cells.append("—" if w.novel_share is None else f"{w.novel_share:.1%}")
            for t in self.tests:
                r = w.tests.get(t)
                if r is None:
                    cells.append("—")
                    continue
                p = w.adjusted.get(t, math.nan)
                mark = "*" if p < self.level else ("!" if w.beyond_threshold.get(t) else "")
                cells.append(f"{r.effect:.3g} (p={format_p_value(p)}){mark}")
            cells.append("DRIFT" if w.drift(self.level) else (w.note or ""))
            rows.append(cells)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(
            f"effect (p = {self.correction}-adjusted over {sum(len(w.adjusted) for w in self.windows)} tests); "
            f"* p < {self.level:g}; ! beyond the reference's own windows (mean + 3 sd)"
        )
        return "\n".join(lines)


def _as_stream(x: object, dim: int) -> np.ndarray:
    """The stream's embeddings as they are (float16 stays float16: windows are converted one at a time)."""
    try:
        arr = np.asarray(x)
        if arr.dtype not in (np.float16, np.float32, np.float64):
            arr = arr.astype(np.float32)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise InvalidInputError(
            f"the stream's embeddings must be an (n, d) array of numbers ({str(e)[:200]})"
        ) from None
    if arr.ndim != 2 or arr.shape[0] == 0:
        if arr.size == 0:
            raise EmptyWindowError("the stream holds no embedding")
        raise InvalidInputError(f"the stream's embeddings must be (n, d), got shape {arr.shape}")
    as_sample(arr[:1], "stream", dim=dim, minimum=1)  # the dimension, checked once
    return arr


def monitor(
    reference: DriftReference,
    embeddings: object | None = None,
    *,
    p_values: object | None = None,
    times: object | None = None,
    predictions: Sequence[Any] | None = None,
    window: str | int | WindowSpec = "500",
    tests: Sequence[str] | None = None,
    correction: str = "holm",
    level: float = 0.05,
    thresholds: bool = True,
    max_classifier_permutations: int = 2000,
    on_window: Callable[[int, int, WindowResult], None] | None = None,
) -> DriftRun:
    """Test every window of a stream against ``reference`` (see the module docstring).

    ``embeddings`` ``(n, d)`` and/or ``p_values`` ``(n,)`` of the stream's scored images, ``times`` (seconds
    since the epoch) for time windows, ``predictions`` (the head's class per image) to test whether the
    predictions moved too. ``on_window(i, n_windows, result)`` is called after each window.

    Permutation counts are raised to ``2 × family / level`` (the family: windows × tests) so that a
    permutation p-value can pass the correction; with the sequential stop a quiet window still draws only a
    few dozen. The classifier test, whose permutations refit models, is capped at
    ``max_classifier_permutations``: in a family larger than about ``level × max_classifier_permutations`` its
    smallest p-value passes Holm's correction only once other tests' p-values have been rejected before it (it
    is never the first), and its own alarm is the threshold from the reference's own windows."""
    if not isinstance(reference, DriftReference):
        raise InvalidInputError(f"reference must be a DriftReference, got {type(reference).__name__}")
    spec = window if isinstance(window, WindowSpec) else parse_window(window)
    chosen = check_tests(tests)
    level = check_real(level, "level", low=0.0, high=1.0, low_open=True, high_open=True)
    if not isinstance(correction, str) or correction not in ("holm", "bonferroni", "none"):
        raise InvalidInputError(
            f"unknown correction {reprlib.repr(correction)}; choose holm, bonferroni or none"
        )
    max_classifier_permutations = check_int(
        max_classifier_permutations, "max_classifier_permutations", minimum=0
    )
    emb = None if embeddings is None else _as_stream(embeddings, reference.dim)
    pv = None if p_values is None else as_pvalues(p_values, "stream's p-values", minimum=1)
    if emb is None and pv is None:
        raise InvalidInputError("give the stream's embeddings, its p-values, or both")
    n = emb.shape[0] if emb is not None else pv.shape[0]  # type: ignore[union-attr]
    if emb is not None and pv is not None and pv.shape[0] != n:
        raise InvalidInputError(f"{pv.shape[0]} p-values for {n} embeddings")
    if predictions is not None:
        if isinstance(predictions, (str, bytes)) or not isinstance(predictions, (Sequence, np.ndarray)):
            raise InvalidInputError(
                f"predictions must be a sequence of classes, got {type(predictions).__name__}"
            )
        if len(predictions) != n:
            raise InvalidInputError(f"{len(predictions)} predictions for {n} images")
    active = tuple(
        t
        for t in chosen
        if (t in PVALUE_TESTS and pv is not None) or (t in EMBEDDING_TESTS and emb is not None)
    )
    wins = split_windows(n, spec, check_times(times, n))
    # enough permutations that the smallest permutation p-value, 1/(B+1), can survive the correction
    family = sum(1 for w in wins if w.index.size >= MIN_WINDOW) * len(active)
    needed = 0 if correction == "none" else math.ceil(2 * family / level)
    perms = {t: max(b, needed) for t, b in reference.permutations.items()}
    perms["classifier"] = max(reference.permutations["classifier"], min(needed, max_classifier_permutations))
    results: list[WindowResult] = []
    for i, w in enumerate(wins):
        res = WindowResult(w.label, int(w.index.size), w.start, w.end, index=w.index)
        if pv is not None:
            res.novel_share = float(np.mean(pv[w.index] < reference.alpha))
        if w.index.size < MIN_WINDOW:
            res.note = f"too small (< {MIN_WINDOW})"
        else:
            res.tests = reference.test(
                None if emb is None else emb[w.index],
                None if pv is None else pv[w.index],
                tests=active,
                seed=reference.seed + i,
                permutations=perms,
            )
            if predictions is not None and reference.head is not None:
                res.predictions = prediction_test(
                    reference.predictions(), [predictions[j] for j in w.index], seed=i
                )
        results.append(res)
        if on_window is not None:
            on_window(i, len(wins), res)

    flat = [(k, t) for k, r in enumerate(results) for t in r.tests]
    adj = adjust_p_values([results[k].tests[t].p_value for k, t in flat], correction)
    for (k, t), a in zip(flat, adj, strict=True):
        results[k].adjusted[t] = float(a)

    thr: dict[str, dict[str, Any]] = {}
    if thresholds and emb is not None and any(t in EMBEDDING_TESTS for t in active):
        sizes = [r.n for r in results if r.n >= MIN_WINDOW]
        if sizes:
            size = int(np.median(sizes))
            thr = reference.thresholds(size, tests=[t for t in active if t in EMBEDDING_TESTS])
            for r in results:
                for t, info in thr.items():
                    if t in r.tests and info.get("threshold") is not None:
                        r.beyond_threshold[t] = bool(r.tests[t].statistic > info["threshold"])
    return DriftRun(
        windows=results,
        window=spec,
        tests=active,
        correction=correction,
        level=level,
        thresholds=thr,
        settings={
            "reference_size": len(reference),
            "reference_sample": int(reference._sample.shape[0]),
            "n_calibration": reference.n_calibration,
            "alpha": reference.alpha,
            "permutations": perms,
            "stop_after": reference.stop_after,
            "n_clusters": reference.clusters.n_clusters
            if emb is not None and "histogram" in active
            else None,
            "seed": reference.seed,
        },
    )
