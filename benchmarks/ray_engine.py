"""The Ray engine beside the local engine on the same 2,000 street JPEGs (768×576): same rows, throughput, a
worker killed mid-run, and the per-core rates of each stage for sizing a cluster.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.ray_engine --n 2000 --out benchmarks/results

1. local: ``score_inputs`` (decoding workers + 2 torch threads), then the Ray engine on a local Ray instance
   with 2 CPUs (2 actors, 1 CPU and 1 torch thread each), then the local engine again with 1 torch thread
   (what each Ray actor runs): the Ray rows must equal the 1-thread local rows value for value, and the
   2-thread local rows to float32 rounding (a float32 reduction's result depends on the thread count).
2. Ray again, with one actor process killed (SIGKILL) after the first finished block: every input once.
3. Per-core rates, one thread, in this process: decoding + preprocessing, the model, the kNN query.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import novelty
from benchmarks.bench_batch import make_photos
from novelty.batch import score_inputs
from novelty.batch.ray_engine import score_inputs_ray
from novelty.batch.results import read_results


def compare(a: list[dict], b: list[dict]) -> dict[str, Any]:
    """Rows equal? Exact on every non-float value; the largest relative difference of the floats."""
    assert [r["key"] for r in a] == [r["key"] for r in b], "different inputs or order"
    worst, exact_other = 0.0, True
    for ra, rb in zip(a, b, strict=True):
        for k, va in ra.items():
            vb = rb[k]
            if isinstance(va, float):
                if math.isnan(va) and math.isnan(vb):
                    continue
                worst = max(worst, abs(va - vb) / max(abs(vb), 1e-12))
            elif k != "neighbor_distances":
                exact_other &= va == vb
    return {"rows": len(a), "max_rel_float_diff": worst, "other_values_equal": bool(exact_other)}


def workers() -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "MapWorker" in cmd or "BlockScorer" in cmd:
                pids.append(int(p.name))
    return pids


def stage_rates(det: novelty.NoveltyDetector, paths: list[Path], n: int = 256) -> dict[str, float]:
    """Images per second per core, one thread and no decoding workers: the whole embedding pass, the model
    alone on the same batches, decoding + preprocessing (the difference), and the kNN score."""
    threads, workers_before = torch.get_num_threads(), det.embedder.num_workers
    torch.set_num_threads(1)
    det.embedder.num_workers = 0
    try:
        emb = det.embedder
        sample = paths[:n]
        t = time.perf_counter()
        x = emb.embed(sample, progress=False)
        total = time.perf_counter() - t
        batch = torch.randn(emb.batch_size, *emb.data_config["input_size"])
        emb.embed_tensor(batch)  # warm-up
        t = time.perf_counter()
        reps = max(1, n // emb.batch_size)
        for _ in range(reps):
            emb.embed_tensor(batch)
        model_s = (time.perf_counter() - t) * n / (reps * emb.batch_size)
        q = np.repeat(x, 4, axis=0)
        t = time.perf_counter()
        det.score_embeddings(q)
        index = q.shape[0] / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
        det.embedder.num_workers = workers_before
    return {
        "embedding_pass": n / total,
        "model": n / model_s,
        "decode_preprocess": n / max(1e-9, total - model_s),
        "index_score": index,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    paths = make_photos(args.n)
    work = Path(tempfile.mkdtemp(prefix="novelty-ray-bench-"))
    det = novelty.NoveltyDetector(scorers=("knn",))
    det.fit(paths[::10][:200])
    det.save(work / "det")
    det = novelty.NoveltyDetector.load(work / "det", device="cpu")
    inputs = work / "inputs.txt"
    inputs.write_text("\n".join(str(x) for x in paths) + "\n")
    res: dict[str, Any] = {"n": args.n, "block_size": args.block_size, "cpus": os.cpu_count()}

    t = time.perf_counter()
    local = score_inputs(det, [inputs], work / "local.parquet")
    res["local_2_threads_img_s"] = args.n / (time.perf_counter() - t)
    t = time.perf_counter()
    ray_run = score_inputs_ray(
        work / "det", [inputs], work / "ray.parquet", block_size=args.block_size, init_kwargs={"num_cpus": 2}
    )
    res["ray_img_s"] = args.n / (time.perf_counter() - t)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t = time.perf_counter()
    local1 = score_inputs(det, [inputs], work / "local1.parquet")
    res["local_1_thread_img_s"] = args.n / (time.perf_counter() - t)
    torch.set_num_threads(threads)
    rows_ray = read_results(ray_run.out)
    res["ray_vs_local_1_thread"] = compare(rows_ray, read_results(local1.out))
    res["ray_vs_local_2_threads"] = compare(rows_ray, read_results(local.out))

    out = work / "ray_killed.parquet"
    killed: list[int] = []

    def killer() -> None:
        parts = out.with_name(out.name + ".parts")
        while not killed:
            if parts.is_dir() and any(parts.glob("part-*.jsonl")):
                for pid in workers():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.2)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    t = time.perf_counter()
    killed_run = score_inputs_ray(
        work / "det",
        [inputs],
        out,
        block_size=args.block_size,
        chunk_rows=args.block_size,
        init_kwargs={"num_cpus": 2},
    )
    res["ray_killed_seconds"] = time.perf_counter() - t
    rows_k = read_results(killed_run.out)
    keys = [r["key"] for r in rows_k]
    res["ray_killed"] = {
        "workers_killed": len(killed),
        "rows": len(rows_k),
        "unique_keys": len(set(keys)),
        "equal_to_unkilled": compare(rows_k, rows_ray),
    }
    rates = [stage_rates(det, paths) for _ in range(3)]
    res["per_core_img_s"] = {k: statistics.median(r[k] for r in rates) for k in rates[0]}
    r = res["per_core_img_s"]
    per_core_e2e = 1.0 / (1.0 / r["embedding_pass"] + 1.0 / r["index_score"])
    need = 10_000_000 / (8 * 3600)
    res["sizing"] = {
        "per_core_end_to_end_img_s": per_core_e2e,
        "img_s_for_10M_in_8h": need,
        "cores_needed": need / per_core_e2e,
        "16_core_nodes_needed": math.ceil(need / per_core_e2e / 16),
    }
    text = json.dumps(res, indent=1)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ray_engine.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
