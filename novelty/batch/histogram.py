"""The geometry of the report's score histogram: this archive's scores against the calibration scores.

:func:`histogram` computes everything the SVG needs — bins, axis ticks, the threshold line, a bar for far
outliers, the legend — as plain numbers and strings; the report's template draws them (and escapes them).
Two overlaid step histograms show the share of each series per bin; scores beyond the plotted range are one
separate bar on the right ("beyond"), scores below it fall in the first bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Histogram", "fmt_number", "histogram"]

WIDTH, HEIGHT = 700, 320
LEFT, RIGHT, TOP, BOTTOM = 62, 18, 58, 52
NBINS = 40
CAL_COLOUR, ARCHIVE_COLOUR, THRESHOLD_COLOUR = "#3b6ea8", "#d9480f", "#c92a2a"


def fmt_number(x: object, digits: int = 3) -> str:
    """A number for people: ``digits`` decimals, or significant digits when very small or large; ``—`` for
    NaN and what is not a number."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(v):
        return "—"
    if v != 0 and (abs(v) < 10**-(digits) or abs(v) >= 10 ** (digits + 3)):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}"


def _nice_step(span: float, target: int = 6) -> float:
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _tick_label(v: float, step: float) -> str:
    if abs(v) < step * 1e-9:
        v = 0.0
    decimals = max(
        0, -math.floor(math.log10(step)) + (1 if step / 10 ** math.floor(math.log10(step)) == 2.5 else 0)
    )
    if abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-4):
        return f"{v:.2g}"
    return f"{v:.{min(decimals, 6)}f}"


def _plot_range(
    scores: np.ndarray, calibration: np.ndarray | None, threshold: float | None
) -> tuple[float, float, bool]:
    """``(lo, hi, overflow)``: the range the bins cover; far outliers above ``hi`` get a bar of their own.

    With calibration scores, the range spans them (and the threshold) plus their width again on each side:
    an archive of very novel images must not squash the in-distribution reference into one bin."""
    pooled = np.concatenate([scores, calibration]) if calibration is not None else scores
    lo, hi = float(pooled.min()), float(pooled.max())
    if calibration is not None and calibration.size:
        c_lo, c_hi = float(calibration.min()), float(calibration.max())
        if threshold is not None and math.isfinite(threshold):
            c_lo, c_hi = min(c_lo, threshold), max(c_hi, threshold)
        span = (c_hi - c_lo) or max(abs(c_hi), 1.0)
        floor, cap = c_lo - span, c_hi + span
    else:
        q25, q75 = (float(v) for v in np.percentile(scores, [25, 75]))
        iqr = (q75 - q25) or float(scores.std()) or max(abs(q75), 1.0)
        floor, cap = q25 - 6 * iqr, q75 + 6 * iqr
    overflow = hi > cap
    lo, hi = max(lo, floor), min(hi, cap)
    if threshold is not None and math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    if not overflow:
        hi += (hi - lo) * 0.02
    return lo - (hi - lo) * 0.02, hi, overflow


@dataclass
class Series:
    name: str
    n: int
    colour: str
    opacity: float
    points: str  # the step outline, "x,y x,y …"
    beyond: int  # scores above the plotted range
    beyond_y: float


@dataclass
class Histogram:
    """Everything the template draws, in SVG user units (``width`` × ``height``)."""

    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    top: int = TOP
    base: int = HEIGHT - BOTTOM  # y of the x axis
    plot_right: float = 0.0  # x where the bins end
    series: list[Series] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)  # (y, label)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)  # (x, label)
    overflow_x: float | None = None  # where the "beyond" bars start, when there are any
    overflow_label: str = ""
    threshold_x: float | None = None
    legend: list[dict[str, object]] = field(default_factory=list)  # x, y, kind, colour, text


def histogram(
    scores: np.ndarray, calibration: np.ndarray | None, threshold: float | None, alpha: float
) -> Histogram | None:
    """The histogram of ``scores`` (and ``calibration``, when given), or ``None`` when there is nothing to plot."""
    raw = []
    if calibration is not None and calibration.size:
        raw.append(("calibration (in-distribution)", calibration, CAL_COLOUR, 0.28))
    raw.append(("this archive", scores, ARCHIVE_COLOUR, 0.22))
    if not any(s.size for _, s, _, _ in raw):
        return None
    cal = raw[0][1] if len(raw) == 2 else None
    lo, hi, overflow = _plot_range(scores if scores.size else raw[0][1], cal, threshold)
    g = Histogram()
    pw = WIDTH - LEFT - RIGHT - (70 if overflow else 0)
    g.plot_right = LEFT + pw
    edges = np.linspace(lo, hi, NBINS + 1)
    ph = g.base - TOP

    def x_of(v: float) -> float:
        return LEFT + (v - lo) / (hi - lo) * pw

    shares, beyond = [], []
    for _, s, _, _ in raw:
        n = max(1, s.size)
        shares.append(np.histogram(np.clip(s[s <= hi], lo, hi), bins=edges)[0] / n)
        beyond.append((int(np.sum(s > hi)), float(np.sum(s > hi)) / n))
    ymax = max([float(sh.max()) for sh in shares] + [b for _, b in beyond]) or 1.0
    ystep = _nice_step(ymax, 4)
    ytop = math.ceil(ymax / ystep - 1e-9) * ystep

    def y_of(v: float) -> float:
        return TOP + ph - v / ytop * ph

    for i in range(round(ytop / ystep) + 1):
        v = i * ystep
        g.y_ticks.append((y_of(v), f"{v * 100:.0f}%" if ystep >= 0.01 else f"{v * 100:.1f}%"))
    xstep = _nice_step(hi - lo, 7)
    t = math.ceil(lo / xstep) * xstep
    while t <= hi + 1e-12 * max(1.0, abs(hi)):
        g.x_ticks.append((x_of(t), _tick_label(t, xstep)))
        t += xstep
    for (name, s, colour, opacity), sh, (count, share) in zip(raw, shares, beyond, strict=True):
        pts = [(x_of(edges[0]), y_of(0))]
        for i, v in enumerate(sh):
            pts += [(x_of(edges[i]), y_of(v)), (x_of(edges[i + 1]), y_of(v))]
        pts.append((x_of(edges[-1]), y_of(0)))
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        g.series.append(Series(name, int(s.size), colour, opacity, points, count, y_of(share)))
    if overflow:
        g.overflow_x = LEFT + pw + 22
        g.overflow_label = f"> {fmt_number(hi, 2)}"
    entries: list[tuple[str, str, str]] = [
        ("area", ser.colour, f"{ser.name} (n = {ser.n:,})") for ser in g.series
    ]
    if threshold is not None and math.isfinite(threshold):
        g.threshold_x = x_of(threshold)
        entries.append(
            ("line", THRESHOLD_COLOUR, f"threshold at α = {alpha:g}: score ≥ {fmt_number(threshold)}")
        )
    lx, ly = LEFT, 12  # legend entries in rows above the plot
    for kind, colour, text in entries:
        width = 28 + int(len(text) * 6.6)
        if lx > LEFT and lx + width > WIDTH:
            lx, ly = LEFT, ly + 18
        g.legend.append({"x": lx, "y": ly, "kind": kind, "colour": colour, "text": text})
        lx += width
    return g
