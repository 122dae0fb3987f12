"""The embedding cache of a labelled dataset: each embedder's embeddings of image bytes, by their sha256, in
``<cache dir>/<embedder key>.npz`` (arrays ``sha256`` and ``embeddings``, float32), written under a lock.
:func:`embed_entries` embeds a dataset's entries through it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from novelty.errors import InvalidInputError
from novelty.fileio import atomic_open, read_regular_file, sha256_bytes
from novelty.flywheel.entries import LOCK_TIMEOUT_S, DatasetIntegrityError, Entry, _Lock
from novelty.flywheel.imagefiles import _NamedBytes

__all__ = ["add_to_cache", "cached_embeddings", "embed_entries", "embedder_key"]

log = logging.getLogger(__name__)


class _EmbedderLike(Protocol):
    def embed(self, images: Any) -> np.ndarray: ...

    def config(self) -> dict[str, Any]: ...


def embedder_key(embedder: _EmbedderLike) -> str:
    """What names an embedder's embeddings: a sha256 (first 32 hex digits) of its backbone, weights fingerprint,
    preprocessing and precision — the same key means the same vectors for the same image bytes."""
    cfg = dict(embedder.config())
    if not cfg.get("fingerprint"):
        raise InvalidInputError("the embedder has no weights fingerprint; its embeddings cannot be cached")
    for volatile in ("batch_size", "weights"):  # how fast / where from, not what comes out
        cfg.pop(volatile, None)
    text = json.dumps(cfg, sort_keys=True, default=str)
    return sha256_bytes(text.encode())[:32]


def cached_embeddings(cache_dir: str | os.PathLike[str], embedder: _EmbedderLike) -> dict[str, np.ndarray]:
    """The embeddings ``embedder`` made before, by the sha256 of the image bytes, from ``cache_dir`` (empty
    when there is none yet; an unreadable cache is logged and counts as empty)."""
    return _load_cache(Path(cache_dir) / f"{embedder_key(embedder)}.npz")


def add_to_cache(
    cache_dir: str | os.PathLike[str], embedder: _EmbedderLike, fresh: Mapping[str, np.ndarray]
) -> None:
    """Add ``fresh`` (sha256 of the image bytes → ``embedder``'s embedding of them) to the cache in
    ``cache_dir``, under its lock (what another process added meanwhile is kept)."""
    if not fresh:
        return
    path = Path(cache_dir) / f"{embedder_key(embedder)}.npz"
    with _cache_lock(path.parent):
        merged = _load_cache(path)
        merged.update(fresh)
        _save_cache(path, merged, next(iter(fresh.values())).shape[0])


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            shas, emb = z["sha256"], z["embeddings"]
        if shas.ndim != 1 or emb.ndim != 2 or len(shas) != len(emb) or emb.dtype != np.float32:
            raise ValueError("arrays of the wrong shape or dtype")
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s: unreadable embedding cache (%s); it is rebuilt", path, e)
        return {}
    return {str(s): emb[i] for i, s in enumerate(shas)}


def _save_cache(path: Path, cache: dict[str, np.ndarray], dim: int) -> None:
    shas = np.array(sorted(cache), dtype="<U64")
    emb = (
        np.stack([cache[s] for s in shas]).astype(np.float32) if len(shas) else np.zeros((0, dim), np.float32)
    )
    with atomic_open(path, "wb") as fh:
        np.savez(fh, sha256=shas, embeddings=emb)


@contextlib.contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _Lock(cache_dir, LOCK_TIMEOUT_S):
        yield


def embed_entries(
    entries: Sequence[Entry],
    embedder: _EmbedderLike,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    chunk: int = 256,
) -> np.ndarray:
    """Embeddings (``float32``, shape ``(n, d)``) of ``entries`` in order.

    Each image comes from the cache (``cache_dir/<embedder key>.npz``, by sha256) or is read once, checked
    against the sha256 it was labelled with (:class:`DatasetIntegrityError` when the file is gone or changed) and
    embedded from those bytes (an undecodable one raises its :class:`~novelty.errors.ImageError`, naming the file);
    new embeddings are added to the cache. ``cache_dir=None``: no cache."""
    entries = list(entries)
    cache = {} if cache_dir is None else cached_embeddings(cache_dir, embedder)
    todo: dict[str, Entry] = {}
    for e in entries:
        if e.sha256 not in cache and e.sha256 not in todo:
            todo[e.sha256] = e
    fresh: dict[str, np.ndarray] = {}
    pending = list(todo.values())
    for start in range(0, len(pending), max(1, chunk)):
        part = pending[start : start + chunk]
        blobs = [_NamedBytes(e.path, _verified_bytes(e)) for e in part]  # a decoding error names the file
        emb = np.asarray(embedder.embed(blobs), dtype=np.float32)
        for e, row in zip(part, emb, strict=True):
            fresh[e.sha256] = row
    if cache_dir is not None:
        add_to_cache(cache_dir, embedder, fresh)
    found = {**cache, **fresh}
    if not entries:
        dim = next(iter(found.values())).shape[0] if found else 0
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([found[e.sha256] for e in entries]).astype(np.float32, copy=False)


def _verified_bytes(e: Entry) -> bytes:
    try:
        data = read_regular_file(e.path)
    except OSError as err:
        raise DatasetIntegrityError(
            f"entry {e.id}: cannot read its image {e.path} ({getattr(err, 'strerror', None) or err})"
        ) from None
    sha = sha256_bytes(data)
    if sha != e.sha256:
        raise DatasetIntegrityError(
            f"entry {e.id}: {e.path} changed since it was labelled (sha256 {sha[:12]}…, labelled "
            f"{e.sha256[:12]}…); restore the file or label the new one"
        )
    return data
