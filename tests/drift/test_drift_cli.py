"""`novelty score --embeddings` (embeddings and timestamps in the results) and `novelty drift`: results read as
a stream, clear errors for results without embeddings or of another detector, timestamps from a CSV, EXIF or
the file, and the end-to-end command with its JSON and its report (rendered in headless Chromium)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from novelty.batch.items import InputItem
from novelty.batch.results import ResultWriter, iter_result_columns, read_results, result_columns
from novelty.batch.schema import decode_embedding, encode_embedding, result_schema
from novelty.batch.timestamps import image_timestamp, parse_timestamp
from novelty.cli import EXIT_OK, EXIT_USAGE, main
from novelty.drift import DriftError, EmptyWindowError, MissingEmbeddingsError
from novelty.drift.stream import load_stream
from novelty.errors import InvalidInputError

CHROMIUM = Path("/usr/bin/chromium")


def _rows(n: int, dim: int, *, embeddings: bool, detector: str = "det-a", error_every: int = 0) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        err = bool(error_every) and i % error_every == 0
        row = {
            "key": f"/data/img{i:03d}.jpg",
            "path": f"/data/img{i:03d}.jpg",
            "p_value": math.nan if err else float(rng.uniform(0.01, 1)),
            "is_novel": False,
            "score": 0.5,
            "error": "truncated: cut short" if err else "",
            "alpha": 0.05,
            "detector_id": detector,
        }
        if embeddings:
            v = rng.normal(size=dim).astype(np.float32)
            row["embedding"] = "" if err else encode_embedding(v / np.linalg.norm(v))
            row["timestamp"] = 1_700_000_000.0 + 3600.0 * i
            row["timestamp_source"] = "csv"
        rows.append(row)
    return rows


def _write(path: Path, rows: list[dict], *, embeddings: bool) -> Path:
    with ResultWriter(path, schema=result_schema(["knn"], head=False, embeddings=embeddings)) as w:
        w.write(rows)
    return path


def test_embedding_codec_round_trips_float16():
    v = np.random.default_rng(1).normal(size=1280).astype(np.float32)
    text = encode_embedding(v)
    back = decode_embedding(text, 1280)
    assert back.dtype == np.float16 and len(text) == 4 * math.ceil(2 * 1280 / 3)
    np.testing.assert_allclose(back.astype(np.float32), v, rtol=1e-3, atol=1e-3)
    assert encode_embedding(np.full(4, np.nan)) == "" and decode_embedding("") is None
    with pytest.raises(InvalidInputError, match="expected 2000"):
        decode_embedding(text, 1000)
    with pytest.raises(InvalidInputError):
        decode_embedding("not base64!", 4)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_results_stream_in_batches_with_their_types(tmp_path, fmt):
    rows = _rows(25, 8, embeddings=True, error_every=7)
    path = _write(tmp_path / f"r.{fmt}", rows, embeddings=True)
    cols = ["key", "p_value", "is_novel", "timestamp", "embedding"]
    assert set(cols) <= set(result_columns(path))
    batches = list(iter_result_columns(path, cols, batch_rows=10))
    assert [len(b["key"]) for b in batches] == [10, 10, 5]
    full = read_results(path)
    for c in cols:
        got = [v for b in batches for v in b[c]]
        want = [r[c] for r in full]
        if c == "p_value":
            np.testing.assert_array_equal(np.array(got), np.array(want))
        else:
            assert got == want


def test_stream_skips_unreadable_rows_and_checks_the_detector(tmp_path):
    path = _write(tmp_path / "r.parquet", _rows(20, 8, embeddings=True, error_every=5), embeddings=True)
    s = load_stream([path], detector_id="det-a")
    assert len(s) == 16 and s.n_errors == 4 and s.n_rows == 20
    assert s.embeddings.shape == (16, 8) and s.embeddings.dtype == np.float16
    assert s.times[0] == 1_700_000_000.0 + 3600.0 and s.alpha == 0.05
    with pytest.raises(DriftError, match="not by the detector given"):
        load_stream([path], detector_id="det-b")
    other = _write(tmp_path / "o.parquet", _rows(5, 8, embeddings=True, detector="det-b"), embeddings=True)
    with pytest.raises(DriftError, match="mix 2 detectors"):
        load_stream([path, other])


def test_results_without_embeddings_give_a_clear_error(tmp_path):
    path = _write(tmp_path / "plain.csv", _rows(5, 8, embeddings=False), embeddings=False)
    with pytest.raises(MissingEmbeddingsError, match="--embeddings"):
        load_stream([path])
    only_errors = _write(tmp_path / "bad.jsonl", _rows(3, 8, embeddings=True, error_every=1), embeddings=True)
    with pytest.raises(EmptyWindowError, match="no scored image"):
        load_stream([only_errors])


def test_timestamps_from_csv_exif_and_mtime(tmp_path):
    assert (
        parse_timestamp("2026-11-27T08:15:00Z")
        == datetime(2026, 11, 27, 8, 15, tzinfo=timezone.utc).timestamp()
    )
    assert parse_timestamp("2026-11-27 09:15:00+01:00") == parse_timestamp("2026-11-27T08:15:00")
    assert parse_timestamp("1700000000.5") == 1700000000.5
    with pytest.raises(InvalidInputError, match="ISO 8601"):
        parse_timestamp("yesterday")

    exif_jpg = tmp_path / "exif.jpg"
    img = Image.new("RGB", (32, 32), (120, 30, 30))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2026:01:02 03:04:05"
    img.save(exif_jpg, exif=exif)
    plain = tmp_path / "plain.jpg"
    img.save(plain)
    os.utime(plain, (1_600_000_000, 1_600_000_000))

    def item(p: Path) -> InputItem:
        st = p.stat()
        return InputItem(key=str(p), path=str(p), size=st.st_size, mtime_ns=st.st_mtime_ns)

    assert image_timestamp(item(exif_jpg)) == (
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp(),
        "exif",
    )
    assert image_timestamp(item(plain)) == (1_600_000_000.0, "mtime")
    assert image_timestamp(item(exif_jpg), {"exif.jpg": 42.0}) == (42.0, "csv")  # the operator's CSV wins


def test_score_timestamps_needs_embeddings_and_fails_before_loading(tmp_path):
    stamps = tmp_path / "t.csv"
    stamps.write_text("path,timestamp\na.jpg,2026-01-01T00:00:00Z\n")
    code = main(
        [
            "score",
            str(tmp_path / "no-detector"),
            str(tmp_path),
            "--out",
            str(tmp_path / "r.csv"),
            "--timestamps",
            str(stamps),
        ]
    )
    assert code == EXIT_USAGE
    bad = tmp_path / "bad.csv"
    bad.write_text("path,timestamp\na.jpg,soon\n")
    code = main(
        [
            "score",
            str(tmp_path / "no-detector"),
            str(tmp_path),
            "--out",
            str(tmp_path / "r.csv"),
            "--embeddings",
            "--timestamps",
            str(bad),
        ]
    )
    assert code == 1


def test_drift_command_refuses_a_bad_window_before_loading(tmp_path, capsys):
    code = main(["drift", str(tmp_path / "no-detector"), str(tmp_path / "r.parquet"), "--window", "1y"])
    assert code == 1 and "neither a duration" in capsys.readouterr().err


# --- end to end, with the pretrained backbone -------------------------------------------------------------
@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory, textile_paths) -> Path:
    out = tmp_path_factory.mktemp("det") / "textile"
    train = tmp_path_factory.mktemp("train")
    for p in textile_paths["nominal"][:120]:
        (train / p.name).symlink_to(p)
    assert main(["fit", str(train), "--out", str(out)]) == EXIT_OK
    return out


@pytest.mark.slow
def test_score_embeddings_then_drift_finds_the_day_defects_arrived(
    detector_dir, tmp_path, textile_paths, capsys
):
    data = tmp_path / "inbox"
    data.mkdir()
    rows = []
    day = 86400.0
    t0 = datetime(2026, 11, 23, tzinfo=timezone.utc).timestamp()
    for d in range(3):  # three quiet days of nominal images, then a day of global defects
        for j in range(30):
            src = textile_paths["nominal"][300 + 30 * d + j]
            name = f"d{d}_{src.name}"
            (data / name).symlink_to(src)
            rows.append((name, t0 + d * day + 600 * j))
    for j in range(30):
        src = textile_paths["global"][j]
        name = f"d3_{src.name}"
        (data / name).symlink_to(src)
        rows.append((name, t0 + 3 * day + 600 * j))
    stamps = tmp_path / "stamps.csv"
    with open(stamps, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "timestamp"])
        for name, t in rows:
            w.writerow([name, datetime.fromtimestamp(t, tz=timezone.utc).isoformat()])
    results = tmp_path / "results.parquet"
    assert (
        main(
            [
                "score",
                str(detector_dir),
                str(data),
                "--out",
                str(results),
                "--embeddings",
                "--timestamps",
                str(stamps),
            ]
        )
        == EXIT_OK
    )
    scored = read_results(results)
    assert len(scored) == 120 and all(r["timestamp_source"] == "csv" and r["embedding"] for r in scored)
    assert decode_embedding(scored[0]["embedding"]).shape == (1280,)

    plain = tmp_path / "plain.csv"
    assert main(["score", str(detector_dir), str(data), "--out", str(plain)]) == EXIT_OK
    capsys.readouterr()
    assert main(["drift", str(detector_dir), str(plain)]) == 1
    assert "--embeddings" in capsys.readouterr().err

    out, html = tmp_path / "drift.json", tmp_path / "drift.html"
    code = main(
        ["drift", str(detector_dir), str(results), "--window", "1d", "--out", str(out), "--report", str(html)]
    )
    text = capsys.readouterr().out
    assert code == EXIT_OK, text
    assert "DRIFT" in text and "recommendation:" in text
    js = json.loads(out.read_text())
    wins = js["drift"]["windows"]
    assert [w["window"][:10] for w in wins] == ["2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26"]
    assert [w["drift"] for w in wins] == [False, False, False, True]
    assert js["drift"]["first_drift"].startswith("2026-11-26")
    assert js["missing"] and js["missing"][0]["first_seen"].startswith("2026-11-26")
    assert js["recommendation"]["action"] in ("retrain now", "keep watching")
    page = html.read_text()
    assert "Drift over time" in page and "What is missing" in page and '<svg class="drift"' in page

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (as root) to install Debian's chromium")
    png = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = subprocess.run(
        [*cmd, f"--screenshot={png}", "--window-size=1280,1400", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and png.stat().st_size > 20_000, shot.stderr[-2000:]
    dom = subprocess.run(
        [*cmd, "--dump-dom", "--virtual-time-budget=5000", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'data-broken-images="0"' in dom.stdout and "DRIFT" in dom.stdout
