"""The vectors of an :class:`~novelty.index.EmbeddingIndex`: checking them (:func:`as_embeddings`), the vector store
that exact distances are recomputed from (in memory or memory-mapped from a ``.npy`` file), and those exact
distances (:func:`exact_distances`, :func:`brute_force`)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from novelty.errors import DimensionMismatchError, InvalidInputError

__all__ = ["as_embeddings", "brute_force", "exact_distances"]


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


class _Store:
    """The indexed vectors (normalised for cosine), as segments: in-memory arrays or memory-mapped files."""

    def __init__(self, d: int):
        self.d = d
        self.segments: list[np.ndarray] = []
        self.offsets = [0]

    def __len__(self) -> int:
        return self.offsets[-1]

    def append(self, x: np.ndarray) -> None:
        if x.shape[0]:
            self.segments.append(x)
            self.offsets.append(self.offsets[-1] + x.shape[0])

    def take(self, ids: np.ndarray) -> np.ndarray:
        flat = ids.ravel()
        if len(self.segments) == 1:
            return np.asarray(self.segments[0][flat], dtype=np.float32).reshape(*ids.shape, self.d)
        out = np.empty((flat.shape[0], self.d), dtype=np.float32)
        seg = np.searchsorted(np.asarray(self.offsets[1:]), flat, side="right")
        for s in np.unique(seg):
            rows = seg == s
            out[rows] = self.segments[s][flat[rows] - self.offsets[s]]
        return out.reshape(*ids.shape, self.d)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first id, float32 rows)`` in id order, at most ``size`` rows at a time."""
        for seg, off in zip(self.segments, self.offsets[:-1], strict=True):
            for s in range(0, seg.shape[0], size):
                yield off + s, np.ascontiguousarray(seg[s : s + size], dtype=np.float32)

    def to_array(self) -> np.ndarray:
        if len(self.segments) == 1:
            return self.segments[0]
        if not self.segments:
            return np.empty((0, self.d), dtype=np.float32)
        return np.concatenate([np.asarray(s) for s in self.segments])

    def memory_mapped(self) -> bool:
        return any(isinstance(s, np.memmap) for s in self.segments)


def _npy_memmap(path: Path, n: int, d: int) -> np.memmap:
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))


def _array_from_npy_bytes(data: bytes, source: str) -> np.ndarray:
    """A read-only float32 array over the bytes of a ``.npy`` file, without copying them."""
    try:
        f = io.BytesIO(data)
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
    except (ValueError, OSError) as e:
        raise InvalidInputError(f"{source}: not a .npy file ({e})") from e
    if dtype != np.float32 or fortran or len(shape) != 2:
        raise InvalidInputError(f"{source}: expected a C-order float32 (n, d) array, got {dtype} {shape}")
    need = f.tell() + int(np.prod(shape)) * 4
    if len(data) != need:
        raise InvalidInputError(f"{source}: {len(data)} bytes, the header promises {need}")
    return np.frombuffer(data, dtype=np.float32, offset=f.tell()).reshape(shape)


def brute_force(store: _Store, q: np.ndarray, k: int, exclude: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest vectors of ``q`` in ``store`` by exact float64 distances (``exclude``: an id that is
    no neighbour)."""
    best_d = np.full(0, np.inf)
    best_i = np.full(0, -1, dtype=np.int64)
    q64 = q.astype(np.float64)
    for start, x in store.chunks(65_536):
        diff = x.astype(np.float64) - q64
        d = np.sqrt(np.einsum("nd,nd->n", diff, diff))
        ids = np.arange(start, start + x.shape[0])
        if exclude is not None:
            d[ids == exclude] = np.inf
        best_d = np.concatenate([best_d, d])
        best_i = np.concatenate([best_i, ids])
        top = np.argsort(best_d, kind="stable")[:k]
        best_d, best_i = best_d[top], best_i[top]
    return best_d, best_i


def exact_distances(
    q: np.ndarray, rows_of: Callable[[np.ndarray], np.ndarray], ids: np.ndarray
) -> np.ndarray:
    """Float64 Euclidean distances from each query to the vectors ``rows_of(ids)`` (row by row, ``(n, k)``)."""
    out = np.empty(ids.shape, dtype=np.float64)
    rows = max(1, (1 << 22) // max(1, ids.shape[1] * q.shape[1]))  # ≤ 32 MB of float64 at a time
    for s in range(0, q.shape[0], rows):
        diff = q[s : s + rows, None, :].astype(np.float64) - rows_of(ids[s : s + rows])
        out[s : s + rows] = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
    return out
