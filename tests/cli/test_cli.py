"""The `novelty` command: fit, score (odd inputs, archives, resume after kill -9), report, exit codes.

Tests that fit or load a detector run the pretrained backbone (marked slow); argument and file errors are
checked without it: they must fail before any model is loaded."""

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
from novelty.scorers import REGISTRY


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory, textile_paths) -> Path:
    out = tmp_path_factory.mktemp("det") / "textile"
    train = tmp_path_factory.mktemp("train")
    for p in textile_paths["nominal"][:100]:
        (train / p.name).symlink_to(p)
    assert main(["fit", str(train), "--out", str(out)]) == EXIT_OK
    return out


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_score_with_auto_runtime_and_threads_gives_the_same_rows(detector_dir, tmp_path, textile_paths):
    data = tmp_path / "in"
    data.mkdir()
    for p in textile_paths["nominal"][400:420] + textile_paths["global"][:10]:
        (data / p.name).symlink_to(p)
    ref, fast = tmp_path / "ref.csv", tmp_path / "fast.csv"
    assert main(["score", str(detector_dir), str(data), "--out", str(ref)]) == EXIT_OK
    args = [
        "score",
        str(detector_dir),
        str(data),
        "--out",
        str(fast),
        "--runtime",
        "auto",
        "--threads",
        "auto",
    ]
    assert main(args) == EXIT_OK
    a, b = read_results(ref), read_results(fast)
    assert [r["path"] for r in a] == [r["path"] for r in b] and len(a) == 30
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b, strict=True)) < 2e-3


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


@pytest.mark.slow
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


def test_usage_errors_exit_2_before_any_work(tmp_path, capsys):
    missing = str(tmp_path / "no-such-detector")  # never loaded: the arguments fail first
    score = ["score", missing, str(tmp_path), "--out"]
    cases = [
        ([*score, "r.csv", "--batch-size", "-1"], "--batch-size: must be an integer ≥ 1, got -1"),
        ([*score, "r.csv", "--workers", "-1"], "--workers: must be an integer ≥ 0, got -1"),
        ([*score, "r.csv", "--chunk-rows", "0"], "--chunk-rows: must be an integer ≥ 1"),
        ([*score, "r.csv", "--threads", "fast"], "--threads: must be an integer ≥ 1 or 'auto', got 'fast'"),
        ([*score, "r.csv", "--threads", "0"], "--threads: must be an integer ≥ 1 or 'auto', got '0'"),
        ([*score, "r.csv", "--runtime", "fastest"], "invalid choice: 'fastest'"),
        ([*score, "r.csv", "--max-member-bytes", "lots"], "is not a size"),
        ([*score, str(tmp_path)], "is a directory"),  # an existing directory as the results file
        ([*score, str(tmp_path / "r.xlsx")], "unknown results format"),
        (["report", "r.csv", "--out", str(tmp_path)], "is a directory"),
        (["report", "r.csv", "--out", "r.html", "--top", "-3"], "--top: must be an integer ≥ 0"),
        (
            ["fit", str(tmp_path), "--out", "d", "--scorers", "knn,lof"],
            "unknown scorer(s) lof; registered: knn",
        ),
        (
            ["fit", str(tmp_path), "--out", "d", "--alpha", "1.5"],
            "--alpha: must lie in (0, 1), got 1.5",
        ),
        (
            ["compare", missing, missing, "--test", "t", "--seed", "-1"],
            "--seed: must be an integer ≥ 0, got -1",
        ),
        (["compare", missing, missing, "--test", "t", "--n-boot", "5"], "--n-boot: must be an integer ≥ 100"),
        (
            ["compare", missing, missing, "--test", "t", "--margin", "nan"],
            "--margin: must lie in [0, 1], got nan",
        ),
        (
            ["retrain", missing, "--dataset", "d", "--out", "o", "--seed", "-2"],
            "--seed: must be an integer ≥ 0",
        ),
        (["fit", str(tmp_path), "--out", "d", "--groups", "nope.csv"], "no such file, and no --labels CSV"),
    ]
    for args, message in cases:
        assert main(args) == EXIT_USAGE, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "d").exists()


def test_verbose_shows_the_traceback_of_an_unexpected_error(tmp_path, capsys, monkeypatch):
    """``-v`` used to set INFO while the traceback was logged at DEBUG: "(run with -v for details)" showed
    nothing more with -v. Now -v shows the traceback and -vv debug logging too."""
    import logging

    import novelty.cli.fit as fit_cli

    def boom(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(fit_cli, "_cmd_fit", boom)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # restored after the test
    monkeypatch.setattr(root, "handlers", [])  # basicConfig installs a handler on stderr for each run
    assert main(["fit", str(tmp_path), "--out", str(tmp_path / "d")]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert (
        "unexpected error: RuntimeError: boom (run with -v for the traceback)" in err
        and "Traceback" not in err
    )
    monkeypatch.setattr(root, "handlers", [])
    assert main(["-v", "fit", str(tmp_path), "--out", str(tmp_path / "d")]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise RuntimeError("boom")' in err
    assert "run with -v" not in err and root.level == logging.INFO
    monkeypatch.setattr(root, "handlers", [])
    assert main(["-vv", "fit", str(tmp_path), "--out", str(tmp_path / "d")]) == EXIT_FAILURE
    assert root.level == logging.DEBUG


def test_missing_pyarrow_is_found_before_the_detector_is_loaded(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    out = str(tmp_path / "r.parquet")
    assert main(["score", str(tmp_path / "no-such-detector"), str(tmp_path), "--out", out]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "pip install 'novelty[batch]'" in err and "no-such-detector" not in err


def test_bad_files_exit_1_with_a_message(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_bytes("path,label\nété.jpg,mouillé\n".encode("latin-1"))  # not UTF-8
    assert main(["fit", str(tmp_path / "train"), "--out", str(tmp_path / "d"), "--labels", str(labels)]) == 1
    assert "labels.csv: the labels CSV is not UTF-8 text (byte 0xe9" in capsys.readouterr().err
    labels.write_text("file,class\na.jpg,wet\n")
    assert main(["fit", str(tmp_path / "train"), "--out", str(tmp_path / "d"), "--labels", str(labels)]) == 1
    assert "needs the columns 'path' and 'label'; it has file, class" in capsys.readouterr().err
    for name, data in (("bad.jsonl", b'{"key": "a"}\n{"key": '), ("bad.parquet", b"PAR1 not really"),
                       ("bad.csv", b"key,score\na,1.0,extra\n")):  # fmt: skip
        (tmp_path / name).write_bytes(data)
        assert main(["report", str(tmp_path / name), "--out", str(tmp_path / "r.html")]) == EXIT_FAILURE
        err = capsys.readouterr().err
        assert f"{name}: not a readable" in err and "Traceback" not in err
    assert main(["report", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r.html")]) == EXIT_FAILURE
    assert "no such results file" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_fit_help_lists_every_registered_scorer(capsys):
    assert main(["fit", "--help"]) == EXIT_OK
    text = " ".join(capsys.readouterr().out.split())
    assert len(REGISTRY) >= 3
    for name in REGISTRY:
        assert f"{name} (" in text, name
    assert "--groups FILE_OR_COLUMN" in text and "grouped calibration" in text


def _copy_in(folder: Path, paths: list[Path], prefix: str = "") -> list[str]:
    folder.mkdir(exist_ok=True)
    names = []
    for p in paths:
        (folder / f"{prefix}{p.name}").symlink_to(p)
        names.append(f"{prefix}{p.name}")
    return names


@pytest.mark.slow
def test_fit_with_groups_from_a_column_or_a_file(tmp_path, textile_paths):
    names = _copy_in(tmp_path / "train", textile_paths["nominal"][:100])  # 50 groups of 2
    rows = ["path,label,group"] + [f"{n},{('a', 'b')[i % 2]},{i // 2}" for i, n in enumerate(names)]
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    out = tmp_path / "det"
    args = ["fit", str(tmp_path / "train"), "--out", str(out), "--labels", str(tmp_path / "labels.csv")]
    args += ["--calibration-fraction", "0.4"]  # 20 calibration groups: enough for alpha = 0.05
    assert main([*args, "--groups", "group"]) == EXIT_OK
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["split"] == "groups" and manifest["head"]["classes"] == ["a", "b"]
    ids = json.loads((out / "train_ids.json").read_text())
    group_of = {f"{tmp_path / 'train'}/{n}": i // 2 for i, n in enumerate(names)}
    fit_groups = {group_of[k] for k in ids["train"]}
    assert fit_groups and not fit_groups & {group_of[k] for k in ids["calibration"]}  # never split
    groups = tmp_path / "groups.csv"
    groups.write_text("path,group\n" + "\n".join(f"{n},{i // 2}" for i, n in enumerate(names[:-1])))
    assert main(["fit", str(tmp_path / "train"), "--out", str(tmp_path / "d2"), "--groups", str(groups)]) == 1


@pytest.mark.slow
def test_resume_and_report_refuse_another_detector(detector_dir, tmp_path, textile_paths, capsys):
    import novelty

    other = tmp_path / "other"
    det = novelty.load(detector_dir)
    det.alpha = 0.1
    det.save(other)  # the same fitted state, another artifact
    data = tmp_path / "data"
    _copy_in(data, textile_paths["global"][:40])
    out = tmp_path / "r.parquet"

    class StopError(Exception):
        pass

    from novelty.batch import score_inputs

    real = det.embedder.iter_batches

    def one_batch(*a, **k):
        it = real(*a, **k)
        yield next(it)
        raise StopError

    det.embedder.iter_batches = one_batch  # type: ignore[method-assign]  # an interrupted run of `other`
    with pytest.raises(StopError):
        score_inputs(det, [data], out, chunk_rows=8)
    assert (tmp_path / "r.parquet.parts").is_dir()
    assert main(["score", str(detector_dir), str(data), "--out", str(out)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "differs in" in err and "detector_id" in err and "--no-resume" in err and "Traceback" not in err
    assert main(["score", str(other), str(data), "--out", str(out)]) == EXIT_OK  # its own run resumes
    assert main(["report", str(out), "--detector", str(detector_dir), "--out", str(tmp_path / "x.html")]) == 1
    assert "is not the detector that scored" in capsys.readouterr().err
    assert main(["report", str(out), "--detector", str(other), "--out", str(tmp_path / "ok.html")]) == 0
    assert (
        "flagged: the rows the run found novel (p-value &lt; α = 0.1)" in (tmp_path / "ok.html").read_text()
    )


def test_every_subcommand_is_registered_one_way():
    """Each module of COMMAND_MODULES has COMMANDS, add_parsers(sub, epilog, fmt) and run(args); the parser's
    subcommands are exactly the names they declare, each owned by one module."""
    import importlib

    import novelty.cli as cli

    declared: list[str] = []
    for name in cli.COMMAND_MODULES:
        mod = importlib.import_module(name)
        assert callable(mod.add_parsers) and callable(mod.run), name
        declared += list(mod.COMMANDS)
    assert len(declared) == len(set(declared))
    sub = next(a for a in cli._build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == declared


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drift", "d", "r", "--level", "2"], "argument --level: must lie in (0, 1), got 2.0"),
        (["drift", "d", "r", "--clusters", "1"], "argument --clusters: must be an integer ≥ 2, got 1"),
        (["drift", "d", "r", "--seed", "-1"], "argument --seed: must be an integer ≥ 0, got -1"),
        (["fit", "x", "--out", "y", "--seed", "-2"], "argument --seed: must be an integer ≥ 0, got -2"),
        (["retrain", "a", "b", "--version", "0"], "argument --version: must be an integer ≥ 1, got 0"),
        (["export", "s", "--auto-min-prob", "nan"], "argument --auto-min-prob: must lie in [0, 1], got nan"),
    ],
)
def test_numbers_are_checked_by_the_common_argument_types(args, message, capsys):
    assert main(args) == EXIT_USAGE
    assert message in capsys.readouterr().err
