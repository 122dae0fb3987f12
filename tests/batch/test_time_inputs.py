"""Times from users outside 1900–2199 UTC (year 9999 at −05:00 is in year 10000 in UTC; year 1 at +05:00 is before
year 1; 1e300 seconds): a one-line error naming the field on every path that reads one — `novelty select
--flags-since`, a label CSV's `time` column, Label Studio's `updated_at`, `novelty score --timestamps` — and
`novelty drift` on results files that already hold such a timestamp. Never "unexpected error", never a traceback."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hardening_support import embedding_detector, small_image  # tests/hardening_support.py

from novelty.batch.items import InputItem
from novelty.batch.results import ResultWriter, read_results
from novelty.batch.schema import encode_embedding, result_schema
from novelty.batch.timestamps import image_timestamp
from novelty.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from novelty.fileio import sha256_file
from novelty.flywheel.labels.labelimport import LabelImportError, read_labels_csv
from novelty.flywheel.labels.labelstudio import read_export

#: times whose UTC value lies outside the range the package accepts
OUT_OF_RANGE = ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"]


def _one_line_error(err: str, command: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"novelty {command}: error:"), err
    assert "unexpected" not in err and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, err)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    return embedding_detector(tmp_path_factory.mktemp("det") / "det")


# --- item 3: select --flags-since, a label CSV's time, Label Studio's updated_at --------------------------------
@pytest.mark.parametrize("since", OUT_OF_RANGE)
def test_select_flags_since_out_of_range_is_a_usage_error(tmp_path, capsys, since):
    code = main(
        [
            "select",
            str(tmp_path / "no-detector"),
            str(tmp_path),
            "--budget",
            "3",
            "--strategy",
            "novelty",
            "--flags",
            str(tmp_path / "flags"),
            "--flags-since",
            since,
        ]
    )
    assert code == EXIT_USAGE
    _one_line_error(capsys.readouterr().err, "select", "--flags-since", "out of range")


@pytest.mark.parametrize("when", OUT_OF_RANGE)
def test_dataset_add_csv_time_out_of_range_names_the_row(tmp_path, capsys, when):
    small_image(tmp_path / "img0.png")
    ds = tmp_path / "ds"
    assert main(["dataset", "create", str(ds), "--classes", "dry,wet"]) == EXIT_OK
    before = _snapshot(ds)
    (tmp_path / "train.csv").write_text(f"path,label,time\nimg0.png,dry,{when}\n")
    capsys.readouterr()
    assert main(["dataset", "add-csv", str(ds), str(tmp_path / "train.csv")]) == EXIT_FAILURE
    _one_line_error(capsys.readouterr().err, "dataset", "train.csv line 2", "time", "out of range")
    assert _snapshot(ds) == before  # nothing written


def test_label_csv_time_is_read_through_the_clock(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "id,label,time\na,dry,2026-02-01T10:00:00+01:00\nb,wet,\nc,dry,2026-02-01T10:00:00\n"
    )
    rows = read_labels_csv(tmp_path / "labels.csv").rows
    assert [r.time for r in rows] == ["2026-02-01T09:00:00Z", None, "2026-02-01T10:00:00Z"]  # UTC, with Z
    (tmp_path / "bad.csv").write_text("id,label,time\na,dry,2026-02-01\nb,wet,0001-01-01T00:00:00+05:00\n")
    with pytest.raises(
        LabelImportError, match=r"bad.csv line 3: time '0001-01-01T00:00:00\+05:00' is out of range"
    ):
        read_labels_csv(tmp_path / "bad.csv")


def _label_studio_export(path: Path, **annotation) -> Path:
    ann = {
        "id": 1,
        "result": [
            {"type": "choices", "from_name": "label", "to_name": "image", "value": {"choices": ["dry"]}}
        ],
        **annotation,
    }
    path.write_text(json.dumps([{"id": 17, "data": {"novelty_id": "item0"}, "annotations": [ann]}]))
    return path


@pytest.mark.parametrize("when", OUT_OF_RANGE)
@pytest.mark.parametrize("field", ["updated_at", "created_at"])
def test_label_studio_time_out_of_range_names_the_field(tmp_path, capsys, when, field):
    export = _label_studio_export(tmp_path / "export.json", **{field: when})
    with pytest.raises(LabelImportError, match=rf"task 17 \(item0\): {field} .* is out of range"):
        read_export(export)
    ds = tmp_path / "ds"
    assert main(["dataset", "create", str(ds), "--classes", "dry,wet"]) == EXIT_OK
    before = _snapshot(ds)
    capsys.readouterr()
    code = main(["import-labels", str(ds), str(export), "--selection", str(tmp_path / "selection.json")])
    assert code == EXIT_FAILURE
    _one_line_error(capsys.readouterr().err, "import-labels", field, "out of range")
    assert _snapshot(ds) == before


def test_label_studio_time_is_normalised_and_not_iso_is_refused(tmp_path):
    rows = read_export(
        _label_studio_export(tmp_path / "a.json", updated_at="2026-02-01T10:00:00.5+01:00")
    ).rows
    assert rows[0].time == "2026-02-01T09:00:00Z"
    assert read_export(_label_studio_export(tmp_path / "b.json")).rows[0].time is None  # no time: none
    with pytest.raises(LabelImportError, match="updated_at 'yesterday' is not an ISO-8601 time"):
        read_export(_label_studio_export(tmp_path / "c.json", updated_at="yesterday"))


# --- item 6: score --timestamps refuses them at the door ----------------------------------------------------
@pytest.mark.parametrize("stamp", [*OUT_OF_RANGE, "1e300", "-1e300", "inf"])
def test_score_timestamps_out_of_range_fail_in_one_line(detector_dir, tmp_path, capsys, stamp):
    inbox = tmp_path / "inbox"
    small_image(inbox / "a.png", 1)
    small_image(inbox / "b.png", 2)
    stamps = tmp_path / "stamps.csv"
    stamps.write_text(f"path,timestamp\na.png,2026-11-27T08:15:00Z\nb.png,{stamp}\n")
    out = tmp_path / "r.csv"
    code = main(
        [
            "score",
            str(detector_dir),
            str(inbox),
            "--out",
            str(out),
            "--embeddings",
            "--timestamps",
            str(stamps),
        ]
    )
    assert code == EXIT_FAILURE
    _one_line_error(capsys.readouterr().err, "score", "stamps.csv", "'b.png'", "timestamp", "out of range")
    assert not out.exists()


def test_score_timestamps_in_range_are_written(detector_dir, tmp_path):
    inbox = tmp_path / "inbox"
    small_image(inbox / "a.png", 1)
    small_image(inbox / "b.png", 2)
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("path,timestamp\na.png,1900-01-01T00:00:00Z\nb.png,2199-12-31T23:59:59+00:00\n")
    out = tmp_path / "r.csv"
    code = main(
        [
            "score",
            str(detector_dir),
            str(inbox),
            "--out",
            str(out),
            "--embeddings",
            "--timestamps",
            str(stamps),
        ]
    )
    assert code == EXIT_OK
    got = {Path(r["key"]).name: r["timestamp"] for r in read_results(out)}
    assert got == {"a.png": -2208988800.0, "b.png": 7258118399.0}


def test_exif_time_out_of_range_falls_back_to_the_file_time(tmp_path):
    from PIL import Image

    p = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "9999:12:31 23:59:59"
    exif.get_ifd(0x8769)[36881] = "-05:00"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(p, exif=exif)
    st = p.stat()
    item = InputItem(key=str(p), path=str(p), size=st.st_size, mtime_ns=st.st_mtime_ns)
    assert image_timestamp(item) == (st.st_mtime_ns / 1e9, "mtime")
    far = InputItem(key=str(p), path=str(p), size=st.st_size, mtime_ns=10**20)  # a file time in the year 5138
    t, source = image_timestamp(far)
    assert math.isnan(t) and source == ""


# --- item 6: drift on results that already hold absurd timestamps --------------------------------------------
def _results(path: Path, detector_dir: Path, bad: float) -> Path:
    det_id = sha256_file(detector_dir / "manifest.json")  # the artifact id
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        v = rng.normal(size=512).astype(np.float32)
        rows.append(
            {
                "key": f"/data/img{i:03d}.jpg",
                "path": f"/data/img{i:03d}.jpg",
                "p_value": float(rng.uniform(0.01, 1)),
                "is_novel": False,
                "score": 0.5,
                "error": "",
                "alpha": 0.05,
                "detector_id": det_id,
                "embedding": encode_embedding(v / np.linalg.norm(v)),
                "timestamp": bad if i == 7 else 1_700_000_000.0 + 3600.0 * i,
                "timestamp_source": "csv",
            }
        )
    with ResultWriter(path, schema=result_schema(["knn"], head=False, embeddings=True)) as w:
        w.write(rows)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
@pytest.mark.parametrize("bad", [1e300, 253_402_318_800.0, -1e300, math.inf])  # 253402318800 s: year 10000
def test_drift_on_results_with_absurd_timestamps_fails_in_one_line(detector_dir, tmp_path, capsys, fmt, bad):
    results = _results(tmp_path / f"r.{fmt}", detector_dir, bad)
    capsys.readouterr()
    assert main(["drift", str(detector_dir), str(results)]) == EXIT_FAILURE
    _one_line_error(
        capsys.readouterr().err, "drift", str(results), "/data/img007.jpg", "timestamp", "out of range"
    )


def test_drift_on_results_with_a_year_10000_text_timestamp_fails_in_one_line(detector_dir, tmp_path, capsys):
    results = _results(tmp_path / "r.csv", detector_dir, 1_700_000_000.0)
    with open(results, newline="") as f:
        rows = list(csv.reader(f))
    col = rows[0].index("timestamp")
    rows[8][col] = "10000-01-01T00:00:00Z"
    with open(results, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    capsys.readouterr()
    assert main(["drift", str(detector_dir), str(results)]) == EXIT_FAILURE
    _one_line_error(capsys.readouterr().err, "drift", str(results), "timestamp")


def test_drift_monitor_refuses_out_of_range_times():
    from novelty import drift
    from novelty.errors import InvalidInputError

    rng = np.random.default_rng(0)
    ref = drift.DriftReference(rng.normal(size=(60, 8)))
    p = rng.uniform(0.01, 1, size=20)
    times = 1_700_000_000.0 + 60.0 * np.arange(20)
    run = drift.monitor(ref, p_values=p, times=times, window="10", tests=["pvalue-binomial"])
    assert len(run.windows) == 2
    for bad in (1e300, -1e300, math.inf, 253_402_318_800.0):
        t = times.copy()
        t[5] = bad
        for window in ("1d", "10"):
            with pytest.raises(InvalidInputError, match=r"times\[5\] .* out of range"):
                drift.monitor(ref, p_values=p, times=t, window=window, tests=["pvalue-binomial"])
    t = times.copy()
    t[5] = math.nan  # unknown: fine for a count window
    assert len(drift.monitor(ref, p_values=p, times=t, window="10", tests=["pvalue-binomial"]).windows) == 2
