"""Helpers of the hardening tests: small real images, a detector fitted in a second without an image pass, and a
selection file over images."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from novelty.fileio import sha256_file


def small_image(path: Path, seed: int = 0, size: tuple[int, int] = (24, 16)) -> Path:
    """A real PNG of random pixels (the suffix decides the format: .png, .jpg)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def backbone_weights(out: Path) -> Path:
    """Untrained ``resnet10t`` weights fixed by a seed, as a safetensors file (a real, small backbone)."""
    import timm
    import torch
    from safetensors.torch import save_file

    if not out.exists():
        torch.manual_seed(0)
        model = timm.create_model("resnet10t", pretrained=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return out


def embedding_detector(out: Path) -> Path:
    """A saved detector (``resnet10t`` backbone, kNN) fitted on 200 random unit vectors: no image pass, about a
    second. Its scores mean nothing; it is a real detector for the commands that load one."""
    import novelty

    weights = backbone_weights(out.parent / f"{out.name}-weights.safetensors")
    det = novelty.NoveltyDetector("resnet10t", weights=weights, scorers=("knn",), num_workers=0)
    x = np.random.default_rng(0).normal(size=(200, det.embedder.dim)).astype(np.float32)
    det.fit_embeddings(x / np.linalg.norm(x, axis=1, keepdims=True))
    det.save(out)
    return out


def selection_file(
    path: Path, images: Sequence[Path], *, ids: Sequence[str] | None = None, predictions=None
) -> Path:
    """A ``selection.json`` over ``images`` (classes dry, wet)."""
    items = []
    for i, p in enumerate(images):
        items.append(
            {
                "id": ids[i] if ids else f"item{i}",
                "path": str(p),
                "sha256": sha256_file(p),
                "source": "folder",
                "rank": i + 1,
                "reason": "novel",
                "p_value": 0.01,
                "novelty": 0.99,
                "is_novel": True,
                "prediction": None if predictions is None else predictions[i],
                "probability": None if predictions is None else 0.6,
                "uncertainty": 0.4,
                "timestamp": None,
            }
        )
    sel = {
        "format": "novelty-selection",
        "format_version": 1,
        "created": "2026-01-01T00:00:00Z",
        "strategy": "novelty",
        "budget": len(items),
        "seed": 0,
        "weights": {},
        "detector_id": "det-1",
        "model_version": "det-1",
        "classes": ["dry", "wet"],
        "alpha": 0.05,
        "items": items,
    }
    path.write_text(json.dumps(sel))
    return path
