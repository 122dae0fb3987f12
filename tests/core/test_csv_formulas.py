"""No cell of a CSV the package writes is a spreadsheet formula: text beginning with = + - @ tab or CR gets a
leading ' (OWASP), numbers stay numbers, and the package's own readers give the original text back."""

from __future__ import annotations

import csv
import json
import math
import re
import zipfile
from pathlib import Path

import pytest
from hardening_support import embedding_detector, selection_file, small_image  # tests/hardening_support.py
from hypothesis import given, settings
from hypothesis import strategies as st

from novelty.batch.results import ResultWriter, iter_result_columns, read_results
from novelty.batch.schema import result_schema
from novelty.cli import main
from novelty.fileio import csv_text_cell, csv_text_value
from novelty.flywheel.dataset import Dataset
from novelty.flywheel.labels.labelimport import import_labels, read_labels_csv
from novelty.flywheel.labels.labelling import export_selection

FORMULA = re.compile(r"[=+\-@\t\r]")
NAMES = [
    "=cmd|' /C calc'!A0.jpg",
    "@SUM(1+1)*cmd|' /C calc'!A0.png",
    "+1+2.png",
    "-2+3.png",
    "\tTAB.png",
    "'=already quoted.png",
    "plain.png",
]


def _cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _no_formula(rows: list[list[str]]) -> None:
    """Every cell that begins with a formula character is a number the package wrote."""
    for row in rows:
        for cell in row:
            assert not (FORMULA.match(cell) and not _is_number(cell)), (cell, row)


@given(st.text())
@settings(max_examples=300, derandomize=True, deadline=None)
def test_neutralising_round_trips_every_text(text):
    cell = csv_text_cell(text)
    assert csv_text_value(cell) == text
    assert not FORMULA.match(cell)
    assert cell == text or cell == "'" + text


def test_numbers_are_not_text():
    assert (
        csv_text_cell("plain") == "plain" and csv_text_cell("-0.5") == "'-0.5"
    )  # text that looks like a number
    assert csv_text_value("-0.5") == "-0.5" and csv_text_value("'x") == "'x" and csv_text_value("'") == "'"


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    return embedding_detector(tmp_path_factory.mktemp("det") / "det")


def test_scored_archive_members_named_like_formulas_are_neutralised(detector_dir, tmp_path):
    upload = tmp_path / "upload.zip"
    img = small_image(tmp_path / "img.png").read_bytes()
    with zipfile.ZipFile(upload, "w") as z:
        for name in NAMES:
            z.writestr(name, img)
        z.writestr("=HYPERLINK(evil).png", b"not an image")  # an error row: its message names the member
    out = tmp_path / "results.csv"
    assert (
        main(["score", str(detector_dir), str(upload), "--out", str(out), "--embeddings"]) == 3
    )  # one unreadable
    rows = _cells(out)
    header = rows[0]
    members = [r[header.index("member")] for r in rows[1:]]
    assert "'=cmd|' /C calc'!A0.jpg" in members and "'@SUM(1+1)*cmd|' /C calc'!A0.png" in members
    assert "'+1+2.png" in members and "'-2+3.png" in members and "'\tTAB.png" in members
    assert (
        "''=already quoted.png" in members and "plain.png" in members and "'=HYPERLINK(evil).png" in members
    )
    _no_formula(rows)
    # the package's readers give the names back exactly
    back = read_results(out)
    assert sorted(r["member"] for r in back) == sorted([*NAMES, "=HYPERLINK(evil).png"])
    assert all(isinstance(r["p_value"], float) for r in back)
    streamed = [m for b in iter_result_columns(out, ["key", "member", "p_value"]) for m in b["member"]]
    assert sorted(streamed) == sorted(r["member"] for r in back)


def test_negative_numbers_stay_numbers_and_text_round_trips(tmp_path):
    out = tmp_path / "r.csv"
    row = {
        "key": "=1+2",
        "path": "-rf.png",
        "p_value": 0.5,
        "is_novel": False,
        "score": -0.5,
        "error": "@bad: reason",
        "alpha": 0.05,
        "detector_id": "+det",
    }
    with ResultWriter(out, schema=result_schema(["knn"], head=False)) as w:
        w.write([row, {**row, "key": "k2", "score": -math.inf}])
    rows = _cells(out)
    h = rows[0]
    assert rows[1][h.index("key")] == "'=1+2" and rows[1][h.index("path")] == "'-rf.png"
    assert rows[1][h.index("score")] == "-0.5" and rows[2][h.index("score")] == "-inf"  # numbers untouched
    assert rows[1][h.index("error")] == "'@bad: reason" and rows[1][h.index("detector_id")] == "'+det"
    _no_formula(rows)
    back = read_results(out)
    assert [(r["key"], r["path"], r["score"], r["error"], r["detector_id"]) for r in back] == [
        ("=1+2", "-rf.png", -0.5, "@bad: reason", "+det"),
        ("k2", "-rf.png", -math.inf, "@bad: reason", "+det"),
    ]


def test_label_exports_neutralise_classes_ids_and_paths_and_import_reads_them_back(tmp_path):
    imgs = [small_image(tmp_path / "=img0.png", 0), small_image(tmp_path / "img1.png", 1)]
    sel = selection_file(
        tmp_path / "selection.json", imgs, ids=["@item0", "-item1"], predictions=["=1+2", "-neg"]
    )
    data = json.loads(sel.read_text())
    data["classes"] = ["=1+2", "-neg"]
    data["items"][1].update(p_value=0.5, probability=0.95)  # auto-accepted: into auto_labels.csv
    sel.write_text(json.dumps(data))
    res = export_selection(sel, tmp_path / "out", format="csv", auto_accept=True, audit=0)
    assert res.auto_file is not None and len(res.auto) == 1
    labels, auto = _cells(tmp_path / "out" / "labels.csv"), _cells(res.auto_file)
    for rows in (labels, auto):
        _no_formula(rows)
    assert labels[1][:1] == ["'@item0"] and labels[1][labels[0].index("prediction")] == "'=1+2"
    assert labels[1][labels[0].index("probability")] == "0.6"
    assert auto[1][auto[0].index("label")] == "'-neg" and auto[1][auto[0].index("id")] == "'-item1"
    assert [(r.id, r.label) for r in read_labels_csv(res.auto_file).rows] == [("-item1", "-neg")]
    # a person fills the label column of labels.csv (a spreadsheet keeps the leading ' of text)
    labels[1][labels[0].index("label")] = csv_text_cell("=1+2")
    with open(tmp_path / "out" / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(labels)
    read = read_labels_csv(tmp_path / "out" / "labels.csv")
    assert [(r.id, r.label) for r in read.rows] == [("@item0", "=1+2")]
    ds = Dataset.create(tmp_path / "ds", ["=1+2", "-neg"])
    done = import_labels(ds, tmp_path / "out" / "labels.csv", sel)
    assert [(e.id, e.label, Path(e.path).name) for e in done.added] == [("@item0", "=1+2", "=img0.png")]
    done = import_labels(ds, res.auto_file, sel)
    assert [(e.id, e.label) for e in done.added] == [("-item1", "-neg")]
