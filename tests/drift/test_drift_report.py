"""The drift report without a detector or a browser: a stream of results files with embeddings (three quiet
days, then a day of images from elsewhere), its analysis, and the page: the batch report with the drift
section, whose markup and styles come from the drift layer's own template."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from novelty import drift
from novelty.batch.report import build_report
from novelty.batch.results import ResultWriter
from novelty.batch.schema import encode_embedding, result_schema
from novelty.drift.analysis import DriftAnalysis
from novelty.drift.report import drift_context, render_section, write_report
from novelty.drift.stream import load_stream

DIM = 8
DAY = 86400.0
T0 = datetime(2026, 11, 23, tzinfo=timezone.utc).timestamp()


def _results(path: Path, rng: np.random.Generator) -> Path:
    rows = []
    for i in range(120):
        shifted = i >= 90
        v = rng.normal(size=DIM).astype(np.float32)
        if shifted:
            v[:2] += 4.0
        p = float(rng.uniform(0.001, 0.04) if shifted else rng.uniform(0.05, 1))
        rows.append(
            {
                "key": f"/data/day{i // 30}/img{i:03d}.jpg",
                "path": f"/data/day{i // 30}/img{i:03d}.jpg",
                "p_value": p,
                "is_novel": p < 0.05,
                "score": 1.0 - p,
                "novelty": 1.0 - p,
                "error": "",
                "alpha": 0.05,
                "detector_id": "det-a",
                "embedding": encode_embedding(v),
                "timestamp": T0 + (i // 30) * DAY + 600.0 * (i % 30),
                "timestamp_source": "csv",
                "neighbors": json.dumps(["train/0001.jpg"]),
                "neighbor_distances": json.dumps([0.5]),
            }
        )
    with ResultWriter(path, schema=result_schema(["knn"], head=False, embeddings=True)) as w:
        w.write(rows)
    return path


@pytest.fixture(scope="module")
def analysis(tmp_path_factory) -> DriftAnalysis:
    rng = np.random.default_rng(0)
    results = _results(tmp_path_factory.mktemp("drift-report") / "results.parquet", rng)
    stream = load_stream([results], detector_id="det-a", dim=DIM)
    ref = drift.DriftReference(
        rng.normal(size=(300, DIM)).astype(np.float32),
        ids=[f"train/{i:04d}.jpg" for i in range(300)],
        n_calibration=999,
        n_clusters=4,
        permutations={"mmd": 99, "classifier": 19, "histogram": 199},
    )
    spec = drift.parse_window("1d")
    run = drift.monitor(
        ref,
        stream.embeddings,
        p_values=stream.p_values,
        times=stream.times,
        window=spec,
        tests=["pvalue-binomial", "mmd", "histogram"],
    )
    novel = np.flatnonzero(stream.is_novel)
    missing = drift.what_is_missing(
        ref,
        stream.embeddings[novel].astype(np.float32),
        times=stream.times[novel],
        keys=[stream.keys[i] for i in novel],
    )
    for c in missing:
        c.members = novel[c.members]
        c.medoid = int(novel[c.medoid])
    curve = drift.drift_by_lag(stream.embeddings, drift.split_windows(len(stream), spec, stream.times))
    return DriftAnalysis(stream, ref, run, missing, curve, drift.recommend(run, curve), [str(results)], 0.0)


def _none(_: object) -> None:
    return None


def test_the_drift_report_holds_its_section_and_its_styles(analysis, tmp_path):
    page = write_report(
        analysis, tmp_path / "drift.html", load_thumbnail=_none, load_neighbor_thumbnail=_none
    ).read_text("utf-8")
    assert [w.drift(0.05) for w in analysis.run.windows] == [False, False, False, True]
    assert "Drift over time · windows of 1d" in page and '<svg class="drift"' in page
    assert "What is missing" in page and "Data horizon" in page and "DRIFT" in page
    style = page[page.index("<style>") : page.index("</style>")]
    for rule in ("table.drift td.sig{", "svg.drift{", ".clusters{", ".rec.bad{", ".gallery{"):
        assert rule in style  # the drift styles reach the page's one style sheet
    assert page.count("<style>") == 1 and style.index("body{") < style.index("svg.drift{")
    # the section's markup: each window a row, its cells by the one p-value rule, escaped
    assert page.count('<tr class="driftrow">') == 1
    assert re.search(
        r'<td class="num sig" title="[^"]+">[^<]+ <span class="muted">p=[0-9.e-]+</span></td>', page
    )
    assert "<script" not in page.replace("<script>\nwindow.addEventListener", "")


def test_the_batch_report_alone_has_no_drift_markup_or_styles(tmp_path):
    rows = [{"key": "a.jpg", "score": 1.0, "p_value": 0.5, "novelty": 0.5, "is_novel": False, "error": ""}]
    page = build_report(rows, tmp_path / "r.html", load_thumbnail=_none).read_text("utf-8")
    assert "Drift over time" not in page
    for drift_only in ("table.drift", "svg.drift", ".clusters", ".rec", ".gallery", "driftrow"):
        assert drift_only not in page


def test_the_drift_section_renders_on_its_own_with_its_styles(analysis):
    section = render_section(analysis, load_thumbnail=_none, load_neighbor_thumbnail=_none)
    assert section.html.startswith("<h2>Drift over time") and '<svg class="drift"' in section.html
    assert "<style" not in section.html and "<html" not in section.html  # a section, not a page
    assert "svg.drift{" in section.css and "table.drift td.sig{" in section.css and "<" not in section.css
    used = set(re.findall(r'class="([^"]+)"', section.html))
    for name in ("rec", "drift small", "clusters", "gallery", "shade", "bar", "ref"):
        assert any(name in u for u in used)


def test_the_drift_context_is_plain_data(analysis):
    ctx = drift_context(analysis, load_thumbnail=_none, load_neighbor_thumbnail=_none)
    assert ctx["n_windows"] == 4 and ctx["n_drift"] == 1 and ctx["first_drift"].startswith("2026-11-26")
    assert ctx["clusters"] and ctx["chart"]["lines"] and ctx["horizon"]["rows"]
