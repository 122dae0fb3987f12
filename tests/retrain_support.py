"""Helpers of tests/flywheel/test_retrain.py and tests/flywheel/test_compare.py: labelled datasets of real image files whose
embeddings are either made by the backbone (real data) or placed in the dataset's own embedding cache
(synthetic vectors for the fast tier: the retrain and compare code then runs unchanged, without a backbone
pass, because :func:`novelty.flywheel.dataset.embed_entries` finds every image in the cache)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from novelty.flywheel.dataset import Dataset, Entry, embedder_key

CLASSES = ("dry", "wet")


@dataclass(frozen=True)
class Item:
    """One image to label: its label, condition, group, time and (synthetic tests) its embedding."""

    label: str
    condition: str | None = None
    group: str | None = None
    time: str | None = None
    embedding: np.ndarray | None = None


def write_pngs(folder: Path, n: int, rng: np.random.Generator, start: int = 0) -> list[Path]:
    """``n`` small, distinct PNG files (random pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        p = folder / f"img{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def seed_cache(cache_dir: Path, embedder: object, vectors: Mapping[str, np.ndarray]) -> None:
    """Put ``{sha256: embedding}`` into the embedding cache ``embed_entries`` reads (merged with what is there)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{embedder_key(embedder)}.npz"  # type: ignore[arg-type]
    merged: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            merged = {str(s): e for s, e in zip(z["sha256"], z["embeddings"], strict=True)}
    merged.update(vectors)
    shas = np.array(sorted(merged), dtype="<U64")
    np.savez(path, sha256=shas, embeddings=np.stack([merged[s] for s in shas]).astype(np.float32))


def add_items(
    ds: Dataset,
    items: Sequence[Item],
    paths: Sequence[Path],
    *,
    source: str = "test",
    embedder: object | None = None,
) -> int:
    """Label ``paths`` as ``items`` in one new version of ``ds``; synthetic embeddings go into its cache."""
    entries = [
        Entry.from_file(
            p,
            it.label,
            source=source,
            labeller="human:test",
            group=it.group,
            condition=it.condition,
            time=it.time,
        )
        for p, it in zip(paths, items, strict=True)
    ]
    version = ds.add(entries, source=source)
    if embedder is not None:
        vecs = {
            e.sha256: it.embedding for e, it in zip(entries, items, strict=True) if it.embedding is not None
        }
        if vecs:
            seed_cache(ds.embeddings_dir, embedder, vecs)
    return version


def synthetic(
    rng: np.random.Generator,
    labels: Sequence[str],
    conditions: Sequence[str],
    dim: int,
    *,
    shifts: Mapping[str, float] | None = None,
    own: Sequence[str] = (),
) -> np.ndarray:
    """L2-normalised embeddings: the class shifts one direction, each condition another (``shifts``); a
    condition in ``own`` shows its class along other dimensions (a head trained without it is at chance)."""
    shifts = shifts or {}
    base = np.zeros(dim)
    base[0] = 1.0
    class_dir = np.zeros(dim)
    class_dir[1 : dim // 4] = 1.0  # spread over many dimensions: a linear head learns it in a few epochs
    class_dir /= np.linalg.norm(class_dir)
    own_dir = np.zeros(dim)
    own_dir[dim // 4 : dim // 2] = 1.0
    own_dir /= np.linalg.norm(own_dir)
    out = np.empty((len(labels), dim), dtype=np.float32)
    for i, (y, c) in enumerate(zip(labels, conditions, strict=True)):
        sign = 1.0 if y == CLASSES[1] else -1.0
        cond_dir = np.zeros(dim)
        cond_dir[2 + zlib.crc32(c.encode()) % (dim - 3)] = shifts.get(c, 0.0)
        v = (
            base
            + 0.6 * sign * (own_dir if c in own else class_dir)
            + cond_dir
            + rng.normal(scale=0.02, size=dim)
        )
        out[i] = v / np.linalg.norm(v)
    return out
