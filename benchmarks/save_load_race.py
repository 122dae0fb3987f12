"""Save/load race: can a load running during a save assemble one detector out of two artifacts?

One process saves two *different* detectors, A and B, alternately into the same directory as fast as it can;
this process loads that directory in a loop. Every loaded detector is compared, part by part (index
vectors, training ids, calibration scores, the knn-local state, p-values on fixed queries), with A and with
B: it must be entirely one of them. A load may also fail with a :class:`~novelty.errors.NoveltyError` (the
artifact changed while it was read); anything else — a mixed detector, a plain ``FileNotFoundError`` — is
a bug.

    .venv/bin/python benchmarks/save_load_race.py --seconds 60

A and B use the tiny timm architecture ``test_efficientnet`` with weights from a local file (so a load
costs milliseconds, not a backbone) and are fitted on random unit vectors: 240 vs 360 training embeddings.
Results: benchmarks/RESULTS.md ("Hardening").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

BACKBONE = "test_efficientnet"
N_TRAIN = {"A": 240, "B": 360}


def _weights(workdir: Path) -> Path:
    """A fixed weights file for the tiny backbone (its fingerprint must be the same in every process)."""
    import timm
    import torch
    from safetensors.torch import save_file

    path = workdir / "tiny.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        model = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _detector(name: str, weights: Path, dim: int) -> Any:
    import novelty

    rng = np.random.default_rng(len(name) + N_TRAIN[name])
    x = rng.normal(size=(N_TRAIN[name], dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    det = novelty.NoveltyDetector(
        BACKBONE, scorers=("knn", "knn-local"), weights=str(weights), device="cpu", seed=1
    )
    return det.fit_embeddings(x, ids=[f"{name}{i}" for i in range(len(x))])


def _digest(a: Any) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def signature(det: Any, queries: np.ndarray) -> dict[str, str]:
    """One digest per part of a detector: two detectors are the same only if every part is."""
    local = next(s for s in det.scorers_ if s.name == "knn-local")
    return {
        "n_train": str(det.index_.ntotal),
        "index": _digest(det.index_.vectors()),
        "train_ids": hashlib.sha256(json.dumps(det.train_ids_).encode()).hexdigest()[:16],
        "calibration": _digest(np.concatenate([det.calibrator_.raw_[k] for k in det.calibrator_.names_])),
        "knn-local": _digest(local.kth_distance_),
        "p_values": _digest(det.score_embeddings(queries).p_value),
    }


def _saver(refs: dict[str, str], target: str, stop: Any, counts: Any) -> None:
    import torch

    import novelty

    torch.set_num_threads(1)
    dets = {k: novelty.load(v, device="cpu") for k, v in refs.items()}
    i = 0
    while not stop.is_set():
        name = "AB"[i % 2]
        try:
            dets[name].save(target)
            counts["saves"] += 1
        except Exception as e:  # counted, not fatal: the race goes on
            counts[f"save failed: {type(e).__name__}"] = counts.get(f"save failed: {type(e).__name__}", 0) + 1
        i += 1


def race(seconds: float = 60.0, workdir: str | Path | None = None) -> dict[str, Any]:
    """Run the race for ``seconds``; returns the counts (whole A, whole B, NoveltyError kinds, anything else)."""
    import torch

    import novelty
    from novelty.errors import NoveltyError

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="novelty-race-", dir=workdir) as tmp:
        root = Path(tmp)
        weights = _weights(root)
        dim = novelty.Embedder(BACKBONE, weights=str(weights), device="cpu").dim
        queries = np.random.default_rng(7).normal(size=(16, dim)).astype(np.float32)
        refs, sigs = {}, {}
        for name in ("A", "B"):
            det = _detector(name, weights, dim)
            refs[name] = str(det.save(root / f"ref{name}"))
            sigs[name] = signature(novelty.load(refs[name], device="cpu"), queries)
        assert sigs["A"]["n_train"] != sigs["B"]["n_train"]
        target = root / "detector"
        novelty.load(refs["A"], device="cpu").save(target)

        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager:
            stop, save_counts = manager.Event(), manager.dict(saves=0)
            proc = ctx.Process(target=_saver, args=(refs, str(target), stop, save_counts))
            proc.start()
            while save_counts["saves"] < 2 and proc.is_alive():  # the saver is saving before we start
                time.sleep(0.05)
            counts: Counter[str] = Counter()
            mixed_examples: list[dict[str, str]] = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                try:
                    det = novelty.load(target, device="cpu")
                except NoveltyError as e:
                    counts[f"NoveltyError ({type(e).__name__})"] += 1
                    continue
                except Exception as e:
                    counts[f"other error ({type(e).__name__})"] += 1
                    continue
                sig = signature(det, queries)
                if sig == sigs["A"]:
                    counts["whole A"] += 1
                elif sig == sigs["B"]:
                    counts["whole B"] += 1
                else:
                    counts["mixed"] += 1
                    if len(mixed_examples) < 3:
                        mixed_examples.append(
                            {
                                k: "A" if v == sigs["A"][k] else "B" if v == sigs["B"][k] else "?"
                                for k, v in sig.items()
                            }
                        )
            elapsed = time.monotonic() - t0
            stop.set()
            proc.join(timeout=60)
            saves = dict(save_counts)
    loads = sum(counts.values())
    return {
        "seconds": round(elapsed, 1),
        "loads": loads,
        "saves": saves,
        "counts": {k: counts.get(k, 0) for k in ("whole A", "whole B", "mixed")} | dict(counts),
        "anything_else": sum(v for k, v in counts.items() if not k.startswith(("whole", "NoveltyError"))),
        "mixed_examples": mixed_examples,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to load (default 60)")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    args = ap.parse_args(argv)
    res = race(args.seconds)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if res["anything_else"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
