"""A self-contained HTML report of a batch's results: what is new in this archive, at a glance.

    report_from_files("results.parquet", "detector/", "report.html")
    build_report(rows, "report.html", calibration_scores=cal, alpha=0.05)

One HTML file rendered from a Jinja2 template (``templates/report.html.j2``, autoescaped) with everything
inline (CSS, an SVG histogram, base64 JPEG thumbnails of at most 160 px) and no external reference at all,
so it can be mailed, archived or opened offline:

- counts: inputs, scored, flagged as novel (the rows' ``is_novel``, decided by the run at its ``alpha``),
  unreadable;
- the detector's description, when given;
- a histogram of this archive's scores against the in-distribution calibration scores, with the score above
  which an image is flagged at ``alpha``;
- predictions of the condition head (if any) by trusted / untrusted;
- the ``top_n`` most novel images as cards: thumbnail, key, novelty, p-value, score, prediction, and the
  nearest training images with their distances (a placeholder with the reason when a thumbnail is missing);
- every unreadable input with its reason.

Layers above add sections of their own (:class:`ReportSection`, e.g. the drift section of
:mod:`novelty.drift.report`): markup and styles rendered by their own templates with
:func:`section_environment`, shown after the counts; this module knows nothing of what they hold.

:func:`report_from_files` reads the results with :func:`~novelty.batch.results.read_results` and the detector
with :func:`novelty.artifact.read_artifact` (every file verified); it refuses a detector other than the one
that scored the results (their ``detector_id``), and takes ``alpha`` from the results, never from elsewhere.
The page is written atomically (:mod:`novelty.fileio`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from novelty.artifact import read_artifact
from novelty.batch import thumbnails
from novelty.batch.errors import ReportMismatchError, ResultsReadError
from novelty.batch.histogram import fmt_number, histogram
from novelty.batch.maps import overlay_map
from novelty.batch.results import read_results
from novelty.batch.thumbnails import (
    NEIGHBOR_THUMBNAIL_SIZE,
    THUMBNAIL_SIZE,
    load_neighbor_thumbnail,
    load_row_thumbnail,
    make_thumbnail,
)
from novelty.calibration import ConformalCalibrator
from novelty.clock import utc_now
from novelty.errors import InvalidInputError
from novelty.fileio import atomic_write_text
from novelty.formatting import format_p_value

__all__ = [
    "THUMBNAIL_SIZE",
    "ReportSection",
    "build_report",
    "load_neighbor_thumbnail",
    "load_row_thumbnail",
    "read_rows",
    "report_from_files",
    "section_environment",
]

#: nearest training images shown per card
MAX_NEIGHBORS = 5
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# --- values --------------------------------------------------------------------------------------------
def clean_text(value: Any) -> str:
    """Text safe to write as UTF-8: undecodable bytes of file names and control characters made visible."""
    s = value if isinstance(value, str) else str(value)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        try:
            s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def _float(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return []
        return parsed if isinstance(parsed, list) else []
    return []


def _error(row: Mapping[str, Any]) -> str:
    err = row.get("error")
    return "" if err is None or (isinstance(err, float) and math.isnan(err)) else str(err)


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _is_scored(row: Mapping[str, Any]) -> bool:
    return not _error(row) and math.isfinite(_float(row.get("score")))


def _is_flagged(row: Mapping[str, Any]) -> bool:
    """What the run decided: ``is_novel`` (``p_value < alpha`` at scoring time), never recomputed here."""
    return not _error(row) and row.get("is_novel") is True


def _short_id(train_id: str) -> str:
    base = train_id.rsplit("::", 1)[-1].replace("\\", "/").rstrip("/")
    return base.rsplit("/", 1)[-1] or train_id


def _scorer_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for r in rows[:50]:
        names.update((k[6:], None) for k in r if k.startswith("score_") and len(k) > 6)
    return list(names)


# --- the page ------------------------------------------------------------------------------------------
def template_environment(package: str, *more: str) -> Any:
    """A Jinja2 environment over ``package``'s ``templates/`` folder (then those of the packages ``more``):
    autoescaped, and every output passes :func:`clean_text` and ``html.escape`` (quotes too, as attribute
    values need) unless it is ``Markup``."""
    import html

    from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    def finalize(value: Any) -> Any:
        return value if isinstance(value, Markup) else Markup(html.escape(clean_text(value), quote=True))

    return Environment(
        loader=ChoiceLoader([PackageLoader(p, "templates") for p in (package, *more)]),
        autoescape=select_autoescape(["html", "html.j2"], default=True),
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def section_environment(package: str) -> Any:
    """The environment a layer above renders its :class:`ReportSection` with: ``package``'s templates, then the
    report's (for its macros: ``{% from "macros.html.j2" import img %}``), and the report's filters
    (``num``, ``p``, ``short_id``, ``thousands``)."""
    env = template_environment(package, "novelty.batch")
    env.filters.update(num=fmt_number, p=format_p_value, short_id=_short_id, thousands=lambda n: f"{n:,}")
    return env


@dataclass(frozen=True)
class ReportSection:
    """A section of the report rendered by a layer above (see :func:`section_environment`): its ``html``,
    shown after the counts, and the ``css`` rules it needs beyond the report's, added to the page's style
    sheet. Both are inserted as they are: render them with an autoescaped template."""

    html: str
    css: str = ""


@cache
def _template() -> Any:
    """The report template (see :func:`section_environment`)."""
    return section_environment("novelty.batch").get_template("report.html.j2")


def _card(
    rank: int,
    row: Mapping[str, Any],
    thumb: tuple[str | None, str],
    neighbors: list[dict[str, Any]],
    scorer_names: Sequence[str],
) -> dict[str, Any]:
    detail = (
        [f"{n} {fmt_number(row.get(f'score_{n}'))}" for n in scorer_names] if len(scorer_names) > 1 else []
    )
    w, h = _float(row.get("width")), _float(row.get("height"))
    if w > 0 and h > 0:
        detail.append(f"{int(w)}×{int(h)} px")
    prediction = _text(row.get("prediction"))
    prob = _float(row.get("probability"))
    return {
        "rank": rank,
        "key": row.get("key", ""),
        "flagged": _is_flagged(row),
        "thumb": thumb,
        "row": row,
        "detail": " · ".join(detail),
        "prediction": prediction,
        "probability": f" ({prob:.0%})" if math.isfinite(prob) else "",
        "trusted": row.get("trusted") is True,
        "neighbors": neighbors,
        "overlay": _overlay(thumb, row),
    }


def _overlay(thumb: tuple[str | None, str], row: Mapping[str, Any]) -> tuple[str | None, str] | None:
    """The thumbnail with the row's anomaly map drawn over it (``novelty score --maps``), or ``None``."""
    text = row.get("anomaly_map")
    if not isinstance(text, str) or not text or thumb[0] is None:
        return None
    try:
        data = overlay_map(base64.b64decode(thumb[0]), text)
    except InvalidInputError as e:
        return None, f"anomaly map unreadable: {e}"
    return base64.b64encode(data).decode("ascii"), ""


def _predictions(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int, int]] | None:
    counts: dict[str, list[int]] = {}
    for r in rows:
        pred = _text(r.get("prediction"))
        if _error(r) or not pred:
            continue
        c = counts.setdefault(pred, [0, 0, 0])
        c[0 if r.get("trusted") is True else 1] += 1
        c[2] += _is_flagged(r)
    ranked = sorted(counts.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), kv[0]))
    return [(pred, c[0], c[1], c[2]) for pred, c in ranked] or None


def _info_text(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def build_report(
    rows: list[dict],
    out_html: str | Path,
    *,
    calibration_scores: np.ndarray | None = None,
    alpha: float = 0.05,
    title: str = "novelty report",
    top_n: int = 24,
    load_thumbnail: Callable[[dict], bytes | None] | None = None,
    load_neighbor_thumbnail: Callable[[str], bytes | None] | None = None,
    detector_info: dict | None = None,
    sections: Sequence[ReportSection] = (),
) -> Path:
    """Write the HTML report of result ``rows`` to ``out_html`` (atomically) and return its path.

    A row counts as flagged when its ``is_novel`` is true (the scoring run's decision); ``alpha`` is that
    run's significance level, used for the threshold line and the captions. ``calibration_scores``: the
    detector's in-distribution calibration scores on the scale of the rows' ``score`` (the combined score
    when there are several scorers). ``load_thumbnail(row)`` / ``load_neighbor_thumbnail(train_id)`` return
    encoded image bytes (any format PIL reads) or ``None``; an exception or ``None`` shows a placeholder with
    the reason. Defaults: :func:`load_row_thumbnail` and :func:`load_neighbor_thumbnail`. ``sections``:
    :class:`ReportSection` s of layers above (e.g. :func:`novelty.drift.report.render_section`), shown first.
    """
    from markupsafe import Markup

    row_loader = load_thumbnail or load_row_thumbnail
    nb_loader = load_neighbor_thumbnail or thumbnails.load_neighbor_thumbnail
    rows = list(rows)
    errors = [r for r in rows if _error(r)]
    scored = [r for r in rows if _is_scored(r)]
    flagged = [r for r in scored if _is_flagged(r)]
    scores = np.array([_float(r.get("score")) for r in scored], dtype=np.float64)
    cal: np.ndarray | None = None
    threshold: float | None = None
    if calibration_scores is not None:
        cal = np.asarray(calibration_scores, dtype=np.float64).ravel()
        cal = cal[np.isfinite(cal)]
        if cal.size:
            threshold = ConformalCalibrator().fit(cal).threshold(alpha)
        else:
            cal = None
    caption = "No calibration scores given: only this archive's scores are shown."
    if cal is not None and threshold is not None and math.isfinite(threshold):
        above_cal = float(np.mean(cal >= threshold))
        above = float(np.mean(scores >= threshold)) if scores.size else 0.0
        caption = (
            f"{above:.1%} of this archive's scores are at or above the threshold, against "
            f"{above_cal:.1%} of the calibration scores (in-distribution: at most α = {alpha:g} expected)."
        )
    elif cal is not None:
        caption = f"With {cal.size} calibration scores no p-value can fall below α = {alpha:g}: nothing can be flagged."

    scorer_names = _scorer_names(rows)
    order = sorted(
        scored,
        key=lambda r: (-_float(r.get("score")), _float(r.get("p_value")), clean_text(r.get("key", ""))),
    )
    top = order[: max(0, top_n)]
    nb_cache: dict[str, tuple[str | None, str]] = {}
    cards = []
    for i, r in enumerate(top, 1):
        thumb = make_thumbnail(row_loader, r, THUMBNAIL_SIZE)
        ids = [str(x) for x in _list(r.get("neighbors"))]
        dists = [_float(x) for x in _list(r.get("neighbor_distances"))]
        nbs = []
        for j, tid in enumerate(ids[:MAX_NEIGHBORS]):
            if tid not in nb_cache:
                nb_cache[tid] = make_thumbnail(nb_loader, tid, NEIGHBOR_THUMBNAIL_SIZE)
            nbs.append(
                {"id": tid, "distance": dists[j] if j < len(dists) else math.nan, "thumb": nb_cache[tid]}
            )
        cards.append(_card(i, r, thumb, nbs, scorer_names))
    error_rows = []
    for r in errors:
        code, sep, reason = _error(r).partition(": ")
        error_rows.append(
            {"key": r.get("key", ""), "code": code if sep else "", "reason": reason if sep else code}
        )
    page = _template().render(
        title=title,
        generated=utc_now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),  # local time, for a reader
        alpha=f"{alpha:g}",
        n_total=len(rows),
        n_scored=len(scored),
        n_flagged=len(flagged),
        share=f"{len(flagged) / len(scored):.1%} of scored" if scored else "nothing scored",
        hist=histogram(scores, cal, threshold, alpha),
        caption=caption,
        detector_info=[(k, _info_text(v)) for k, v in (detector_info or {}).items()],
        predictions=_predictions(rows),
        show_cards=top_n > 0,
        cards=cards,
        not_shown=max(0, len(flagged) - len(top)),
        errors=error_rows,
        sections=[ReportSection(Markup(s.html), Markup(s.css)) for s in sections],
    )
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, page)


# --- from files ----------------------------------------------------------------------------------------
def read_rows(results_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a results file, typed (:func:`novelty.batch.results.read_results`)."""
    return read_results(results_path)


def _run_value(rows: Sequence[Mapping[str, Any]], column: str, path: Any) -> Any:
    values = {r.get(column) for r in rows if column in r}
    values.discard(None)
    if rows and (column not in rows[0] or not values):
        raise ResultsReadError(
            f"{path}: the results have no {column!r} column (written by an older release, or not by "
            "`novelty score`); score the inputs again to get a report"
        )
    if len(values) > 1:
        raise ResultsReadError(f"{path}: the rows mix several runs ({column} takes {len(values)} values)")
    return next(iter(values), None)


def _detector_summary(root: Path, art: Any, n_cal: int) -> dict[str, Any]:
    from novelty.persistence import describe_artifact  # lazy: pulls in torch

    d = describe_artifact(art)
    info: dict[str, Any] = {
        "detector": str(root),
        "artifact id": d.artifact_id,
        "backbone": d.params["backbone"],
    }
    info["scorers"] = ", ".join(d.scorers)
    if len(d.scorers) > 1:
        info["combined score"] = "mean of the scorers' robust z-scores"
    if d.n_index is not None:
        info["training images (index)"] = f"{d.n_index:,} ({d.metric})"
    info["calibration images"] = f"{n_cal:,}"
    if d.classes:
        info["condition head"] = "classes " + ", ".join(str(c) for c in d.classes)
    if d.created:
        info["created"] = d.created
    return info


def report_from_files(
    results_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    detector_dir: str | os.PathLike[str] | None,
    out_html: str | os.PathLike[str],
    *,
    title: str | None = None,
    top_n: int = 24,
    load_thumbnail: Callable[[dict], bytes | None] | None = None,
    load_neighbor_thumbnail: Callable[[str], bytes | None] | None = None,
    detector_info: dict | None = None,
    sections: Sequence[ReportSection] = (),
) -> Path:
    """Build the report of a results file (``.parquet`` / ``.csv`` / ``.jsonl``) written by ``novelty score``.

    ``alpha`` and flagging come from the results. ``detector_dir``: the detector that scored them (read
    verified; its calibration scores draw the reference histogram); a detector whose artifact id is not the
    results' ``detector_id`` raises :class:`~novelty.batch.errors.ReportMismatchError`. Several results files
    (of one run each, by the same detector) make one report; ``sections``: see :func:`build_report`."""
    from novelty.persistence import calibration_scores, describe_artifact  # lazy: pulls in torch

    paths = [results_path] if isinstance(results_path, (str, os.PathLike)) else list(results_path)
    rows = []
    for p in paths:
        rows += [{k: v for k, v in r.items() if k != "embedding"} for r in read_results(p)]
    results_path = ", ".join(str(p) for p in paths)
    alpha = _run_value(rows, "alpha", results_path)
    scored_by = _run_value(rows, "detector_id", results_path)
    cal: np.ndarray | None = None
    info: dict[str, Any] = {}
    if detector_dir is not None:
        art = read_artifact(detector_dir)
        if scored_by is not None and scored_by != art.artifact_id:
            raise ReportMismatchError(
                f"{detector_dir} (artifact {art.artifact_id[:12]}…) is not the detector that scored "
                f"{results_path} (detector {str(scored_by)[:20]}…); pass the detector that scored them, "
                "or leave --detector out for a report without calibration scores"
            )
        if alpha is None:  # no rows: the detector's own level
            alpha = describe_artifact(art).params["alpha"]
        cal = calibration_scores(art)
        info = _detector_summary(Path(detector_dir), art, int(cal.size))
    info["results"] = str(results_path)
    info["alpha (of the run)"] = "—" if alpha is None else f"{alpha:g}"
    if detector_info:
        info.update(detector_info)
    return build_report(
        rows,
        Path(out_html),
        calibration_scores=cal,
        alpha=0.05 if alpha is None else float(alpha),
        title=title or f"novelty report · {Path(results_path).name}",
        top_n=top_n,
        load_thumbnail=load_thumbnail,
        load_neighbor_thumbnail=load_neighbor_thumbnail,
        detector_info=info,
        sections=sections,
    )
