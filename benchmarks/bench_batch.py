"""End-to-end batch scoring throughput on real photos, against a naive baseline in the same process.

    python benchmarks/bench_batch.py [--n 1000] [--repeats 3]

Data: the street video of Debian's opencv-doc, every frame saved as a 768×576 JPEG (quality 90); frames are
reused with a horizontal flip to reach ``--n`` files. A detector (kNN) is fitted on 200 of them first.

- naive: plain timm + PIL, one image decoded at a time in the main process, batches of 32: ``Image.open``,
  ``convert("RGB")``, the model's own eval transform, forward, L2-normalise, then the same FAISS kNN score.
  It runs in a child process of this benchmark, as a plain script would: without the allocator tuning
  that ``novelty`` applies to its own process (``novelty.machine.tune_glibc_malloc``). It also runs in this process, after
  that tuning, to show what the rest of the pipeline is worth on its own ("naive, tuned allocator").
- novelty: ``novelty.batch.score_inputs`` — the whole ``novelty score`` job: input discovery, decoding in
  worker processes with JPEG draft mode, channels-last inference, kNN + calibration, results written to
  parquet in resumable chunks.
Reports median images/s of each and their ratio (runs alternate, so drifting machine load hits both).
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

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import novelty
from novelty.batch import score_inputs
from novelty.datasets.windshield import cache_dir, find_video
from novelty.weights import create_backbone


def make_photos(n: int) -> list[Path]:
    import cv2

    folder = cache_dir() / f"street-jpeg-{n}"
    files = sorted(folder.glob("*.jpg"))
    if len(files) == n:
        return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)  # a fresh machine has no cache yet
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".street-jpeg-"))
    cap = cv2.VideoCapture(str(find_video()))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    cap.release()
    for i in range(n):
        img = frames[i % len(frames)]
        if (i // len(frames)) % 2 == 1:
            img = img[:, ::-1]
        Image.fromarray(np.ascontiguousarray(img)).save(tmp / f"frame_{i:05d}.jpg", quality=90)
    os.replace(tmp, folder)
    return sorted(folder.glob("*.jpg"))


def naive(paths: list[Path], model: torch.nn.Module, transform, index: novelty.EmbeddingIndex) -> np.ndarray:
    scores = []
    with torch.inference_mode():
        for s in range(0, len(paths), 32):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[s : s + 32]])
            emb = F.normalize(model(batch), dim=1).numpy()
            scores.append(index.search(emb, 5)[0][:, -1])
    return np.concatenate(scores)


def naive_child(paths_file: Path, train_file: Path) -> None:
    """Entry point of the child process: the naive loop with an untouched allocator; prints img/s."""
    from timm.data import create_transform, resolve_model_data_config

    paths = [Path(p) for p in paths_file.read_text().splitlines()]
    bb = create_backbone()
    transform = create_transform(**resolve_model_data_config(bb.model), is_training=False)
    index = novelty.EmbeddingIndex().add(np.load(train_file))
    t = time.perf_counter()
    scores = naive(paths, bb.model, transform, index)
    rate = len(paths) / (time.perf_counter() - t)
    np.save(train_file.with_name("naive_scores.npy"), scores)
    print(json.dumps({"rate": rate}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--naive-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_child:
        naive_child(*args.naive_child)
        return 0
    paths = make_photos(args.n)
    print(
        f"{len(paths)} JPEGs of {Image.open(paths[0]).size}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    det = novelty.NoveltyDetector(seed=0).fit(paths[:200])
    # the same detector decoding every JPEG at full size (no draft mode): isolates what draft mode buys
    full = novelty.NoveltyDetector(seed=0, draft=False).fit(paths[:200])
    bb = create_backbone()  # a plain timm model with the same weights, default memory format
    from timm.data import create_transform, resolve_model_data_config

    transform = create_transform(**resolve_model_data_config(bb.model), is_training=False)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    rates: dict[str, list[float]] = {
        "naive": [],
        "naive, tuned allocator": [],
        "novelty": [],
        "novelty, draft off": [],
    }
    (work / "paths.txt").write_text("\n".join(str(p) for p in paths))
    np.save(work / "train.npy", full.index_.vectors())
    env = {**os.environ, "NOVELTY_MALLOC_TUNING": "0"}
    child = [sys.executable, __file__, "--naive-child", str(work / "paths.txt"), str(work / "train.npy")]
    agree: dict[str, float] = {}
    for r in range(args.repeats):
        t = time.perf_counter()
        ref = naive(paths, bb.model, transform, full.index_)  # full-size decode, like the naive loop
        rates["naive, tuned allocator"].append(len(paths) / (time.perf_counter() - t))
        res = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
        rates["naive"].append(json.loads(res.stdout.strip().splitlines()[-1])["rate"])
        out = work / f"run{r}.parquet"
        t = time.perf_counter()
        summary = score_inputs(det, [str(paths[0].parent)], out, progress=False)
        rates["novelty"].append(len(paths) / (time.perf_counter() - t))
        assert summary.n_inputs == len(paths) and summary.n_errors == 0
        out_full = work / f"full{r}.parquet"
        t = time.perf_counter()
        score_inputs(full, [str(paths[0].parent)], out_full, progress=False)
        rates["novelty, draft off"].append(len(paths) / (time.perf_counter() - t))
        if not agree:
            from novelty.batch.results import read_results

            for name, f in (("novelty", out), ("novelty, draft off", out_full)):
                rows = {row["key"]: row["score_knn"] for row in read_results(f)}
                ours = np.array([rows[str(p)] for p in paths])
                agree[name] = float(np.corrcoef(ours, ref)[0, 1])
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in rates.items()))
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["novelty"] / med["naive"]
    print(
        f"| pipeline | median img/s ({args.repeats} runs) | ratio to naive | kNN-score agreement with naive (r) |"
    )
    print("|---|---|---|---|")
    print(f"| naive timm + PIL, batch 32 (own process) | {med['naive']:.1f} | 1.00 | 1 |")
    agree["naive, tuned allocator"] = 1.0
    labels = {
        "naive, tuned allocator": "naive loop inside the novelty process (tuned allocator)",
        "novelty": "novelty score (end to end)",
        "novelty, draft off": "novelty score, JPEG draft mode off",
    }
    for name, label in labels.items():
        print(f"| {label} | {med[name]:.1f} | {med[name] / med['naive']:.2f} | {agree[name]:.5f} |")
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(
            json.dumps({"rates": rates, "median": med, "ratio": ratio, "agreement_r": agree})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
