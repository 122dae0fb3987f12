"""The thread policy with another CPU-bound process on the machine: ``novelty score`` end to end with today's
fixed thread count against ``threads="auto"`` (:mod:`novelty.threads`), on an idle machine and beside busy
processes, per runtime, runs alternating.

    python -m benchmarks.bench_threads [--n 1000] [--repeats 3] [--runtimes torch,openvino] [--busy 1]
                                       [--json out.json]

Each run scores ``--n`` street JPEGs (768×576, q90, those of ``benchmarks/bench_batch.py``) with a kNN detector
fitted on 200 of them; the ``auto`` policy starts afresh in every run, as a new process would. "busy" runs
``--busy`` processes of a pure-Python loop beside it (each takes one core). Reported: medians of img/s, the ratio
auto / fixed under each load, and the thread count the policy ended on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import novelty
from benchmarks.bench_batch import make_photos
from benchmarks.machine import cpu_flags, cpu_model
from novelty.batch import score_inputs
from novelty.machine import usable_cpus


def busy_processes(k: int) -> list[subprocess.Popen[bytes]]:
    """``k`` CPU-bound processes (a pure-Python loop each); the caller kills them."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runtimes", default="torch,openvino")
    ap.add_argument("--busy", type=int, default=1, help="CPU-bound processes beside the job in the busy runs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runtimes = [r for r in args.runtimes.split(",") if r]
    report: dict[str, Any] = {
        "machine": {
            "cpu": cpu_model(),
            "cpu_flags": cpu_flags(),
            "cpus_usable": usable_cpus(),
            "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "n": args.n,
        "busy_processes": args.busy,
    }
    print(json.dumps(report["machine"]), flush=True)
    paths = make_photos(args.n)
    dets: dict[tuple[str, str], novelty.NoveltyDetector] = {}
    for r in runtimes:
        for policy in ("fixed", "auto"):
            emb = novelty.Embedder(device="cpu", runtime=r, threads=None if policy == "fixed" else "auto")
            dets[(r, policy)] = novelty.NoveltyDetector(seed=0, embedder=emb).fit(paths[:200])
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    rates: dict[str, list[float]] = {}
    ended: dict[str, list[Any]] = {}
    try:
        for load in ("idle", "busy"):
            procs = busy_processes(args.busy) if load == "busy" else []
            time.sleep(1.0)
            try:
                for rep in range(args.repeats):
                    for (r, policy), det in dets.items():
                        key = f"{r} {policy} {load}"
                        det.embedder.threads_policy(fresh=True)
                        out = work / f"{r}-{policy}-{load}-{rep}.parquet"
                        t = time.perf_counter()
                        s = score_inputs(det, [str(paths[0].parent)], out, progress=False)
                        rates.setdefault(key, []).append(len(paths) / (time.perf_counter() - t))
                        if s.n_inputs != len(paths) or s.n_errors:
                            raise SystemExit(f"{key}: {s.n_inputs} inputs, {s.n_errors} errors")
                        pol = det.embedder.threads_policy()
                        ended.setdefault(key, []).append(None if pol is None else pol.state())
                        print(
                            f"{key} repeat {rep + 1}: {rates[key][-1]:.1f} img/s {ended[key][-1] or ''}",
                            flush=True,
                        )
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    report["rates"], report["median"], report["policy_state"] = rates, med, ended
    print()
    print(
        f"| runtime | load | fixed threads img/s | auto img/s | auto / fixed |  (medians of {args.repeats})"
    )
    print("|---|---|---:|---:|---:|")
    for r in runtimes:
        for load in ("idle", "busy"):
            f, a = med[f"{r} fixed {load}"], med[f"{r} auto {load}"]
            print(f"| {r} | {load} | {f:.1f} | {a:.1f} | {a / f:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
