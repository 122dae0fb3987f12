"""Results files: round trips of every format, resume after a crash, dedupe, ordering, a real kill -9."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from novelty.batch.results import (
    MissingResultsError,
    ResultsDependencyError,
    ResultsFormatError,
    ResultsLockedError,
    ResultsReadError,
    ResultWriter,
    ResumeMismatchError,
    read_results,
)
from novelty.batch.schema import ResultSchema
from novelty.errors import InvalidInputError, NoveltyError

FORMATS = [".parquet", ".csv", ".jsonl"]
REPO = Path(__file__).resolve().parents[2]
# subprocesses import novelty.batch.results without novelty/__init__ (which imports torch): they start in ~0.2 s
STUB_IMPORT = textwrap.dedent(
    """
    import sys, time, types
    pkg = types.ModuleType("novelty")
    pkg.__path__ = [sys.argv[1] + "/novelty"]
    sys.modules["novelty"] = pkg
    from novelty.batch.results import ResultWriter
    from novelty.batch.schema import ResultSchema
    """
)
NASTY_KEYS = [
    "plain.jpg",
    "comma, in name.jpg",
    'quote "in" name.jpg',
    "new\nline.jpg",
    "carriage\rreturn.jpg",
    "crlf\r\n.jpg",
    "été/画像/🙂.png",
    "archive.zip::inner/a,b;c.jpg",
    " leading and trailing space ",
    "tab\tand\\backslash",
]


def canon(rows: list[dict]) -> list[str]:
    """Rows as comparable strings: NaN equals NaN, types matter (1 != 1.0 != True), column order matters."""

    def typed(v):
        return [type(v).__name__, "NaN" if isinstance(v, float) and math.isnan(v) else v]

    return [json.dumps([[k, typed(v)] for k, v in r.items()], allow_nan=True) for r in rows]


def make_row(i: int, key: str | None = None) -> dict:
    bad = i % 4 == 3
    return {
        "key": key if key is not None else f"img/{i:04d}.jpg",
        "path": f"/data/img/{i:04d}.jpg",
        "member": "",
        "bytes": 1000 + i,
        "width": -1 if bad else 64 + i,
        "height": -1 if bad else 48,
        "novelty": math.nan if bad else i / 7,
        "p_value": math.nan if bad else 1 / (i + 2),
        "is_novel": (not bad) and i % 2 == 0,
        "score": math.nan if bad else i * 0.25,
        "score_knn": math.nan if bad else float(i),
        "p_value_knn": math.nan if bad else 0.5,
        "neighbors": json.dumps([f"train/{i}", 'train/é,"x"'], ensure_ascii=False),
        "neighbor_distances": json.dumps([0.125, 1.5]),
        "error": 'corrupt: truncated, bad "data"\nline 2' if bad else "",
    }


def expected_rows(n: int) -> list[dict]:
    return [make_row(i) for i in range(n)]


# the columns of make_row, in its order, with their kinds: stated, never guessed from values
ROW_SCHEMA = ResultSchema(
    [("key", "str"), ("path", "str"), ("member", "str"), ("bytes", "int"), ("width", "int"), ("height", "int"),
     ("novelty", "float"), ("p_value", "float"), ("is_novel", "bool"), ("score", "float"), ("score_knn", "float"),
     ("p_value_knn", "float"), ("neighbors", "str"), ("neighbor_distances", "str"), ("error", "str")]
)  # fmt: skip


def schema(*columns: tuple[str, str]) -> ResultSchema:
    return ResultSchema([("key", "str"), *columns])


# --- round trips ------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_every_format(tmp_path, suffix):
    rows = []
    for i, key in enumerate(NASTY_KEYS):
        r = make_row(i, key)
        r["score"] = (
            [math.inf, -math.inf, 0.0, -0.0, 1e-300, 1e300, 0.1 + 0.2][i % 7] if i % 4 != 3 else r["score"]
        )
        r["prediction"] = ["ok", "", "1", 'défaut, "x"'][i % 4]
        r["probability"] = np.float32(0.5) if i % 2 else 0.25  # numpy scalars become floats
        r["trusted"] = np.bool_(i % 3 == 0)
        r["extra_count"] = np.int64(i)
        rows.append(r)
    out = tmp_path / f"results{suffix}"
    extra = [("prediction", "str"), ("probability", "float"), ("trusted", "bool"), ("extra_count", "int")]
    full = ResultSchema([*ROW_SCHEMA, *extra])
    with ResultWriter(out, chunk_rows=3, schema=full) as w:
        w.write(rows)
        assert w.finalize(expected_keys=NASTY_KEYS) == out
    assert out.is_file() and not (tmp_path / f"results{suffix}.parts").exists()
    assert sorted(os.listdir(tmp_path)) == [out.name]
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # like any file the user writes, not 0600
    back = read_results(out, schema=full)  # extra_count: only the schema says it is an int
    want = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()} for r in rows]
    assert canon(back) == canon(want)
    assert [type(back[0][c]) for c in ("bytes", "is_novel", "trusted", "novelty", "key")] == [
        int,
        bool,
        bool,
        float,
        str,
    ]
    if suffix == ".jsonl":  # strict JSON: no NaN/Infinity tokens
        for line in out.read_text(encoding="utf-8").splitlines():
            json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


@pytest.mark.parametrize("suffix", FORMATS)
def test_missing_columns_are_filled_alike(tmp_path, suffix):
    """A column some rows lack: NaN for floats, "" for text, None for ints and bools, in every format."""
    out = tmp_path / f"r{suffix}"
    cols = [("score", "float"), ("probability", "float"), ("prediction", "str"), ("trusted", "bool")]
    with ResultWriter(out, chunk_rows=1, schema=schema(*cols, ("width", "int"), ("novelty", "float"))) as w:
        w.write([{"key": "a", "score": 1.5}])
        w.write(
            [{"key": "b", "score": 2.0, "probability": 0.5, "prediction": "x", "trusted": True, "width": 3}]
        )
        w.write([{"key": "c", "score": 1, "novelty": math.nan}])  # an int in a float column is a float
    filled = {"probability": math.nan, "prediction": "", "trusted": None, "width": None, "novelty": math.nan}
    assert canon(read_results(out)) == canon(
        [
            {"key": "a", "score": 1.5, **filled},
            {"key": "b", "score": 2.0, "probability": 0.5, "prediction": "x", "trusted": True, "width": 3,
             "novelty": math.nan},
            {"key": "c", "score": 1.0, **filled},
        ]
    )  # fmt: skip


@pytest.mark.parametrize("suffix", FORMATS)
def test_undecodable_file_names(tmp_path, suffix):
    key = os.fsdecode(b"bad\xff\xfename.jpg")  # a Linux file name that is not UTF-8 (lone surrogates)
    out = tmp_path / f"r{suffix}"
    w = ResultWriter(out, chunk_rows=1, schema=schema(("path", "str"), ("score", "float")))
    w.write([{"key": key, "path": key, "score": 1.0}, {"key": "ok", "path": "ok", "score": 2.0}])
    w.close()
    assert ResultWriter(out).done_keys() == {key, "ok"}  # exact in the parts (resume matches it)
    ResultWriter(out).finalize(expected_keys=[key, "ok"])
    back = read_results(out)
    if suffix == ".parquet":  # parquet strings are UTF-8: escaped
        assert back[0]["key"] == "bad\\xff\\xfename.jpg"
    else:
        assert back[0]["key"] == key and back[0]["path"] == key


def test_csv_is_plain_rfc4180(tmp_path):
    out = tmp_path / "r.csv"
    with ResultWriter(out, schema=schema(("is_novel", "bool"), ("score", "float"), ("width", "int"))) as w:
        w.write([{"key": "a,b", "is_novel": True, "score": math.nan, "width": 4}])
    assert out.read_bytes() == b'key,is_novel,score,width\r\n"a,b",true,,4\r\n'


def test_empty_results(tmp_path):
    for suffix in FORMATS:
        out = tmp_path / f"empty{suffix}"
        ResultWriter(out).finalize(expected_keys=[])
        assert read_results(out) == []


# --- resume -----------------------------------------------------------------------------------------
def test_resume_after_crash_skips_done_and_ignores_stray_temp(tmp_path):
    out = tmp_path / "results.parquet"
    meta = {"detector": "abc123", "inputs_sha256": "f00"}
    rows = expected_rows(50)
    keys = [r["key"] for r in rows]
    w = ResultWriter(out, chunk_rows=10, run_meta=meta, schema=ROW_SCHEMA)
    w.write(rows[:35])  # 3 parts on disk, 5 rows only buffered
    assert w.done_keys() == set(keys[:30])
    parts = tmp_path / "results.parquet.parts"
    (parts / ".tmp-killed-mid-write").write_bytes(b'{"key": "img/0049.jpg", "sco')  # what a kill -9 leaves
    del w  # the "crash": no flush, no finalize
    gc.collect()

    w2 = ResultWriter(out, chunk_rows=10, run_meta=meta)
    assert w2.done_keys() == set(keys[:30])  # the buffered rows are lost and will be redone
    assert not (parts / ".tmp-killed-mid-write").exists()
    w2.write(r for r in rows if r["key"] not in w2.done_keys())
    w2.finalize(expected_keys=keys)
    assert canon(read_results(out)) == canon(rows)
    assert os.listdir(tmp_path) == ["results.parquet"]


def test_duplicates_across_parts_keep_the_last(tmp_path):
    out = tmp_path / "r.jsonl"
    w = ResultWriter(out, chunk_rows=2, schema=schema(("score", "float")))
    w.write([{"key": "a", "score": 1.0}, {"key": "b", "score": 1.0}])
    w.write([{"key": "a", "score": 2.0}])
    w.close()
    w = ResultWriter(out, chunk_rows=2)
    w.write([{"key": "b", "score": 3.0}, {"key": "c", "score": 3.0}, {"key": "a", "score": 4.0}])
    w.finalize()
    assert read_results(out) == [
        {"key": "a", "score": 4.0},
        {"key": "b", "score": 3.0},
        {"key": "c", "score": 3.0},
    ]


def test_expected_keys_order_missing_and_extra(tmp_path, caplog):
    out = tmp_path / "r.csv"
    w = ResultWriter(out, chunk_rows=2, schema=schema(("score", "float")))
    w.write({"key": k, "score": float(i)} for i, k in enumerate(["b", "a", "z", "c"]))
    with pytest.raises(MissingResultsError) as e:
        w.finalize(expected_keys=["c", "a", "b", "d", "e"])
    assert e.value.missing == ["d", "e"] and "'d', 'e'" in str(e.value) and "2 of 5" in str(e.value)
    assert isinstance(e.value, NoveltyError)
    assert (tmp_path / "r.csv.parts").is_dir() and not out.exists()  # the parts are kept for the resume
    w.write([{"key": "e", "score": 5.0}, {"key": "d", "score": 4.0}])
    with caplog.at_level(logging.WARNING, logger="novelty.batch.results"):
        w.finalize(expected_keys=["c", "a", "b", "d", "e"])
    assert [r["key"] for r in read_results(out)] == ["c", "a", "b", "d", "e"]  # "z" is not an input
    assert "dropping 1 result rows" in caplog.text
    with pytest.raises(InvalidInputError, match="duplicates"):
        ResultWriter(out).finalize(expected_keys=["a", "a"])


def test_run_meta_mismatch_and_no_resume(tmp_path):
    out = tmp_path / "r.jsonl"
    with (
        pytest.raises(ValueError),
        ResultWriter(out, chunk_rows=1, run_meta={"detector": "A", "inputs": "x"}) as w,
    ):
        w.write([{"key": "k1"}])
        raise ValueError("interrupted")
    with pytest.raises(ResumeMismatchError, match=r"differs in detector.*--no-resume.*different --out"):
        ResultWriter(out, run_meta={"detector": "B", "inputs": "x"})
    assert ResultWriter(out, run_meta={"detector": "A", "inputs": "x"}).done_keys() == {"k1"}
    w = ResultWriter(out, resume=False, run_meta={"detector": "B", "inputs": "x"})
    assert w.done_keys() == set()
    assert sorted(os.listdir(tmp_path / "r.jsonl.parts")) == [".lock", "meta.json"]
    w.close()
    assert ResultWriter(out, run_meta={"detector": "B", "inputs": "x"}).done_keys() == set()


def test_damaged_part_is_dropped_and_redone(tmp_path, caplog):
    out = tmp_path / "r.jsonl"
    w = ResultWriter(out, chunk_rows=2)
    w.write([{"key": k} for k in "abcdef"])
    w.close()
    part2 = tmp_path / "r.jsonl.parts" / "part-000002.jsonl"
    part2.write_bytes(part2.read_bytes()[:-7])  # impossible with atomic renames, but a disk can do it
    with caplog.at_level(logging.WARNING, logger="novelty.batch.results"):
        w = ResultWriter(out, chunk_rows=2)
    assert "damaged result part" in caplog.text
    assert w.done_keys() == set("abef")
    w.write([{"key": "c"}, {"key": "d"}])
    assert (tmp_path / "r.jsonl.parts" / "part-000004.jsonl").is_file()  # never reuses a damaged number
    w.finalize(expected_keys=list("abcdef"))
    assert [r["key"] for r in read_results(out)] == list("abcdef")


def test_kill_during_finalize_is_recovered(tmp_path):
    """Killed after the final file was in place but before the parts were removed, or while removing them."""
    out = tmp_path / "r.parquet"
    rows = expected_rows(9)
    w = ResultWriter(out, chunk_rows=4, schema=ROW_SCHEMA)
    w.write(rows)
    w.close()
    parts = tmp_path / "r.parquet.parts"
    backup = tmp_path / "backup"
    os.rename(parts, backup)
    import shutil

    shutil.copytree(backup, parts)
    ResultWriter(out).finalize()
    os.rename(backup, parts)  # as if the kill came just before the parts were renamed away
    (tmp_path / ".r.parquet.parts.trash-12345").mkdir()  # as if it came while deleting them
    (tmp_path / ".r.parquet.parts.trash-12345" / "part-000001.jsonl").write_text("{}")
    w = ResultWriter(out)
    assert w.done_keys() == {r["key"] for r in rows}
    w.finalize(expected_keys=[r["key"] for r in rows])
    assert canon(read_results(out)) == canon(rows)
    assert os.listdir(tmp_path) == ["r.parquet"]


def test_context_manager(tmp_path):
    out = tmp_path / "r.jsonl"
    with ResultWriter(out, chunk_rows=100) as w:
        w.write([{"key": "a"}])
    assert read_results(out) == [{"key": "a"}]
    out2 = tmp_path / "r2.jsonl"
    with pytest.raises(KeyboardInterrupt), ResultWriter(out2, chunk_rows=100) as w:
        w.write([{"key": "a"}, {"key": "b"}])
        raise KeyboardInterrupt
    assert not out2.exists()
    assert ResultWriter(out2).done_keys() == {"a", "b"}  # buffered rows were saved for the resume


HOLD = "w = ResultWriter(sys.argv[2]); print('locked', flush=True); time.sleep(60)"


def test_one_writer_per_output(tmp_path):
    out = tmp_path / "r.csv"
    holder = subprocess.Popen(
        [sys.executable, "-c", STUB_IMPORT + HOLD, str(REPO), str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ResultsLockedError, match="another process"):
            ResultWriter(out)
    finally:
        holder.kill()
        holder.wait()
    w = ResultWriter(out, chunk_rows=10)  # a killed process holds no lock
    w.write([{"key": "a"}])
    w2 = ResultWriter(
        out
    )  # in one process the newer writer takes over (an old one may linger in a traceback)
    with pytest.raises(NoveltyError, match="took over"):
        w.write([{"key": "b"}])
    w2.finalize()
    assert read_results(out) == []  # w's buffered row was dropped, as by a crash


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(ResultsFormatError, match=r"\.parquet, \.csv, \.jsonl"):
        ResultWriter(tmp_path / "r.xlsx")
    with pytest.raises(ResultsFormatError, match="no suffix"):
        ResultWriter(tmp_path / "results")
    w = ResultWriter(tmp_path / "r.jsonl", schema=schema(("neighbors", "str"), ("width", "int")))
    with pytest.raises(InvalidInputError, match="key"):
        w.write([{"score": 1.0}])
    with pytest.raises(InvalidInputError, match="list is not a bool"):
        w.write([{"key": "a", "neighbors": ["x"]}])
    w.write([{"key": "a", "width": 3}])
    with pytest.raises(InvalidInputError, match="str value, the results schema says int"):
        w.write([{"key": "b", "width": "3"}])
    with pytest.raises(InvalidInputError, match="'height' is not in the results schema"):
        w.write([{"key": "b", "height": 3}])
    w.finalize()
    with pytest.raises(NoveltyError, match="already finalized"):
        w.write([{"key": "c"}])
    with pytest.raises(InvalidInputError, match="JSON"):
        ResultWriter(tmp_path / "x.jsonl", run_meta={"a": object()})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "a"}\n{"key": ')
    with pytest.raises(ResultsReadError, match=r"bad\.jsonl"):
        read_results(bad)
    with pytest.raises(ResultsReadError, match="no such"):
        read_results(tmp_path / "nope.csv")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    with pytest.raises(ResultsDependencyError, match=r"pip install 'novelty\[batch\]'"):
        ResultWriter(tmp_path / "r.parquet")


# --- a real kill -9 -----------------------------------------------------------------------------------
SCRIPT = STUB_IMPORT + textwrap.dedent(
    """
    import math
    out = sys.argv[2]

    N = 3000
    def row(i):
        bad = i % 11 == 5
        return {"key": f"batch/{i:05d}, é \\"q\\"\\n.jpg", "bytes": i * 3, "width": -1 if bad else i % 640,
                "novelty": math.nan if bad else i / 3.0, "is_novel": i % 3 == 0, "score_knn": i * 0.5,
                "error": "corrupt: x" if bad else ""}
    keys = [row(i)["key"] for i in range(N)]
    S = ResultSchema([("key", "str"), ("bytes", "int"), ("width", "int"), ("novelty", "float"),
                      ("is_novel", "bool"), ("score_knn", "float"), ("error", "str")])
    w = ResultWriter(out, chunk_rows=25, run_meta={"synthetic": N}, schema=S)
    done = w.done_keys()
    print("started", len(done), flush=True)
    todo = [i for i in range(N) if keys[i] not in done]
    for s in range(0, len(todo), 7):  # 7 rows per write, 25 per part: a kill also loses buffered rows
        w.write(row(i) for i in todo[s:s + 7])
        time.sleep(0.002)
    w.finalize(expected_keys=keys)
    print("finished", flush=True)
    """
)


def _start(script: Path, out: Path) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, str(script), str(REPO), str(out)], stdout=subprocess.PIPE, text=True, cwd=out.parent
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("started"), line
    return p


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume(tmp_path):
    pytest.importorskip("pyarrow")
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir()
    run_dir.mkdir()
    ref_out, out = ref_dir / "results.parquet", run_dir / "results.parquet"

    t0 = time.perf_counter()
    p = _start(script, ref_out)
    assert p.wait(timeout=60) == 0
    t_ref = time.perf_counter() - t0
    reference = read_results(ref_out)
    assert len(reference) == 3000 and len({r["key"] for r in reference}) == 3000

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    parts_dir = run_dir / "results.parquet.parts"
    done_at_kill, stray_at_kill = [], []
    for _ in range(3):
        p = _start(script, out)
        n_parts = len(list(parts_dir.glob("part-*.jsonl")))
        target = n_parts + rng.randint(2, 25)  # a random point: after 2..25 more parts (of 120), plus jitter
        while len(list(parts_dir.glob("part-*.jsonl"))) < target and p.poll() is None:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.01))
        assert p.poll() is None, f"the run finished before the kill (seed {seed})"
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
        stray_at_kill.append(len(list(parts_dir.glob(".tmp-*"))))
        w = ResultWriter(out, run_meta={"synthetic": 3000})
        done_at_kill.append(len(w.done_keys()))
        w.close()
        assert not out.exists()
    p = _start(script, out)
    assert p.wait(timeout=60) == 0
    assert not parts_dir.exists() and os.listdir(run_dir) == ["results.parquet"]

    final = read_results(out)
    print(f"\nkill -9 test (seed {seed}): rows done at each kill {done_at_kill}, "
          f"stray temp files {stray_at_kill}, "
          f"final {len(final)} rows; uninterrupted run {t_ref:.2f}s")  # fmt: skip
    assert done_at_kill == sorted(done_at_kill) and 0 < done_at_kill[-1] < 3000
    assert len(final) == 3000 and len({r["key"] for r in final}) == 3000
    assert canon(final) == canon(reference)  # same rows, same order: no duplicates, no gaps


def test_the_schema_is_stated_stored_and_checked_on_resume(tmp_path):
    out = tmp_path / "r.parquet"
    stated = schema(("score", "float"), ("n_faces", "int"), ("is_novel", "bool"))
    w = ResultWriter(out, schema=stated, chunk_rows=1)
    w.write([{"key": "a", "score": 1, "n_faces": None}], stamps=["file:10:123"])  # an int in a float column
    w.close()
    other = schema(("score", "float"), ("n_faces", "float"), ("is_novel", "bool"))
    with pytest.raises(ResumeMismatchError, match=r"other result columns.*n_faces \(int → float\)"):
        ResultWriter(out, schema=other)
    w = ResultWriter(out)  # no schema given: the stored one
    assert w.schema == stated and w.done_stamps() == {"a": "file:10:123"}
    w.write([{"key": "b", "score": 2.5}])
    w.finalize()
    import pyarrow.parquet as pq

    types = {f.name: str(f.type) for f in pq.read_schema(out)}
    # typed by the schema, not by the values: no value at all in n_faces / is_novel, yet int64 / bool
    assert types == {"key": "string", "score": "double", "n_faces": "int64", "is_novel": "bool"}
    assert canon(read_results(out)) == canon(
        [{"key": "a", "score": 1.0, "n_faces": None, "is_novel": None},
         {"key": "b", "score": 2.5, "n_faces": None, "is_novel": None}]
    )  # fmt: skip
