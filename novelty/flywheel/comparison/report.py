"""The comparison as one self-contained HTML page: the verdict, the gate's checks, the per-condition table
with an interval bar for every difference, the images each side trusted and got wrong, and what was compared.

Rendered from ``templates/compare.html.j2`` with Jinja2 autoescaping (values pass the batch report's
``clean_text`` first, as in :mod:`novelty.batch.report`); the only markup inserted is the inline SVG of the
interval bars, built here from numbers. The trusted-but-wrong images are embedded as JPEG thumbnails made by the
batch report's :func:`~novelty.batch.thumbnails.make_thumbnail` from the files the comparison names; one that
cannot be read at report time is a placeholder saying why, next to its path. Nothing on the page references
anything outside it.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from novelty.batch.report import template_environment
from novelty.batch.thumbnails import NEIGHBOR_THUMBNAIL_SIZE, load_row_thumbnail, make_thumbnail
from novelty.formatting import format_p_value

if TYPE_CHECKING:
    from novelty.flywheel.comparison.result import Comparison, MetricDiff

__all__ = ["METRICS", "fmt", "render_report"]

#: the metrics of a row, in the order of the table
METRICS = ("accuracy", "ece", "coverage", "selective_risk", "auroc", "false_alarm_rate")


def fmt(x: float, signed: bool = False) -> str:
    """``0.912``, ``+0.039`` (``signed``) or ``n/a``."""
    return "n/a" if not math.isfinite(x) else (f"{x:+.3f}" if signed else f"{x:.3f}")


@functools.cache
def _template() -> Any:
    """The report template, escaped as the batch report's (:func:`novelty.batch.report.template_environment`)."""
    return template_environment("novelty.flywheel.comparison", "novelty.batch").get_template(
        "compare.html.j2"
    )


def render_report(c: Comparison) -> str:
    """The comparison as one self-contained HTML page (autoescaped template, inline CSS and SVG)."""
    cols = [m for m in METRICS if any(m in r.metrics for r in c.rows)]
    span = {
        m: max(
            (
                max(abs(d.ci_low), abs(d.ci_high), abs(d.diff))
                for r in c.rows
                if (d := r.metrics.get(m)) is not None and math.isfinite(d.ci_low)
            ),
            default=0.0,
        )
        for m in cols
    }
    rows = []
    for r in c.rows:
        cells: list[dict[str, Any] | None] = []
        for m in cols:
            d = r.metrics.get(m)
            if d is None:
                cells.append(None)
                continue
            cells.append(
                {
                    "champion": fmt(d.champion),
                    "challenger": fmt(d.challenger),
                    "diff": fmt(d.diff, True),
                    "ci": f"[{fmt(d.ci_low, True)}, {fmt(d.ci_high, True)}]",
                    "bar": _ci_bar(d, span[m], better=_BETTER[m]),
                }
            )
        rows.append(
            {
                "row": r,
                "cells": cells,
                "mcnemar": None if r.mcnemar is None else format_p_value(r.mcnemar["p_value"]),
            }
        )
    return _template().render(
        c=c,
        data=c.to_json(),
        cols=[(m, _TITLES[m], _BETTER[m]) for m in cols],
        rows=rows,
        checks=c.checks,
        trusted_wrong=_trusted_wrong(c),
    )


def _trusted_wrong(c: Comparison) -> dict[str, Any] | None:
    """The trusted-but-wrong section's data: the counts per condition of both sides and each side's images
    with their thumbnails (a placeholder with the reason where an image cannot be read here)."""
    tw = c.trusted_wrong
    if tw is None:
        return None
    thumbs: dict[str, tuple[str | None, str]] = {}  # an image both sides got wrong is read once

    def thumb(path: str | None) -> tuple[str | None, str]:
        if not path:
            return None, "no path recorded"
        if path not in thumbs:
            thumbs[path] = make_thumbnail(
                load_row_thumbnail, {"key": path, "path": path}, NEIGHBOR_THUMBNAIL_SIZE
            )
        return thumbs[path]

    conditions = list(dict.fromkeys([*tw["champion"]["by_condition"], *tw["challenger"]["by_condition"]]))
    sides = []
    for who in ("champion", "challenger"):
        side = tw[who]
        items = [
            {
                **it,
                "competence": "—" if it["competence"] is None else fmt(it["competence"]),
                "thumb": thumb(it["path"]),
            }
            for it in side["items"]
        ]
        sides.append({"who": who, "n": side["n"], "images": items})
    counts = [
        (cond, tw["champion"]["by_condition"].get(cond, 0), tw["challenger"]["by_condition"].get(cond, 0))
        for cond in conditions
    ]
    return {
        "sides": sides,
        "counts": counts,
        "n": {who: tw[who]["n"] for who in ("champion", "challenger")},
    }


_TITLES = {
    "accuracy": "head accuracy",
    "ece": "calibration error (ECE)",
    "coverage": "trusted share (coverage)",
    "selective_risk": "errors among trusted (selective risk)",
    "auroc": "novelty AUROC",
    "false_alarm_rate": "false alarms at alpha",
}
_BETTER = {"accuracy": 1, "ece": -1, "coverage": 1, "selective_risk": -1, "auroc": 1, "false_alarm_rate": -1}


def _ci_bar(
    d: MetricDiff, span: float, *, better: int, width: int = 160, height: int = 18
) -> dict[str, Any] | None:
    """Where the interval bar of a difference lies (drawn by the ``ci_bar`` macro of ``macros.html.j2``):
    centred on zero, ``span`` (the largest |bound| of the column) at the edges; green when the interval is on
    the better side of zero, red on the worse, grey across it. ``None`` for an interval that is not finite."""
    if not (math.isfinite(d.ci_low) and math.isfinite(d.ci_high)):
        return None
    s = (span if span > 0 else 1.0) * 1.1

    def x(v: float) -> float:
        return width / 2 + (v / s) * (width / 2 - 4)

    lo, hi = x(d.ci_low), x(d.ci_high)
    good = d.ci_low > 0 if better > 0 else d.ci_high < 0
    bad = d.ci_high < 0 if better > 0 else d.ci_low > 0
    return {
        "width": width,
        "height": height,
        "lo": lo,
        "span": max(hi - lo, 1.0),
        "mid": x(d.diff),
        "colour": "#2e7d32" if good else "#c62828" if bad else "#757575",
        "title": f"{d.diff:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]",
    }
