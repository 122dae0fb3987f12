"""Backbone features for the leave-one-scenario-out protocol: the pooled embedding and two pooled inner stages.

One forward pass per image gives three feature sets, cached per backbone and image pool under
``$NOVELTY_CACHE/stage-features/<backbone>-<weights fingerprint>/<pool>.npz`` (rows embedded so far; new rows
are embedded and merged; written atomically, read with ``allow_pickle=False``):

- ``final``: the backbone's pooled output *before* L2 normalisation (what :class:`~novelty.Embedder` returns,
  once normalised; the raw vector is kept for peers that use the ImageNet classifier, such as ViM);
- ``s16`` / ``s32``: the global average of the output of the last block of the stride-16 stage
  (``blocks[4]``) and of the first stride-32 stage (``blocks[5]``) of timm's EfficientNet / MobileNetV2.

The images go through the embedder's own decoding and preprocessing (:meth:`Embedder.iter_batches`), so
``final`` normalised equals ``Embedder.embed`` exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.ood.scenarios import Pool
from novelty.datasets.cache import cache_root, write_cache
from novelty.embedder import Embedder
from novelty.errors import InvalidInputError

__all__ = ["FEATURE_KINDS", "STAGE_BLOCKS", "StageFeatureCache", "layer_features"]

log = logging.getLogger(__name__)

#: The inner stages kept, by name → index into ``model.blocks``.
STAGE_BLOCKS: dict[str, int] = {"s16": 4, "s32": 5}
FEATURE_KINDS: tuple[str, ...] = ("final", *STAGE_BLOCKS)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def layer_features(feats: dict[str, np.ndarray], layer: str) -> np.ndarray:
    """L2-normalised features of ``layer``: ``"final"`` (the embedder's embedding), or ``"final+s16"`` /
    ``"final+s32"``: both parts normalised, concatenated with equal weight and normalised again."""
    parts = layer.split("+")
    for p in parts:
        if p not in feats:
            raise InvalidInputError(f"unknown feature layer {p!r}; choose from {sorted(feats)}")
    if len(parts) == 1:
        return _unit(feats[parts[0]])
    return _unit(np.concatenate([_unit(feats[p]) for p in parts], axis=1))


@dataclass
class _Capture:
    outputs: dict[str, list[np.ndarray]]

    def hook(self, name: str) -> Any:
        def fn(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
            t = out.float()
            pooled = t.mean(dim=(2, 3)) if t.ndim == 4 else t
            self.outputs[name].append(pooled.detach().cpu().numpy().astype(np.float32))

        return fn


class StageFeatureCache:
    """Pooled final and inner-stage features of pool images by one backbone, embedded on first use."""

    def __init__(self, embedder: Embedder, root: Path | None = None, *, progress: bool | None = None):
        blocks = getattr(embedder.model, "blocks", None)
        if blocks is None or len(blocks) <= max(STAGE_BLOCKS.values()):
            raise InvalidInputError(
                f"{embedder.backbone_name} has no EfficientNet-style 'blocks' with the stages "
                f"{STAGE_BLOCKS}; use an EfficientNet or MobileNetV2 backbone"
            )
        self.embedder = embedder
        self.root = (root or cache_root("stage-features")) / (
            f"{embedder.backbone_name}-{embedder.fingerprint[:12]}"
        )
        self.progress = progress
        self.embedded = 0
        self._memory: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}

    def _path(self, pool: Pool) -> Path:
        return self.root / f"{pool.name}.npz"

    def _read(self, pool: Pool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if pool.name in self._memory:
            return self._memory[pool.name]
        path = self._path(pool)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    index = z["index"].astype(np.int64)
                    feats = {k: z[k].astype(np.float32) for k in FEATURE_KINDS}
                if all(v.shape[0] == index.shape[0] for v in feats.values()):
                    return index, feats
            except (OSError, ValueError, KeyError):
                log.warning("unreadable feature cache %s: embedding again", path)
        return np.zeros(0, dtype=np.int64), {}

    def _embed(self, images: list[Any]) -> dict[str, np.ndarray]:
        cap = _Capture({k: [] for k in FEATURE_KINDS})
        model = self.embedder.model
        blocks: Any = model.blocks
        handles = [model.register_forward_hook(cap.hook("final"))]
        handles += [blocks[i].register_forward_hook(cap.hook(k)) for k, i in STAGE_BLOCKS.items()]
        try:
            for b in self.embedder.iter_batches(images, progress=self.progress):
                bad = [e for e in b.errors if e is not None]
                if bad:
                    raise bad[0]
        finally:
            for h in handles:
                h.remove()
        return {k: np.concatenate(v) for k, v in cap.outputs.items()}

    def get(self, pool: Pool, index: np.ndarray) -> dict[str, np.ndarray]:
        """Features of ``pool``'s images at positions ``index`` (rows in that order), by kind."""
        index = np.asarray(index, dtype=np.int64)
        known, feats = self._read(pool)
        missing = np.setdiff1d(index, known)
        if missing.size:
            log.info(
                "embedding %d images of %s with %s", missing.size, pool.name, self.embedder.backbone_name
            )
            new = self._embed(pool.images(missing))
            self.embedded += int(missing.size)
            known = np.concatenate([known, missing])
            feats = {k: np.concatenate([feats[k], new[k]]) if feats else new[k] for k in FEATURE_KINDS}
            order = np.argsort(known)
            known = known[order]
            feats = {k: v[order] for k, v in feats.items()}

            def write(fh: Any, k: np.ndarray = known, f: dict[str, np.ndarray] = feats) -> None:
                np.savez(fh, index=k, **f)  # type: ignore[arg-type]

            write_cache(self._path(pool), write, owner="benchmarks.ood")
        self._memory[pool.name] = (known, feats)
        pos = np.searchsorted(known, index)
        return {k: v[pos] for k, v in feats.items()}
