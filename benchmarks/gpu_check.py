"""CUDA path check: the Embedder on a GPU gives the CPU's embeddings, and how fast it runs.

Run on a machine with a CUDA GPU:  python benchmarks/gpu_check.py IMAGE_DIR [--json out.json]
It embeds the JPEGs of IMAGE_DIR on the CPU (fp32, the reference) and on CUDA in fp32, bf16 and fp16,
prints agreement (max |diff|, min cosine similarity, kNN-score agreement) and throughput (median of runs),
end to end from files and model-only on pre-decoded batches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import novelty
from novelty.index import EmbeddingIndex


def timed(fn, repeats: int) -> tuple[float, object]:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("images", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    paths = sorted(args.images.glob("*.jpg"))
    n = len(paths)
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "n_images": n}
    print(f"{n} images; {report['device']}; torch {torch.__version__}")

    cpu = novelty.Embedder(device="cpu", num_workers=8)
    t_cpu, ref = timed(lambda: cpu.embed(paths), 1)
    report["cpu_fp32_img_s"] = n / t_cpu
    ref = np.asarray(ref)
    nominal = np.array([not p.name.startswith("g_") for p in paths])
    train_idx = np.flatnonzero(nominal)[:128]
    query_idx = np.setdiff1d(np.arange(n), train_idx)

    def knn_scores(emb: np.ndarray) -> np.ndarray:
        idx = EmbeddingIndex().add(emb[train_idx])
        return idx.search(emb[query_idx], 5)[0][:, -1]

    ref_knn = knn_scores(ref)
    rows = []
    for precision in ("fp32", "bf16", "fp16"):
        gpu = novelty.Embedder(device="cuda", precision=precision, num_workers=8, batch_size=64)
        gpu.embed(paths[:64])  # warm-up: cuDNN autotuning, worker start
        t_files, emb = timed(lambda gpu=gpu: gpu.embed(paths), args.repeats)
        emb = np.asarray(emb)
        cos = (emb * ref).sum(axis=1)
        knn = knn_scores(emb)
        batch = torch.randn(256, 3, 224, 224)
        gpu.embed_tensor(batch)
        t_model, _ = timed(lambda gpu=gpu, batch=batch: gpu.embed_tensor(batch), args.repeats)
        row = {
            "precision": precision,
            "files_img_s": n / t_files,
            "model_only_img_s": 256 / t_model,
            "max_abs_diff_vs_cpu": float(np.abs(emb - ref).max()),
            "min_cosine_vs_cpu": float(cos.min()),
            "knn_score_max_rel_diff": float(np.max(np.abs(knn - ref_knn) / ref_knn)),
            "unit_norm": bool(np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)),
            "dtype": str(emb.dtype),
        }
        rows.append(row)
        print(json.dumps(row))
    report["cuda"] = rows
    print(f"cpu fp32 (this machine's CPU): {report['cpu_fp32_img_s']:.1f} img/s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
