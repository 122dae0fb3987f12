"""A FAISS index over embeddings that returns *true* Euclidean distances.

- ``metric="cosine"`` (default): vectors are L2-normalised and searched by inner product;
  distances are ``‖q − x‖ = sqrt(2 − 2·q·x)`` on the unit sphere.
- ``metric="euclidean"``: raw vectors, ``IndexFlatL2`` (which returns *squared* distances; we take the root).

The exact (``"Flat"``) index refines the returned distances in float64 from the stored vectors, so they agree
with a numpy brute force to ~1e-7 even for near-duplicates, where ``2 − 2·q·x`` in float32 loses digits.
``search(..., exclude_self=True)`` scores the indexed set itself: row ``i`` of the queries is item ``i`` of
the index, and that item is never its own neighbour.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from novelty.errors import DimensionMismatchError, InvalidInputError, NotFittedError
from novelty.fileio import atomic_write_bytes, read_regular_file

__all__ = ["EmbeddingIndex", "as_embeddings"]

_METRICS = ("cosine", "euclidean")


def as_embeddings(x: object, dim: int | None = None, *, name: str = "embeddings") -> np.ndarray:
    """Validate and convert to a C-contiguous float32 ``(n, d)`` array (a copy only when needed)."""
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2-D array (n, d); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InvalidInputError(f"{name} must be numeric; got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(
            f"{name} have dimension {arr.shape[1]} but the index was built for {dim}; "
            "use embeddings from the same backbone"
        )
    if arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr).all(axis=1)).sum())
        raise InvalidInputError(f"{name} contain NaN or infinity in {bad} row(s)")
    return arr


class EmbeddingIndex:
    """Nearest-neighbour search over a set of embeddings (FAISS, exact by default).

    ``factory`` is a FAISS index-factory string: ``"Flat"`` (exact), ``"HNSW32"``, ``"IVF1024,Flat"``…
    Approximate indexes trade exactness for speed on millions of vectors.
    """

    def __init__(self, metric: str = "cosine", factory: str = "Flat"):
        if not isinstance(metric, str) or metric not in _METRICS:
            raise InvalidInputError(f"metric must be one of {_METRICS}, got {metric!r}")
        if not isinstance(factory, str) or not factory.strip():
            raise InvalidInputError(
                f"factory must be a FAISS index-factory string such as 'Flat' or 'HNSW32', got {factory!r}"
            )
        self.metric = metric
        self.factory = factory
        self._index: faiss.Index | None = None

    def get_params(self) -> dict[str, str]:
        """The constructor arguments; ``EmbeddingIndex(**index.get_params())`` is an empty index of the same kind."""
        return {"metric": self.metric, "factory": self.factory}

    # ------------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int | None:
        return None if self._index is None else int(self._index.d)

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"EmbeddingIndex(metric={self.metric!r}, factory={self.factory!r}, n={self.ntotal}, dim={self.dim})"

    def _prepare(self, x: object, name: str) -> np.ndarray:
        arr = as_embeddings(x, self.dim, name=name)
        if self.metric == "cosine":
            norms = np.linalg.norm(arr, axis=1, keepdims=True)
            if (norms == 0).any():
                raise InvalidInputError(
                    f"{name} contain all-zero rows, which have no direction (cosine metric)"
                )
            arr = arr / norms  # a new array: the caller's data is never normalised in place
        return np.ascontiguousarray(arr, dtype=np.float32)

    def add(self, embeddings: object) -> EmbeddingIndex:
        """Add vectors; their ids are their positions, continuing from ``ntotal``."""
        x = self._prepare(embeddings, "embeddings")
        if self._index is None:
            faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
            try:
                self._index = faiss.index_factory(x.shape[1], self.factory, faiss_metric)
            except RuntimeError as e:
                raise InvalidInputError(f"invalid FAISS factory string {self.factory!r}: {e}") from e
        try:
            if not self._index.is_trained:
                self._index.train(x)
            self._index.add(x)
        except RuntimeError as e:  # e.g. an IVF index with fewer training vectors than lists
            raise InvalidInputError(
                f"FAISS index {self.factory!r} could not be built from {x.shape[0]} vectors: {e}"
            ) from e
        return self

    def _stored(self) -> np.ndarray | None:
        """A zero-copy view of the stored vectors of a flat index (None for other index types)."""
        idx = self._index
        if isinstance(idx, faiss.IndexFlat) and idx.ntotal:
            return faiss.rev_swig_ptr(idx.get_xb(), idx.ntotal * idx.d).reshape(idx.ntotal, idx.d)
        return None

    def search(
        self, queries: object, k: int, *, exclude_self: bool = False, chunk: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed vectors of each query: ``(distances, ids)``, each ``(n, k)``, nearest first.

        Distances are true Euclidean distances (not squared). ``exclude_self=True``: the queries *are* the
        indexed vectors in order, and item ``i`` is removed from its own neighbour list.
        """
        if self._index is None or self.ntotal == 0:
            raise NotFittedError("the index is empty: call add() first")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        q = self._prepare(queries, "queries")
        available = self.ntotal - (1 if exclude_self else 0)
        if k > available:
            raise InvalidInputError(f"k={k} but only {available} indexed vectors can be neighbours")
        if exclude_self and q.shape[0] != self.ntotal:
            raise InvalidInputError(
                f"exclude_self=True needs the indexed vectors as queries ({self.ntotal}), got {q.shape[0]}"
            )
        kk = k + 1 if exclude_self else k
        D = np.empty((q.shape[0], k), dtype=np.float32)
        ids = np.empty((q.shape[0], k), dtype=np.int64)
        xb = self._stored()
        for start in range(0, q.shape[0], chunk):
            qc = q[start : start + chunk]
            raw, I = self._index.search(qc, kk)
            if exclude_self:
                own = np.arange(start, start + qc.shape[0])[:, None]
                keep = own != I
                # when the item is not among its kk hits (ties), drop the last column instead
                missing = keep.all(axis=1)
                keep[missing, -1] = False
                I = I[keep].reshape(qc.shape[0], k)
                raw = raw[keep].reshape(qc.shape[0], k)
            if xb is not None:
                dist = self._exact_distances(qc, xb, I)
                order = np.argsort(dist, axis=1, kind="stable")
                dist = np.take_along_axis(dist, order, axis=1)
                I = np.take_along_axis(I, order, axis=1)
            elif self.metric == "cosine":
                dist = np.sqrt(np.clip(2.0 - 2.0 * raw.astype(np.float64), 0.0, None))
            else:
                dist = np.sqrt(np.clip(raw.astype(np.float64), 0.0, None))
            D[start : start + qc.shape[0]] = dist
            ids[start : start + qc.shape[0]] = I
        return D, ids

    @staticmethod
    def _exact_distances(q: np.ndarray, xb: np.ndarray, ids: np.ndarray) -> np.ndarray:
        out = np.empty(ids.shape, dtype=np.float64)
        rows = max(1, (1 << 22) // max(1, ids.shape[1] * q.shape[1]))  # ≤ 32 MB of float64 at a time
        for s in range(0, q.shape[0], rows):
            diff = q[s : s + rows, None, :].astype(np.float64) - xb[ids[s : s + rows]]
            out[s : s + rows] = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
        return out

    def vectors(self) -> np.ndarray:
        """A copy of the stored vectors (normalised for the cosine metric), in id order."""
        if self._index is None:
            raise NotFittedError("the index is empty")
        xb = self._stored()
        if xb is not None:
            return xb.copy()
        return self._index.reconstruct_n(0, self.ntotal)

    # ------------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The FAISS index in FAISS's own binary format (no pickle)."""
        if self._index is None:
            raise NotFittedError("nothing to save: the index is empty")
        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(
        cls, data: bytes, metric: str = "cosine", factory: str = "Flat", *, source: str = "index"
    ) -> EmbeddingIndex:
        """An index from :meth:`to_bytes` output, parsed in memory; ``source`` names it in errors."""
        self = cls(metric=metric, factory=factory)
        try:
            self._index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except (RuntimeError, ValueError, TypeError) as e:
            raise InvalidInputError(f"{source}: not a readable FAISS index ({e})") from e
        expected = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        if self._index.metric_type != expected:
            raise InvalidInputError(f"{source}: the index's FAISS metric does not match metric={metric!r}")
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the FAISS index to ``path`` atomically (FAISS's own binary format; no pickle)."""
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], metric: str = "cosine", factory: str = "Flat"
    ) -> EmbeddingIndex:
        p = Path(path)
        try:
            data = read_regular_file(p)
        except OSError as e:
            raise InvalidInputError(f"index file {p} cannot be read: {e.strerror or e}") from e
        return cls.from_bytes(data, metric, factory, source=str(p))
