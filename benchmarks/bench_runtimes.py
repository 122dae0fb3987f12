"""Runtimes side by side: `novelty score` end to end, the model alone against the machine's peak, decoding,
and accuracy against fp32 — every runtime beside the fp32 default and the naive baseline, in one process.

    python -m benchmarks.bench_runtimes [--n 1000] [--repeats 3] [--runtimes openvino,...] [--json out.json]

1. Machine peak: square matmuls (2048) in fp32 and bf16 with PyTorch on all threads, median GFLOP/s.
2. The model: FLOPs per image counted by ``torch.utils.flop_counter``; each runtime's model-only throughput on
   a preprocessed batch (median of repeats) → achieved GFLOP/s and share of the fp32 / bf16 peak.
3. Decoding + preprocessing in one thread, per image (768×576 street JPEGs): full decode + timm transform
   (naive), JPEG draft + timm transform (before this change), JPEG draft + the fused preprocessing (now).
4. End to end: ``novelty.batch.score_inputs`` (the whole ``novelty score`` job) on ``--n`` street JPEGs with a
   kNN detector fitted with each runtime on 200 of them (int8: quantised on those 200), and the naive loop of
   ``benchmarks/bench_batch.py`` in its own process (plain timm + PIL, batch 32); runs alternate. Each runtime
   runs as it ships (the next batch decoded, stacked and laid out in a thread), with no decode thread (one
   thing after the other, as before), and for ``--overlap`` runtimes with one compute thread.
5. Accuracy against fp32 PyTorch: embedding cosine on the street JPEGs; on the ``textile`` and ``street``
   scenarios of ``benchmarks/ood``, the detectors each runtime makes, judged by ``benchmarks/runtime_quality.py``
   (AUROC and false alarms at alpha = 0.05; int8 quantised on each scenario's fitting images). That script
   judges every scenario.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import novelty
from benchmarks.bench_batch import make_photos
from benchmarks.machine import cpu_flags, cpu_model
from novelty.batch import score_inputs
from novelty.images import load_image
from novelty.machine import has_bf16
from novelty.runtimes import CANDIDATES, RUNTIMES, why_not_here


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# --- 1. peak -------------------------------------------------------------------------------------------
def matmul_peak(repeats: int) -> dict[str, float]:
    """Square-matmul GFLOP/s in fp32 and, where the CPU computes bf16 natively, bf16 (elsewhere PyTorch emulates
    it at a fraction of a GFLOP/s and minutes per matmul: NaN, not a peak)."""
    n = 2048
    out = {"bf16": float("nan")}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name == "bf16" and not has_bf16():
            continue
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        t = median_time(lambda a=a, b=b: torch.mm(a, b), repeats=max(5, repeats), warmup=2)
        out[name] = 2 * n**3 / t / 1e9
    return out


# --- 2. the model ---------------------------------------------------------------------------------------
def model_gflop(emb: novelty.Embedder) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, *emb.data_config["input_size"]))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        emb.model(x)
    return counter.get_total_flops() / 1e9


def model_only(emb: novelty.Embedder, batch: torch.Tensor, repeats: int) -> float:
    t = median_time(lambda: emb.embed_tensor(batch), repeats=repeats, warmup=2)
    return batch.shape[0] / t


# --- 3. decoding ------------------------------------------------------------------------------------------
def decode_rates(emb: novelty.Embedder, paths: list[Path], repeats: int) -> dict[str, float]:
    from PIL import Image

    pre = emb.preprocess

    def naive() -> None:
        for p in paths:
            emb.transform(Image.open(p).convert("RGB"))

    def draft_transform() -> None:
        for p in paths:
            emb.transform(load_image(p, min_size=emb.min_size))

    def draft_fused() -> None:
        for p in paths:
            pre(load_image(p, min_size=emb.min_size))

    def decode_only() -> None:
        for p in paths:
            load_image(p, min_size=emb.min_size)

    out = {}
    with torch.inference_mode():
        for name, fn in (
            ("full decode + timm transform (naive)", naive),
            ("draft decode + timm transform (before)", draft_transform),
            ("draft decode + fused preprocessing (now)", draft_fused),
            ("draft decode alone", decode_only),
        ):
            out[name] = len(paths) / median_time(fn, repeats)
    return out


# --- 4. end to end ------------------------------------------------------------------------------------------
def naive_rate(work: Path, paths: list[Path], train: np.ndarray) -> float:
    (work / "paths.txt").write_text("\n".join(str(p) for p in paths))
    np.save(work / "train.npy", train)
    bench_batch = Path(__file__).with_name("bench_batch.py")
    env = {**os.environ, "NOVELTY_MALLOC_TUNING": "0"}
    cmd = [
        sys.executable,
        str(bench_batch),
        "--naive-child",
        str(work / "paths.txt"),
        str(work / "train.npy"),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(res.stdout.strip().splitlines()[-1])["rate"])


# --- 5. accuracy ---------------------------------------------------------------------------------------------
def scenario_accuracy(runtimes: list[str], size: str) -> dict[str, Any]:
    """The detectors each runtime makes on the textile and street scenarios, judged against fp32 (the rule and
    the numbers of :mod:`benchmarks.runtime_quality`, which judges every scenario)."""
    from benchmarks.ood.scenarios import build_scenarios
    from benchmarks.runtime_quality import runtime_quality

    with tempfile.TemporaryDirectory(prefix="bench-runtimes-emb-") as work:
        return runtime_quality(runtimes, build_scenarios(["textile", "street"], size=size), Path(work))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runtimes", default=",".join([*(n for n in RUNTIMES if n != "torch"), *CANDIDATES]))
    ap.add_argument("--accuracy-size", default="full", choices=("small", "full", "none"))
    ap.add_argument("--accuracy-runtimes", default=None, help="default: --runtimes")
    ap.add_argument("--overlap", default=None, help="runtimes also run with 1 thread + a decode thread")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ["NOVELTY_RUNTIME_CANDIDATES"] = "1"  # the runtimes measured and dropped are built here too
    runtimes = ["torch", *[r for r in args.runtimes.split(",") if r and r != "torch"]]
    for r in runtimes:
        if r not in RUNTIMES and r not in CANDIDATES:
            ap.error(
                f"unknown runtime {r!r}; registered: {', '.join(RUNTIMES)}, dropped: {', '.join(CANDIDATES)}"
            )
    not_here = {r: why for r in runtimes if (why := why_not_here(r, torch.device("cpu"))) is not None}
    for r, why in not_here.items():
        print(f"not measured: {r}: {why}", flush=True)
    runtimes = [r for r in runtimes if r not in not_here]
    report: dict[str, Any] = {
        "not_measured": not_here,
        "machine": {
            "cpu": cpu_model(),
            "cpu_flags": cpu_flags(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
    }
    print(json.dumps(report["machine"]), flush=True)
    paths = make_photos(args.n)

    peak = matmul_peak(args.repeats)
    report["peak_gflops"] = peak
    print(
        f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s (nan: not native)",
        flush=True,
    )

    base = novelty.Embedder(device="cpu")
    gflop = model_gflop(base)
    report["model_gflop_per_image"] = gflop
    report["decode_img_s"] = decode_rates(base, paths[:256], args.repeats)
    for k, v in report["decode_img_s"].items():
        print(f"decode: {k}: {v:.0f} img/s (1 thread)", flush=True)

    # detectors, one per runtime, fitted on the first 200 images (int8 quantised on them); and each engine
    # again with one compute thread while the next batch decodes in a thread on the other core
    dets = {r: novelty.NoveltyDetector(seed=0, runtime=r).fit(paths[:200]) for r in runtimes}
    for r in runtimes:  # the default decodes the next batch in a thread; one thing after the other, beside it
        emb = novelty.Embedder(device="cpu", runtime=r, decode_thread=False)
        dets[f"{r}, no decode thread"] = novelty.NoveltyDetector(seed=0, embedder=emb).fit(paths[:200])
    overlap = runtimes[1:] if args.overlap is None else [r for r in args.overlap.split(",") if r]
    for r in overlap:
        emb = novelty.Embedder(device="cpu", runtime=r, threads=1, decode_thread=True)
        dets[f"{r}, 1 thread + decode thread"] = novelty.NoveltyDetector(seed=0, embedder=emb).fit(
            paths[:200]
        )
    batch = base.preprocess.batch(
        [base.preprocess(load_image(p, min_size=base.min_size)) for p in paths[:32]]
    )
    models: dict[str, dict[str, float]] = {}
    for r in dets:
        rate = model_only(dets[r].embedder, batch, args.repeats)
        models[r] = {"img_s": rate, "gflops": rate * gflop}
        print(f"model only {r}: {rate:.1f} img/s = {rate * gflop:.0f} GFLOP/s", flush=True)
    # candidates measured on the model alone: PyTorch bf16 autocast, and torch.compile (inductor) in fp32
    bf16 = novelty.Embedder(device="cpu", precision="bf16")
    rate = model_only(bf16, batch, args.repeats)
    models["torch bf16 autocast (model only)"] = {"img_s": rate, "gflops": rate * gflop}
    print(f"model only torch bf16 autocast: {rate:.1f} img/s", flush=True)
    try:
        compiled = torch.compile(base.model)
        t = time.perf_counter()
        with torch.inference_mode():
            compiled(batch)
        compile_s = time.perf_counter() - t
        with torch.inference_mode():
            rate = batch.shape[0] / median_time(lambda: compiled(batch), args.repeats)
        models["torch.compile fp32 (model only)"] = {
            "img_s": rate,
            "gflops": rate * gflop,
            "compile_s": compile_s,
        }
        print(f"model only torch.compile: {rate:.1f} img/s (compiled in {compile_s:.0f} s)", flush=True)
    except Exception as e:  # no compiler on this machine, or inductor failed: recorded, not fatal
        report["torch_compile_error"] = f"{type(e).__name__}: {e}"[:500]
    report["model_only"] = models

    work = Path(tempfile.mkdtemp(prefix="bench-runtimes-"))
    rates: dict[str, list[float]] = {"naive": [], **{r: [] for r in dets}}
    old_pre = novelty.NoveltyDetector(seed=0).fit(paths[:200])  # fp32 with the per-image timm transform
    old_pre.embedder.preprocess.fast = None
    rates["torch, per-image timm transform"] = []
    train = dets["torch"].index_.vectors()
    for rep in range(args.repeats):
        rates["naive"].append(naive_rate(work, paths, train))
        for r, det in [*dets.items(), ("torch, per-image timm transform", old_pre)]:
            out = work / f"{r.replace(',', '').replace(' ', '_')}-{rep}.parquet"
            t = time.perf_counter()
            s = score_inputs(det, [str(paths[0].parent)], out, progress=False)
            rates[r].append(len(paths) / (time.perf_counter() - t))
            if s.n_inputs != len(paths) or s.n_errors:
                raise SystemExit(f"{r}: {s.n_inputs} inputs, {s.n_errors} errors")
        print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    report["end_to_end"] = {"rates": rates, "median": med}

    # embedding agreement on the street JPEGs
    sample = paths[len(paths) // 2 :][:300]
    ref = dets["torch"].embedder.embed(sample)
    cos = {}
    for r, det in [*dets.items(), ("torch, per-image timm transform", old_pre)]:
        c = (det.embedder.embed(sample) * ref).sum(axis=1)
        cos[r] = {"min": float(c.min()), "mean": float(c.mean())}
    report["street_cosine_vs_torch"] = cos
    shutil.rmtree(work, ignore_errors=True)

    if args.json:  # what is measured so far survives a failure in the accuracy part
        args.json.write_text(json.dumps(report, indent=2))
    if args.accuracy_size != "none":
        acc = runtimes if args.accuracy_runtimes is None else ["torch", *args.accuracy_runtimes.split(",")]
        report["accuracy"] = scenario_accuracy(acc, args.accuracy_size)

    print()
    print(
        f"| runtime | end to end img/s (median of {args.repeats}) | vs naive | vs torch fp32 | model only img/s "
        "| model GFLOP/s | of fp32 peak | of bf16 peak | street cosine to torch fp32, min / mean |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| naive timm + PIL (own process) | {med['naive']:.1f} | 1.00 | {med['naive'] / med['torch']:.2f} | | | | | |"
    )
    for r in rates:
        if r == "naive":
            continue
        m = models.get(r)
        cells = (
            ["", "", "", ""]
            if m is None
            else [
                f"{m['img_s']:.0f}",
                f"{m['gflops']:.0f}",
                f"{m['gflops'] / peak['fp32']:.0%}",
                f"{m['gflops'] / peak['bf16']:.0%}",
            ]
        )
        print(
            f"| {r} | {med[r]:.1f} | {med[r] / med['naive']:.2f} | {med[r] / med['torch']:.2f} | "
            + " | ".join(cells)
            + f" | {cos[r]['min']:.5f} / {cos[r]['mean']:.6f} |"
        )
    print()
    print(
        f"model alone: {gflop:.3f} GFLOP per image; matmul peak fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s"
    )
    print("| model | img/s | GFLOP/s | of fp32 peak | of bf16 peak |")
    print("|---|---:|---:|---:|---:|")
    for name, m in models.items():
        print(
            f"| {name} | {m['img_s']:.0f} | {m['gflops']:.0f} | {m['gflops'] / peak['fp32']:.0%} | "
            f"{m['gflops'] / peak['bf16']:.0%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
