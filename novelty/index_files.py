"""Saving and reading an :class:`~novelty.index.EmbeddingIndex` (no pickle). An exact flat index is one file in
FAISS's binary format; a refined kind is a directory: ``index.faiss``, ``vectors.npy`` (the vector store) and
``index.json`` (kind, plan and the sha256 of both files, checked on reading)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from novelty.errors import ArtifactIntegrityError, InvalidInputError
from novelty.fileio import atomic_write_bytes, atomic_write_text, read_regular_file, sha256_file
from novelty.index_plan import IndexPlan
from novelty.index_store import _array_from_npy_bytes, _Store

if TYPE_CHECKING:
    from novelty.index import EmbeddingIndex

__all__ = ["index_from_bytes", "load_index_dir", "save_index"]

_INDEX_FILE, _STORE_FILE, _META_FILE = "index.faiss", "vectors.npy", "index.json"


def index_from_bytes(
    cls: type[EmbeddingIndex],
    data: bytes,
    metric: str,
    factory: str | None,
    *,
    source: str,
    meta: dict[str, Any] | None,
    store: np.ndarray | bytes | None,
) -> EmbeddingIndex:
    """An index of class ``cls`` from FAISS bytes (:meth:`~novelty.index.EmbeddingIndex.from_bytes`)."""
    if meta is not None:
        if not isinstance(meta, dict) or not isinstance(meta.get("options", {}), dict):
            raise InvalidInputError(f"{source}: index metadata must be an object")
        kind = meta.get("kind")
        options = dict(meta.get("options") or {})
        try:
            if kind == "custom":
                index = cls(metric=metric, factory=factory, **options)
            else:
                index = cls(metric=metric, kind=kind, **options)
        except TypeError as e:
            raise InvalidInputError(f"{source}: unknown index options ({e})") from e
        plan = IndexPlan.from_json(meta.get("plan"), source) if meta.get("plan") is not None else None
    else:
        index = cls(metric=metric, factory=factory or "Flat")
        plan = None if index.kind == "flat" else IndexPlan("custom", index.factory or "Flat", refine=0)
    try:
        index._index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except (RuntimeError, ValueError, TypeError) as e:
        raise InvalidInputError(f"{source}: not a readable FAISS index ({e})") from e
    expected = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if index._index.metric_type != expected:
        raise InvalidInputError(f"{source}: the index's FAISS metric does not match metric={metric!r}")
    index.plan_ = plan or IndexPlan("flat", "Flat")
    index._apply_search_params()
    if index.plan_.refine:
        if store is None:
            raise InvalidInputError(
                f"{source}: the {index.plan_.kind} index needs its vector store, which is missing"
            )
        arr = _array_from_npy_bytes(store, source) if isinstance(store, bytes) else store
        if arr.ndim != 2 or arr.shape != (index.ntotal, index._index.d) or arr.dtype != np.float32:
            raise InvalidInputError(
                f"{source}: the vector store is {arr.dtype} {arr.shape}, the index holds "
                f"{index.ntotal}×{index._index.d} float32"
            )
        index._store = _Store(int(index._index.d))
        index._store.append(arr)
    return index


def save_index(index: EmbeddingIndex, path: str | os.PathLike[str]) -> None:
    """Write ``index`` atomically (:meth:`~novelty.index.EmbeddingIndex.save`)."""
    if index._store is None and index.kind in ("flat", "custom"):
        atomic_write_bytes(path, index.to_bytes())
        return
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p / _INDEX_FILE, index.to_bytes())
    store = index.store_npy_bytes()
    if store is not None:
        atomic_write_bytes(p / _STORE_FILE, store)
    meta = {
        "format": "novelty-index",
        "metric": index.metric,
        "factory": index.factory,
        **index.meta(),
        "n": index.ntotal,
        "dim": index.dim,
        "sha256": {
            _INDEX_FILE: sha256_file(p / _INDEX_FILE),
            **({_STORE_FILE: sha256_file(p / _STORE_FILE)} if store is not None else {}),
        },
    }
    atomic_write_text(p / _META_FILE, json.dumps(meta, indent=1))


def load_index_dir(cls: type[EmbeddingIndex], p: Path, *, mmap: bool) -> EmbeddingIndex:
    """An index of class ``cls`` from a directory :func:`save_index` wrote; every file's sha256 is checked."""
    try:
        meta = json.loads(read_regular_file(p / _META_FILE))
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{p}: not a saved index directory ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != "novelty-index":
        raise InvalidInputError(f"{p / _META_FILE}: not a novelty index description")
    sums = meta.get("sha256") or {}
    for name, want in sums.items():
        if name not in (_INDEX_FILE, _STORE_FILE):
            raise InvalidInputError(f"{p / _META_FILE}: unexpected file {name!r}")
        got = sha256_file(p / name)
        if got != want:
            raise ArtifactIntegrityError(f"{p / name}: sha256 {got} does not match {want} in {_META_FILE}")
    data = read_regular_file(p / _INDEX_FILE)
    store: np.ndarray | bytes | None = None
    if _STORE_FILE in sums:
        store = np.load(p / _STORE_FILE, mmap_mode="r") if mmap else read_regular_file(p / _STORE_FILE)
    index = cls.from_bytes(
        data, meta.get("metric", "cosine"), meta.get("factory"), source=str(p), meta=meta, store=store
    )
    if index.ntotal != meta.get("n") or index.dim != meta.get("dim"):
        raise InvalidInputError(
            f"{p}: the index holds {index.ntotal}×{index.dim}, {_META_FILE} says {meta.get('n')}×{meta.get('dim')}"
        )
    return index
