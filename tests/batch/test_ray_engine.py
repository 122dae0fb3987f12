"""The Ray engine on a local Ray instance (2 CPUs): same rows as the local engine, a killed worker, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray", reason="the ray extra is not installed")

import novelty
from benchmarks.ray_engine import workers as ray_workers
from novelty.batch import score_inputs
from novelty.batch.ray_engine import score_inputs_ray
from novelty.batch.results import read_results
from novelty.errors import InvalidInputError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory, embedder, textile_paths, textile_embeddings) -> Path:
    det = novelty.NoveltyDetector(embedder=embedder)
    det.fit_embeddings(textile_embeddings["nominal"][:-20])
    out = tmp_path_factory.mktemp("ray-det") / "det"
    det.save(out)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, textile_paths) -> Path:
    d = tmp_path_factory.mktemp("ray-inputs")
    for p in textile_paths["nominal"][-20:] + textile_paths["local"][:10] + textile_paths["global"][:6]:
        (d / f"{p.parent.name}-{p.name}").symlink_to(p)
    (d / "truncated.png").write_bytes(textile_paths["nominal"][0].read_bytes()[:300])
    (d / "notes.txt").write_text("not an image")
    return d


def same_rows(a: list[dict], b: list[dict], *, rel: float = 0.0) -> None:
    """Every row and every value equal (floats within ``rel`` when the two runs batched images differently)."""
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            va, vb = ra[k], rb[k]
            if isinstance(va, float) and math.isnan(va):
                assert isinstance(vb, float) and math.isnan(vb), (ra["key"], k)
            elif isinstance(va, float) and rel:
                assert va == pytest.approx(vb, rel=rel, abs=1e-9), (ra["key"], k, va, vb)
            elif k == "neighbor_distances" and rel:
                assert json.loads(va) == pytest.approx(json.loads(vb), rel=rel, abs=1e-6), (ra["key"], k)
            else:
                assert va == vb, (ra["key"], k, va, vb)


def test_ray_rows_equal_local_rows_and_survive_a_killed_worker(detector_dir, inputs, tmp_path) -> None:
    det = novelty.NoveltyDetector.load(detector_dir, device="cpu", num_workers=0)
    det.embedder.batch_size = 4  # the Ray run below: blocks of one batch of 4, so that there are many
    # Ray gives each 1-CPU actor one thread; float32 reductions depend on the thread count, so the local
    # reference runs with one thread too: then every value is bit for bit the same
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = score_inputs(det, [inputs], tmp_path / "local.parquet")
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ray.parquet"
    killed: list[int] = []

    def kill_one_worker() -> None:
        parts = out.with_name(out.name + ".parts")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if parts.is_dir() and any(parts.glob("part-*.jsonl")):
                for pid in ray_workers():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.2)

    t = threading.Thread(target=kill_one_worker, daemon=True)
    t.start()
    summary = score_inputs_ray(
        detector_dir,
        [inputs],
        out,
        block_size=3,  # rounded up to whole batches: 4
        batch_size=4,
        chunk_rows=3,
        actors=2,
        init_kwargs={"num_cpus": 2},
    )
    t.join(timeout=1)
    assert killed, "no Ray worker was found to kill"
    rows, ref = read_results(summary.out), read_results(local.out)
    assert summary.n_inputs == local.n_inputs == 37  # notes.txt is not listed as an image
    same_rows(rows, ref)  # every input exactly once, every value as the local engine wrote it
    assert summary.n_errors == local.n_errors == 1  # truncated.png


def test_ray_resumes_an_interrupted_run(detector_dir, inputs, tmp_path) -> None:
    out = tmp_path / "r.jsonl"
    det = novelty.NoveltyDetector.load(detector_dir, device="cpu", num_workers=0)
    # an interrupted run: the local engine wrote some rows; the Ray engine continues the same run
    from novelty.batch.engine import open_run, score_items

    items, det_id, writer = open_run(det, [inputs], out, chunk_rows=4)
    with pytest.raises(KeyboardInterrupt), writer:
        for batch, rows in score_items(det, items[:12], det_id=det_id):
            writer.write(rows, stamps=[it.stamp for it in batch])
            raise KeyboardInterrupt
    summary = score_inputs_ray(
        detector_dir, [inputs], out, block_size=8, actors=1, init_kwargs={"num_cpus": 2}
    )
    assert 0 < summary.n_scored_now < summary.n_inputs == 37
    ref = score_inputs(det, [inputs], tmp_path / "ref.jsonl")
    # the interrupted run embedded its first images in a batch of 12, the reference in batches of 32
    same_rows(read_results(summary.out), read_results(ref.out), rel=1e-5)


def test_ray_engine_arguments(detector_dir, inputs, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="block_size"):
        score_inputs_ray(detector_dir, [inputs], tmp_path / "x.parquet", block_size=0)
    with pytest.raises(InvalidInputError, match="actors"):
        score_inputs_ray(detector_dir, [inputs], tmp_path / "x.parquet", actors=0)
    with pytest.raises(InvalidInputError, match="name the runtime"):
        score_inputs_ray(detector_dir, [inputs], tmp_path / "x.parquet", runtime="auto")


def test_cli_engine_ray(detector_dir, inputs, tmp_path, capsys) -> None:
    from novelty.cli import EXIT_PARTIAL, main

    out = tmp_path / "cli.jsonl"
    rc = main(
        ["score", str(detector_dir), str(inputs), "--out", str(out), "--engine", "ray", "--actors", "1"]
    )
    assert rc == EXIT_PARTIAL  # the truncated image has an error row
    assert "(Ray)" in capsys.readouterr().out
    rows = read_results(out)
    assert len(rows) == 37 and sum(1 for r in rows if r["error"]) == 1
