"""The `novelty` command: fit, score (odd inputs, archives, resume after kill -9), report, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from odd_inputs import make_odd_corpus  # tests/odd_inputs.py, next to this file

from novelty.batch.results import read_results
from novelty.cli import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory, textile_paths) -> Path:
    out = tmp_path_factory.mktemp("det") / "textile"
    train = tmp_path_factory.mktemp("train")
    for p in textile_paths["nominal"][:100]:
        (train / p.name).symlink_to(p)
    assert main(["fit", str(train), "--out", str(out)]) == EXIT_OK
    return out


def test_score_odd_corpus_and_hostile_zip(detector_dir, tmp_path, textile_paths, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    cases = make_odd_corpus(corpus)
    zpath = tmp_path / "upload.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("../../escape.jpg", textile_paths["global"][0].read_bytes())
        zf.writestr("/abs/evil.jpg", textile_paths["global"][1].read_bytes())
        zf.writestr("ok/été photo 1.jpg", textile_paths["nominal"][900].read_bytes())
        zf.writestr("ok/readme.txt", "not an image")
    before = set(os.listdir(tmp_path)) | set(os.listdir(tmp_path.parent))
    out = tmp_path / "results.jsonl"
    code = main(["score", str(detector_dir), str(corpus), str(zpath), "--out", str(out)])
    assert code == EXIT_PARTIAL  # finished, with some unreadable inputs
    after = set(os.listdir(tmp_path)) | set(os.listdir(tmp_path.parent))
    assert after - before == {"results.jsonl"}, "scoring wrote something besides its results"
    rows = read_results(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys))
    by_name = {Path(r["member"] or r["path"]).name: r for r in rows}
    for name, (_path, expected) in cases.items():
        if name in ("a_directory.jpg", "missing.jpg"):
            continue  # not files inside the folder: a directory is walked, a missing file is absent
        assert name in by_name, f"{name} has no row"
        err = by_name[name]["error"]
        if expected is None:
            assert err == "", f"{name}: {err}"
            assert by_name[name]["width"] > 0 and 0 < by_name[name]["p_value"] <= 1
        else:
            assert err.startswith(expected.reason_code + ":"), f"{name}: {err!r} is not {expected.__name__}"
    members = {r["member"] for r in rows if r["member"]}
    assert members == {"../../escape.jpg", "/abs/evil.jpg", "ok/été photo 1.jpg"}
    assert all(by_name[m.split("/")[-1]]["error"] == "" for m in members)
    assert not (tmp_path.parent / "escape.jpg").exists()


def test_resume_after_kill_gives_the_same_rows(detector_dir, tmp_path, textile_paths):
    data = tmp_path / "data"
    data.mkdir()
    for p in textile_paths["global"][:200] + textile_paths["local"][:200]:
        (data / f"{p.parent.name}_{p.name}").symlink_to(p)
    ref = tmp_path / "ref.csv"
    assert main(["score", str(detector_dir), str(data), "--out", str(ref), "--chunk-rows", "64"]) == EXIT_OK
    out = tmp_path / "killed.csv"
    cmd = [sys.executable, "-m", "novelty.cli", "score", str(detector_dir), str(data), "--out", str(out)]
    cmd += ["--chunk-rows", "64"]
    for delay in (6.0, 9.0):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == EXIT_OK, done.stderr
    a, b = read_results(ref), read_results(out)
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra["p_value"] == pytest.approx(rb["p_value"]) and ra["is_novel"] == rb["is_novel"]


def test_report_from_results(detector_dir, tmp_path, textile_paths):
    data = tmp_path / "d"
    data.mkdir()
    for p in textile_paths["global"][:20] + textile_paths["nominal"][950:960]:
        (data / f"{p.parent.name}_{p.name}").symlink_to(p)
    res = tmp_path / "r.parquet"
    assert main(["score", str(detector_dir), str(data), "--out", str(res)]) == EXIT_OK
    html = tmp_path / "report.html"
    assert main(["report", str(res), "--detector", str(detector_dir), "--out", str(html)]) == EXIT_OK
    text = html.read_text()
    assert text.count("data:image/jpeg;base64,") >= 10


def test_fit_with_labels_gives_predictions(tmp_path, textile_paths):
    train = tmp_path / "train"
    train.mkdir()
    rows = ["path,label"]
    for kind, paths in (("nominal", textile_paths["nominal"][:60]), ("defect", textile_paths["global"][:60])):
        for p in paths:
            (train / f"{kind}_{p.name}").symlink_to(p)
            rows.append(f"{kind}_{p.name},{kind}")
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    out = tmp_path / "det"
    assert main(["fit", str(train), "--out", str(out), "--labels", str(tmp_path / "labels.csv")]) == EXIT_OK
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["head"]["classes"] == ["defect", "nominal"]
    res = tmp_path / "r.jsonl"
    assert main(["score", str(out), str(textile_paths["global"][300]), "--out", str(res)]) == EXIT_OK
    (row,) = read_results(res)
    assert row["prediction"] == "defect" and isinstance(row["trusted"], bool)


def test_exit_codes(tmp_path, capsys):
    assert main([]) == EXIT_USAGE
    assert main(["score"]) == EXIT_USAGE
    assert (
        main(["score", str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "r.csv")])
        == EXIT_FAILURE
    )
    assert "error:" in capsys.readouterr().err
    assert main(["score", "--help"]) == EXIT_OK
