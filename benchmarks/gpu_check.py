"""CUDA path check: the Embedder on a GPU gives the CPU's embeddings, and how fast each part of the path runs.

    python benchmarks/gpu_check.py IMAGE_DIR [--json out.json] [--repeats 3] [--require-gpu]

Made to finish in under 5 minutes on a lent GPU machine (256 JPEGs). Every part that needs CUDA (or FAISS
built with GPU support) is reported as skipped, with the reason, where it is missing — so the script runs
(and is tested) on a CPU-only machine too; ``--require-gpu`` exits 2 there instead.

Parts:
1. ``cpu_reference``: fp32 embeddings on the CPU (the reference), img/s.
2. ``cuda_precisions``: the Embedder on CUDA in fp32, bf16 and fp16 autocast (channels-last, uint8 batches
   sent from pinned memory with non-blocking copies and normalised on the GPU): end to end from files and
   model only; agreement with the CPU (min cosine, max |diff|, kNN-score change).
3. ``cuda_batch_sizes``: model-only img/s at batch 64 / 256 / 512 (fp16).
4. ``cuda_transfer``: a batch of 256 sent as float32 from pageable memory vs uint8 from pinned memory.
5. ``cuda_decode``: JPEGs decoded on the GPU (``torchvision.io.decode_jpeg(device="cuda")``), resized and
   cropped there, against the CPU decoding path: img/s, and cosine of the embeddings to the CPU pipeline's.
6. ``faiss_gpu``: exact kNN search on the GPU (``faiss.index_cpu_to_gpu``) against the CPU index.
7. ``cpu_runtimes``: model-only img/s of each installed CPU runtime (novelty.runtimes) on this host's CPU.
8. ``runtime_auto``: what ``runtime="auto"`` measures and chooses on CUDA (PyTorch: the only runtime there) and on
   this host's CPU (every installed runtime, with its CPU flags: bf16 engines need ``avx512_bf16``/``amx_bf16``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import novelty
from novelty.index import EmbeddingIndex
from novelty.runtimes import RUNTIMES, why_not_here


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls (CUDA synchronised around each) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def skipped(reason: str) -> dict[str, str]:
    return {"skipped": reason}


def cuda_missing() -> str | None:
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}, cuda build {torch.version.cuda or 'none'})"
    return None


def knn_scores(emb: np.ndarray, train_idx: np.ndarray, query_idx: np.ndarray) -> np.ndarray:
    idx = EmbeddingIndex().add(emb[train_idx])
    return idx.search(emb[query_idx], 5)[0][:, -1]


def agreement(
    emb: np.ndarray, ref: np.ndarray, ref_knn: np.ndarray, split: tuple[np.ndarray, np.ndarray]
) -> dict:
    cos = (emb * ref).sum(axis=1)
    knn = knn_scores(emb, *split)
    return {
        "min_cosine_vs_cpu": float(cos.min()),
        "max_abs_diff_vs_cpu": float(np.abs(emb - ref).max()),
        "knn_score_max_rel_diff": float(np.max(np.abs(knn - ref_knn) / np.maximum(ref_knn, 1e-12))),
        "unit_norm": bool(np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)),
    }


def cuda_precisions(paths, ref, ref_knn, split, repeats) -> list[dict] | dict:
    if (why := cuda_missing()) is not None:
        return skipped(why)
    rows = []
    for precision in ("fp32", "bf16", "fp16"):
        gpu = novelty.Embedder(device="cuda", precision=precision, num_workers=8, batch_size=64)
        gpu.embed(paths[:64])  # warm-up: cuDNN autotuning, worker start
        t_files, emb = timed(lambda gpu=gpu: gpu.embed(paths), repeats)
        batch = torch.randn(256, 3, *gpu.data_config["input_size"][1:], device="cuda")
        gpu.embed_tensor(batch)
        t_model, _ = timed(lambda gpu=gpu, b=batch: gpu.embed_tensor(b), repeats)
        row = {
            "precision": precision,
            "files_img_s": len(paths) / t_files,
            "model_only_img_s": 256 / t_model,
            **agreement(np.asarray(emb), ref, ref_knn, split),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def cuda_batch_sizes(repeats: int) -> list[dict] | dict:
    if (why := cuda_missing()) is not None:
        return skipped(why)
    gpu = novelty.Embedder(device="cuda", precision="fp16")
    rows = []
    for bs in (64, 256, 512):
        x = torch.randn(bs, 3, *gpu.data_config["input_size"][1:], device="cuda")
        gpu.embed_tensor(x)
        t, _ = timed(lambda x=x: gpu.embed_tensor(x), repeats)
        rows.append({"batch_size": bs, "model_only_img_s": bs / t})
    return rows


def cuda_transfer(repeats: int) -> dict:
    if (why := cuda_missing()) is not None:
        return skipped(why)
    f32 = torch.rand(256, 3, 224, 224)
    u8 = torch.randint(0, 256, (256, 224, 224, 3), dtype=torch.uint8).pin_memory()
    t_f32, _ = timed(lambda: f32.to("cuda"), repeats)
    t_u8, _ = timed(lambda: u8.to("cuda", non_blocking=True).permute(0, 3, 1, 2).float(), repeats)
    return {"float32_pageable_ms": 1e3 * t_f32, "uint8_pinned_non_blocking_ms": 1e3 * t_u8}


def cuda_decode(paths: list[Path], cpu: novelty.Embedder, repeats: int) -> dict:
    if (why := cuda_missing()) is not None:
        return skipped(why)
    from torchvision.io import ImageReadMode, decode_jpeg

    pre = cpu.preprocess.fast
    if pre is None:
        return skipped("the backbone's transform is not resize + centre crop + normalise")
    gpu = novelty.Embedder(device="cuda", batch_size=64)
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    mean = pre["mean"].to("cuda").reshape(1, 3, 1, 1)
    std = pre["std"].to("cuda").reshape(1, 3, 1, 1)
    ch, cw = pre["crop"]
    mode = "bicubic" if "BICUBIC" in str(pre["resample"]) else "bilinear"

    def prepare(img: torch.Tensor) -> torch.Tensor:  # (3, H, W) uint8 on the GPU → (3, ch, cw) float
        h, w = img.shape[-2:]
        s = pre["size"] / min(h, w)
        nh, nw = (
            (pre["size"], int(pre["size"] * w / h)) if h <= w else (int(pre["size"] * h / w), pre["size"])
        )
        x = F.interpolate(img[None].float(), size=(nh, nw), mode=mode, antialias=s < 1, align_corners=False)
        top, left = int(round((nh - ch) / 2.0)), int(round((nw - cw) / 2.0))
        return x[0, :, top : top + ch, left : left + cw].clamp(0, 255)

    def run() -> np.ndarray:
        out = []
        for s in range(0, len(data), 64):
            imgs = decode_jpeg(data[s : s + 64], mode=ImageReadMode.RGB, device="cuda")
            x = torch.stack([prepare(i) for i in imgs]) / 255.0
            out.append(gpu.embed_tensor(((x - mean) / std).contiguous(memory_format=torch.channels_last)))
        return np.concatenate(out)

    run()
    t_gpu, emb = timed(run, repeats)
    t_cpu, ref = timed(lambda: gpu.embed(paths), repeats)  # CPU decoding (8 workers), same GPU model
    cos = (emb * ref).sum(axis=1)
    return {
        "gpu_decode_img_s": len(paths) / t_gpu,
        "cpu_decode_img_s": len(paths) / t_cpu,
        "min_cosine_vs_cpu_decode": float(cos.min()),
        "mean_cosine_vs_cpu_decode": float(cos.mean()),
    }


def faiss_gpu(repeats: int) -> dict:
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return skipped("faiss is built without GPU support (faiss-cpu); install a GPU build of faiss")
    if faiss.get_num_gpus() < 1:
        return skipped("faiss sees no GPU")
    rng = np.random.default_rng(0)
    base = rng.standard_normal((200_000, 1280)).astype(np.float32)
    faiss.normalize_L2(base)
    q = base[:4000] + 0.01 * rng.standard_normal((4000, 1280)).astype(np.float32)
    cpu_index = faiss.IndexFlatL2(1280)
    cpu_index.add(base)
    gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu_index)
    t_cpu, (d_cpu, i_cpu) = timed(lambda: cpu_index.search(q, 10), 1)
    t_gpu, (d_gpu, i_gpu) = timed(lambda: gpu_index.search(q, 10), repeats)
    return {
        "n": 200_000,
        "queries": 4000,
        "cpu_queries_s": 4000 / t_cpu,
        "gpu_queries_s": 4000 / t_gpu,
        "ids_agree": float(np.mean(i_cpu == i_gpu)),
        "max_distance_diff": float(np.abs(d_cpu - d_gpu).max()),
    }


def cpu_runtimes(paths: list[Path], ref: np.ndarray, repeats: int) -> list[dict]:
    rows = []
    cpu = novelty.Embedder(device="cpu")
    batch = cpu.preprocess.batch(
        [cpu.preprocess(novelty.load_image(p, min_size=cpu.min_size)) for p in paths[:32]]
    )
    for name, info in RUNTIMES.items():
        if info.module is not None and importlib.util.find_spec(info.module) is None:
            rows.append(
                {
                    "runtime": name,
                    **skipped(f"{info.module} not installed: pip install 'novelty[{info.extra}]'"),
                }
            )
            continue
        if (why := why_not_here(name, torch.device("cpu"))) is not None:
            rows.append({"runtime": name, **skipped(why)})
            continue
        emb = novelty.Embedder(device="cpu", runtime=name)
        emb.calibrate_runtime(paths[: min(len(paths), 128)])
        emb.embed_tensor(batch)
        t, _ = timed(lambda emb=emb: emb.embed_tensor(batch), repeats)
        cos = (emb.embed(paths[:64]) * ref[:64]).sum(axis=1)
        rows.append({"runtime": name, "model_only_img_s": 32 / t, "min_cosine_vs_torch": float(cos.min())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def runtime_auto() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for device in ("cuda", "cpu"):
        if device == "cuda" and cuda_missing():
            out[device] = skipped(str(cuda_missing()))
            continue
        emb = novelty.Embedder(device=device, runtime="auto")
        out[device] = emb.runtime_choice.to_meta() if emb.runtime_choice is not None else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--require-gpu", action="store_true", help="exit 2 when there is no CUDA device")
    args = ap.parse_args(argv)
    if args.require_gpu and cuda_missing():
        print(f"{cuda_missing()}: nothing to check", file=sys.stderr)
        return 2
    paths = sorted(args.images.glob("*.jpg"))
    if len(paths) < 8:
        print(f"{args.images}: need at least 8 JPEGs, found {len(paths)}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    n = len(paths)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "n_images": n,
    }
    print(f"{n} images; {report['device'] or 'no GPU'}; torch {torch.__version__}", flush=True)

    cpu = novelty.Embedder(device="cpu", num_workers=min(8, max(0, torch.get_num_threads() - 2)))
    t_cpu, ref = timed(lambda: cpu.embed(paths), 1)
    ref = np.asarray(ref)
    report["cpu_reference"] = {"img_s": n / t_cpu}
    nominal = np.array([not p.name.startswith("g_") for p in paths])
    train_idx = np.flatnonzero(nominal)[: max(5, min(128, n // 2))]
    split = (train_idx, np.setdiff1d(np.arange(n), train_idx))
    ref_knn = knn_scores(ref, *split)

    parts: list[tuple[str, Callable[[], Any]]] = [
        ("cuda_precisions", lambda: cuda_precisions(paths, ref, ref_knn, split, args.repeats)),
        ("cuda_batch_sizes", lambda: cuda_batch_sizes(args.repeats)),
        ("cuda_transfer", lambda: cuda_transfer(args.repeats)),
        ("cuda_decode", lambda: cuda_decode(paths, cpu, args.repeats)),
        ("faiss_gpu", lambda: faiss_gpu(args.repeats)),
        ("cpu_runtimes", lambda: cpu_runtimes(paths, ref, args.repeats)),
        ("runtime_auto", runtime_auto),
    ]
    for name, part in parts:
        t = time.perf_counter()
        try:
            report[name] = part()
        except Exception as e:  # one broken part must not lose the others' numbers on a lent machine
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name}: {json.dumps(report[name])[:300]} ({time.perf_counter() - t:.1f} s)", flush=True)
    report["seconds"] = time.perf_counter() - t0
    print(f"done in {report['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
