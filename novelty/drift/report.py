"""The drift section of the HTML report: drift over time (inline SVG), the window table, the recommendation,
the clusters of novel images as galleries beside their nearest training images, drift by lag.

    write_report(analysis, "drift.html", detector_dir="detectors/cam1")    # the whole report + drift section
    section = render_section(analysis)                                    # the section alone: markup and styles
    ctx = drift_context(analysis)                                         # the section's data, for the template

The section is rendered from this package's ``templates/drift.html.j2`` with its styles in
``templates/drift.css`` (autoescaped, with the batch report's filters and macros:
:func:`novelty.batch.report.section_environment`); the page is the batch report of :mod:`novelty.batch.report`
(self-contained) with this section added first. Thumbnails come from the images' files (a placeholder says why
one is missing).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from novelty.batch.report import ReportSection, report_from_files, section_environment
from novelty.batch.thumbnails import (
    NEIGHBOR_THUMBNAIL_SIZE,
    THUMBNAIL_SIZE,
    load_row_thumbnail,
    make_thumbnail,
)
from novelty.batch.thumbnails import load_neighbor_thumbnail as _load_neighbor_thumbnail
from novelty.clock import iso_seconds
from novelty.formatting import format_p_value

if TYPE_CHECKING:
    from novelty.drift.analysis import DriftAnalysis

__all__ = ["drift_context", "render_section", "write_report"]

#: colours of the tests in the chart (colour-blind safe)
COLOURS = {
    "pvalue-binomial": "#0072b2",
    "pvalue-ks": "#56b4e9",
    "mmd": "#d55e00",
    "classifier": "#009e73",
    "histogram": "#cc79a7",
}
MEMBERS_SHOWN = 6
NEIGHBORS_SHOWN = 4
_W, _LEFT, _RIGHT = 860, 56, 150
_PANEL, _GAP, _TOP, _BOTTOM = 120, 34, 18, 42


def _chart(analysis: DriftAnalysis) -> dict[str, Any] | None:
    """Two panels over the windows: share flagged as novel (bars, with alpha), and −log10 of each test's
    adjusted p-value (lines, with the level); drifting windows shaded."""
    run = analysis.run
    wins = run.windows
    if not wins:
        return None
    n = len(wins)
    plot_w = _W - _LEFT - _RIGHT
    step = plot_w / n
    xs = [_LEFT + step * (i + 0.5) for i in range(n)]
    top1 = _TOP
    base1 = top1 + _PANEL
    top2 = base1 + _GAP
    base2 = top2 + _PANEL
    alpha = analysis.reference.alpha
    shares = [w.novel_share if w.novel_share is not None else 0.0 for w in wins]
    smax = max(max(shares), 2 * alpha, 0.05)
    smax = math.ceil(smax * 10) / 10 if smax > 0.1 else math.ceil(smax * 100) / 100
    bars = [
        {"x": xs[i] - step * 0.35, "w": step * 0.7, "y": base1 - _PANEL * s / smax, "h": _PANEL * s / smax}
        for i, s in enumerate(shares)
    ]
    cap = 10.0
    lines = []
    for t in run.tests:
        pts = []
        for i, w in enumerate(wins):
            p = w.adjusted.get(t, math.nan)
            if math.isfinite(p):
                v = min(cap, -math.log10(max(p, 1e-300)))
                pts.append(f"{xs[i]:.1f},{base2 - _PANEL * v / cap:.1f}")
        if pts:
            lines.append({"test": t, "colour": COLOURS.get(t, "#495057"), "points": " ".join(pts)})
    shade = [{"x": xs[i] - step / 2, "w": step} for i, w in enumerate(wins) if w.drift(run.level)]
    every = max(1, math.ceil(n / 12))
    one_year = len({w.label[:4] for w in wins}) == 1
    labels = []
    for i, w in enumerate(wins):
        if i % every == 0:
            text = w.label.split(" ")[0] if w.label.startswith("#") else w.label[:10]
            if one_year and not w.label.startswith("#"):
                text = text[5:]  # MM-DD: the year is in the table
            labels.append({"x": xs[i], "text": text})
    return {
        "width": _W,
        "height": base2 + _BOTTOM,
        "left": _LEFT,
        "right": _W - _RIGHT,
        "top1": top1,
        "base1": base1,
        "top2": top2,
        "base2": base2,
        "bars": bars,
        "alpha_y": base1 - _PANEL * alpha / smax,
        "alpha": f"{alpha:g}",
        "smax": f"{smax:.0%}",
        "lines": lines,
        "level_y": base2 - _PANEL * min(cap, -math.log10(run.level)) / cap,
        "level": f"{run.level:g}",
        "cap": f"{cap:g}",
        "shade": shade,
        "labels": labels,
        "legend": [
            {"y": top2 + 14 * k, "colour": ln["colour"], "text": ln["test"]} for k, ln in enumerate(lines)
        ],
    }


def _table(analysis: DriftAnalysis) -> list[dict[str, Any]]:
    run = analysis.run
    rows = []
    for w in run.windows:
        cells = []
        for t in run.tests:
            r = w.tests.get(t)
            if r is None:
                cells.append({"text": "—", "sig": False, "beyond": False, "title": ""})
                continue
            p = w.adjusted.get(t, math.nan)
            cells.append(
                {
                    "text": f"{r.effect:.3g}",
                    "p": format_p_value(p),
                    "sig": p < run.level,
                    "beyond": bool(w.beyond_threshold.get(t)),
                    "title": f"{r.effect_name}: {r.effect:.4g} [{r.ci_low:.3g}, {r.ci_high:.3g}]; raw p = {format_p_value(r.p_value)}",
                }
            )
        pred = w.predictions
        rows.append(
            {
                "label": w.label.replace("T00:00:00Z", "") if not w.label.startswith("#") else w.label,
                "n": w.n,
                "novel": "—" if w.novel_share is None else f"{w.novel_share:.1%}",
                "cells": cells,
                "drift": w.drift(run.level),
                "beyond": any(w.beyond_threshold.values()),
                "predictions": None
                if pred is None
                else f"{pred.effect:.2f} (p={format_p_value(pred.p_value)})",
                "note": w.note,
            }
        )
    return rows


def _findings(analysis: DriftAnalysis) -> tuple[str, list[str]]:
    run = analysis.run
    chosen = run.first_drift or next((w for w in reversed(run.windows) if "histogram" in w.tests), None)
    if chosen is None or "histogram" not in chosen.tests:
        return "", []
    return chosen.label, list(chosen.tests["histogram"].details.get("findings", []))


def drift_context(
    analysis: DriftAnalysis,
    *,
    load_thumbnail: Callable[[dict], bytes | None] | None = None,
    load_neighbor_thumbnail: Callable[[str], bytes | None] | None = None,
) -> dict[str, Any]:
    """The data of the report's drift section (thumbnails loaded here, placeholders where they fail)."""
    row_loader = load_thumbnail or load_row_thumbnail
    nb_loader = load_neighbor_thumbnail or _load_neighbor_thumbnail
    s = analysis.stream
    clusters = []
    for c in analysis.missing[:12]:
        members = [int(m) for m in c.members if int(m) != c.medoid][: MEMBERS_SHOWN - 1]
        clusters.append(
            {
                "cluster": c.cluster,
                "size": c.size,
                "distance": f"{c.distance:.3f}",
                "first": (iso_seconds(c.first_seen) or "—").replace("T", " ").replace("Z", ""),
                "last": (iso_seconds(c.last_seen) or "—").replace("T", " ").replace("Z", ""),
                "medoid": {
                    "key": s.keys[c.medoid],
                    "thumb": make_thumbnail(row_loader, s.row(c.medoid), THUMBNAIL_SIZE),
                },
                "members": [
                    {"key": s.keys[m], "thumb": make_thumbnail(row_loader, s.row(m), NEIGHBOR_THUMBNAIL_SIZE)}
                    for m in members
                ],
                "neighbors": [
                    {
                        "id": i,
                        "distance": f"{d:.3f}",
                        "thumb": make_thumbnail(nb_loader, i, NEIGHBOR_THUMBNAIL_SIZE),
                    }
                    for i, d in c.neighbors[:NEIGHBORS_SHOWN]
                ],
            }
        )
    rec = analysis.recommendation
    hz = analysis.horizon
    where, findings = _findings(analysis)
    run = analysis.run
    return {
        "window": run.window.text,
        "correction": run.correction,
        "level": f"{run.level:g}",
        "family": sum(len(w.adjusted) for w in run.windows),
        "n_windows": len(run.windows),
        "n_drift": sum(w.drift(run.level) for w in run.windows),
        "first_drift": None if run.first_drift is None else run.first_drift.label.replace("T00:00:00Z", ""),
        "tests": list(run.tests),
        "colours": [COLOURS.get(t, "#495057") for t in run.tests],
        "chart": _chart(analysis),
        "table": _table(analysis),
        "action": rec.action,
        "action_class": {"retrain now": "bad", "keep watching": "warn"}.get(rec.action, "ok"),
        "reasons": rec.reasons,
        "cadence": rec.cadence,
        "findings_window": where.replace("T00:00:00Z", ""),
        "findings": findings,
        "clusters": clusters,
        "n_novel": int(s.is_novel.sum()),
        "horizon": None
        if hz is None
        else {
            "unit": hz.unit,
            "value": None if hz.horizon is None else f"{hz.horizon:g}",
            "rows": [
                {"lag": f"{lag:g}", "mmd2": f"{m:.4f}", "share": f"{sh:.0%}", "pairs": k}
                for lag, m, sh, k in zip(hz.lags, hz.mean_mmd2, hz.share_different, hz.pairs, strict=True)
            ][:30],
        },
        "thresholds": {
            t: (None if info.get("threshold") is None else f"{info['threshold']:.4g}")
            for t, info in run.thresholds.items()
        },
    }


@cache
def _templates() -> tuple[Any, str]:
    """The section's template and its style sheet."""
    env = section_environment("novelty.drift")
    return env.get_template("drift.html.j2"), env.get_template("drift.css").render()


def render_section(
    analysis: DriftAnalysis,
    *,
    load_thumbnail: Callable[[dict], bytes | None] | None = None,
    load_neighbor_thumbnail: Callable[[str], bytes | None] | None = None,
) -> ReportSection:
    """The drift section of the report: its markup and the styles it needs (see the module docstring)."""
    template, css = _templates()
    ctx = drift_context(
        analysis, load_thumbnail=load_thumbnail, load_neighbor_thumbnail=load_neighbor_thumbnail
    )
    return ReportSection(html=template.render(d=ctx), css=css)


def write_report(
    analysis: DriftAnalysis,
    out_html: str | os.PathLike[str],
    *,
    detector_dir: str | os.PathLike[str] | None = None,
    title: str | None = None,
    top_n: int = 12,
    load_thumbnail: Callable[[dict], bytes | None] | None = None,
    load_neighbor_thumbnail: Callable[[str], bytes | None] | None = None,
) -> Path:
    """The batch report of the analysis' results files with the drift section (see the module docstring)."""
    section = render_section(
        analysis, load_thumbnail=load_thumbnail, load_neighbor_thumbnail=load_neighbor_thumbnail
    )
    names: Sequence[str] = analysis.results
    return report_from_files(
        names if len(names) > 1 else names[0],
        detector_dir,
        out_html,
        title=title
        or f"novelty drift report · {Path(names[0]).name}"
        + (f" +{len(names) - 1}" if len(names) > 1 else ""),
        top_n=top_n,
        load_thumbnail=load_thumbnail,
        load_neighbor_thumbnail=load_neighbor_thumbnail,
        sections=[section],
    )
