"""A FAISS index over embeddings that returns *true* Euclidean distances, exact or approximate.

- ``metric="cosine"`` (default): vectors are L2-normalised and searched by inner product;
  distances are ``‖q − x‖ = sqrt(2 − 2·q·x)`` on the unit sphere.
- ``metric="euclidean"``: raw vectors, searched by L2.

**Kinds** (``EmbeddingIndex(kind=…)``), resolved for the number of vectors at the first ``add``/``build``:

============  ======================================  ==========================================
kind          FAISS index                             for
============  ======================================  ==========================================
``flat``      ``Flat`` (exact)                        up to a few hundred thousand vectors
``ivf-flat``  ``IVF{nlist},Flat``                     speed, same memory as flat
``ivf-pq``    ``IVF{nlist},PQ{m}x4fs`` (fast-scan)    memory *and* speed: millions of vectors
``opq``       ``OPQ{m},IVF{nlist},PQ{m}x4fs``         as ``ivf-pq``, codes fitted after a rotation
``hnsw``      ``HNSW{M}``                             lowest latency per query, flat memory
``auto``      ``flat`` below :data:`AUTO_FLAT_MAX` vectors, ``ivf-pq`` above
============  ======================================  ==========================================

Every kind returns *exact* distances for the neighbours it finds: the approximate index proposes
``refine × k`` candidates and their distances are recomputed in float64 from a **vector store** (the
normalised vectors, in memory or memory-mapped from a ``.npy`` file), so a kNN score is off only when a true
neighbour was missed — never by quantisation noise. The flat kind refines from its own storage, in float64 too,
so it agrees with a numpy brute force to ~1e-7 even for near-duplicates. A query that gets fewer than ``k``
candidates (an IVF probe of sparse lists) is answered by brute force over the store.

``search(..., exclude_self=True)`` scores the indexed set itself: row ``i`` of the queries is item ``i`` of
the index, and that item is never its own neighbour. Ids are positions: ``add`` appends, ``remove`` deletes
and the items after a removed one move down, as in a list.

:meth:`EmbeddingIndex.build` builds from a memory-mapped ``.npy`` file chunk by chunk: a training sample (for
IVF/PQ kinds), one chunk and the index are in memory at a time; with ``store_path`` the vector store is written
to a ``.npy`` file and memory-mapped, so the index's own memory is what stays resident.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from novelty.errors import DimensionMismatchError, InvalidInputError, NotFittedError
from novelty.fileio import atomic_write_bytes, atomic_write_text, read_regular_file, sha256_file

__all__ = ["AUTO_FLAT_MAX", "INDEX_KINDS", "EmbeddingIndex", "IndexPlan", "as_embeddings", "plan_index"]

_METRICS = ("cosine", "euclidean")
INDEX_KINDS = ("flat", "ivf-flat", "ivf-pq", "opq", "hnsw", "auto")
AUTO_FLAT_MAX = 200_000  # "auto" uses exact search up to this many vectors
OPQ_MIN_TRAIN = 1000
_DEFAULT_REFINE = {"flat": 0, "ivf-flat": 1, "ivf-pq": 80, "opq": 80, "hnsw": 1, "custom": 1}
_INDEX_FILE, _STORE_FILE, _META_FILE = "index.faiss", "vectors.npy", "index.json"


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


# --- planning ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexPlan:
    """What an index kind resolves to for ``n`` vectors of dimension ``d``."""

    kind: str  # flat, ivf-flat, ivf-pq, opq, hnsw or custom (never auto)
    factory: str
    nprobe: int | None = None  # IVF lists visited per query
    ef_search: int | None = None  # HNSW candidate-list size
    refine: int = 0  # candidates per neighbour re-ranked exactly; 0: exact index, no store

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: str) -> IndexPlan:
        try:
            plan = cls(**data)
        except TypeError as e:
            raise InvalidInputError(f"{source}: not an index plan ({e})") from e
        if plan.kind not in (*INDEX_KINDS, "custom") or plan.kind == "auto":
            raise InvalidInputError(f"{source}: unknown index kind {plan.kind!r}")
        return plan


def _pow2_near(x: float) -> int:
    return 1 << max(0, round(math.log2(max(1.0, x))))


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: a power of two near ``√n`` (≈ 1,000 vectors per list at a million: cheap
    to train on a few cores), with ≥ 39 training vectors per list."""
    nlist = _pow2_near(math.sqrt(max(1, n)))
    while nlist > 1 and nlist * 39 > n:
        nlist //= 2
    return max(1, nlist)


def default_pq_m(d: int) -> int:
    """PQ sub-quantizers for dimension ``d``: one per 4 dimensions (4-bit codes: 1 bit per dimension, 1/32 of
    float32), the largest even divisor of ``d`` not above ``d / 4`` (fast-scan packs codes in pairs)."""
    for m in range(max(1, d // 4), 0, -1):
        if d % m == 0 and (m % 2 == 0 or m == 1):
            return m
    return 1


def plan_index(
    kind: str,
    n: int,
    d: int,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    pq_m: int | None = None,
    hnsw_m: int | None = None,
    ef_search: int | None = None,
    refine: int | None = None,
) -> IndexPlan:
    """Resolve ``kind`` (one of :data:`INDEX_KINDS`) for ``n`` vectors of dimension ``d``."""
    if kind == "auto":
        kind = "flat" if n <= AUTO_FLAT_MAX else "ivf-pq"
    ref = _DEFAULT_REFINE[kind] if refine is None else refine
    if kind == "flat":
        return IndexPlan("flat", "Flat", refine=0)
    if kind == "hnsw":
        m = hnsw_m or 32
        return IndexPlan("hnsw", f"HNSW{m}", ef_search=ef_search or 128, refine=max(1, ref))
    lists = nlist or default_nlist(n)
    probe = min(lists, nprobe or min(128, max(8, lists // 32)))
    if kind == "ivf-flat":
        return IndexPlan("ivf-flat", f"IVF{lists},Flat", nprobe=probe, refine=max(1, ref))
    m = pq_m or default_pq_m(d)
    if d % m:
        raise InvalidInputError(f"pq_m={m} must divide the dimension {d}")
    factory = f"IVF{lists},PQ{m}x4fs"
    if kind == "opq":  # rotation to d/2 dimensions, then the same code size as ivf-pq (2 dims per 4 bits)
        d_out = max(2, (d // 2) // 2 * 2)
        m = pq_m or default_pq_m(d_out)
        if d_out % m:
            raise InvalidInputError(f"pq_m={m} must divide the rotated dimension {d_out} (opq)")
        factory = f"OPQ{m}_{d_out},IVF{lists},PQ{m}x4fs"
    return IndexPlan(kind, factory, nprobe=probe, refine=max(1, ref))


# --- the vector store ------------------------------------------------------------------------------------
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
    import io

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


# --- the index ------------------------------------------------------------------------------------------
class EmbeddingIndex:
    """Nearest-neighbour search over a set of embeddings (FAISS; exact by default).

    ``kind``: one of :data:`INDEX_KINDS` (see the module docstring); ``factory``: any FAISS index-factory
    string instead (``"Flat"``, ``"HNSW32"``, ``"IVF1024,Flat"``…), refined like the kinds. The options
    (``nlist``, ``nprobe``, ``pq_m``, ``hnsw_m``, ``ef_search``, ``refine``) override what the kind picks for
    the number of vectors; ``refine`` is the number of candidates per neighbour re-ranked exactly.
    """

    def __init__(
        self,
        metric: str = "cosine",
        factory: str | None = None,
        *,
        kind: str | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
        hnsw_m: int | None = None,
        ef_search: int | None = None,
        refine: int | None = None,
    ):
        if not isinstance(metric, str) or metric not in _METRICS:
            raise InvalidInputError(f"metric must be one of {_METRICS}, got {metric!r}")
        if factory is not None and (not isinstance(factory, str) or not factory.strip()):
            raise InvalidInputError(
                f"factory must be a FAISS index-factory string such as 'Flat' or 'HNSW32', got {factory!r}"
            )
        if kind is not None and kind not in INDEX_KINDS:
            raise InvalidInputError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        if kind is not None and factory not in (None, "Flat"):
            raise InvalidInputError(
                f"give an index kind or a FAISS factory string, not both ({kind!r}, {factory!r})"
            )
        for name, value in (
            ("nlist", nlist),
            ("nprobe", nprobe),
            ("pq_m", pq_m),
            ("hnsw_m", hnsw_m),
            ("ef_search", ef_search),
        ):
            if value is not None and (
                not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1
            ):
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if refine is not None and (
            not isinstance(refine, (int, np.integer)) or isinstance(refine, bool) or refine < 0
        ):
            raise InvalidInputError(f"refine must be an integer ≥ 0, got {refine!r}")
        self.metric = metric
        if kind is None:
            kind = "flat" if factory in (None, "Flat") else "custom"
        self.kind = kind
        self.factory = factory if kind == "custom" else "Flat" if kind == "flat" else None
        self.options: dict[str, int | None] = {
            "nlist": nlist,
            "nprobe": nprobe,
            "pq_m": pq_m,
            "hnsw_m": hnsw_m,
            "ef_search": ef_search,
            "refine": refine,
        }
        self.plan_: IndexPlan | None = None
        self._index: faiss.Index | None = None
        self._store: _Store | None = None

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments; ``EmbeddingIndex(**index.get_params())`` is an empty index of the same kind."""
        if self.kind in ("flat", "custom") and not any(v is not None for v in self.options.values()):
            return {"metric": self.metric, "factory": self.factory or "Flat"}
        params: dict[str, Any] = {"metric": self.metric}
        if self.kind == "custom":
            params["factory"] = self.factory
        else:
            params["kind"] = self.kind
        params.update({k: v for k, v in self.options.items() if v is not None})
        return params

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
        what = self.plan_.factory if self.plan_ is not None else (self.factory or self.kind)
        return f"EmbeddingIndex(metric={self.metric!r}, kind={self.kind!r}, {what}, n={self.ntotal}, dim={self.dim})"

    @property
    def resolved_kind(self) -> str | None:
        """The kind actually built (``auto`` resolved); None before the first add."""
        return None if self.plan_ is None else self.plan_.kind

    def memory_bytes(self) -> int:
        """The FAISS index's own size (its serialised size: codes, lists, graph, centroids); the vector store
        is extra — in memory unless it is memory-mapped (:meth:`store_bytes`)."""
        return 0 if self._index is None else int(faiss.serialize_index(self._index).size)

    def store_bytes(self) -> tuple[int, bool]:
        """The vector store's size in bytes and whether it is memory-mapped from a file."""
        if self._store is None:
            return 0, False
        return len(self._store) * self._store.d * 4, self._store.memory_mapped()

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

    # --- building ---------------------------------------------------------------------------------------
    def _plan(self, n: int, d: int) -> IndexPlan:
        if self.kind == "custom":
            assert self.factory is not None
            return IndexPlan(
                "custom",
                self.factory,
                nprobe=self.options["nprobe"],
                ef_search=self.options["ef_search"],
                refine=1 if self.options["refine"] is None else int(self.options["refine"]),
            )
        opts = {k: (None if v is None else int(v)) for k, v in self.options.items()}
        return plan_index(self.kind, n, d, **opts)

    def _create(self, plan: IndexPlan, d: int) -> None:
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        try:
            index = faiss.index_factory(d, plan.factory, faiss_metric)
        except RuntimeError as e:
            raise InvalidInputError(f"invalid FAISS factory string {plan.factory!r}: {e}") from e
        if plan.factory.startswith("OPQ"):  # FAISS's OPQ defaults take hours at d ≈ 1000 on a few cores
            pre: Any = faiss.downcast_index(index)
            opq: Any = faiss.downcast_VectorTransform(pre.chain.at(0))
            opq.niter, opq.niter_pq_0, opq.niter_pq, opq.max_train_points = 8, 8, 2, 16_384
        self._index, self.plan_ = index, plan
        self._apply_search_params()
        self._store = _Store(d) if plan.refine else None

    def _apply_search_params(self) -> None:
        plan, index = self.plan_, self._index
        if plan is None or index is None:
            return
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and plan.nprobe:
            ivf.nprobe = int(min(plan.nprobe, ivf.nlist))
        hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
        if hnsw is not None and plan.ef_search:
            hnsw.efSearch = int(plan.ef_search)

    def set_search(
        self, *, nprobe: int | None = None, ef_search: int | None = None, refine: int | None = None
    ) -> EmbeddingIndex:
        """Change how a built index searches (IVF lists probed, HNSW candidate list, candidates re-ranked per
        neighbour). The change is saved with the index; a detector must be recalibrated after it
        (:meth:`~novelty.detector.NoveltyDetector.recalibrate`), since its calibration scores came from the
        old settings."""
        if self.plan_ is None:
            raise NotFittedError("the index is not built yet: set these options in the constructor")
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if refine is not None and (
            not isinstance(refine, (int, np.integer)) or refine < 1 or self._store is None
        ):
            raise InvalidInputError(
                f"refine must be a positive integer for an index with a vector store, got {refine!r}"
            )
        changes = {"nprobe": nprobe, "ef_search": ef_search, "refine": refine}
        self.plan_ = IndexPlan(
            **{**self.plan_.to_json(), **{k: int(v) for k, v in changes.items() if v is not None}}
        )
        self.options.update({k: int(v) for k, v in changes.items() if v is not None})
        self._apply_search_params()
        return self

    def _train(self, sample: np.ndarray) -> None:
        assert self._index is not None and self.plan_ is not None
        if self._index.is_trained:
            return
        if self.plan_.factory.startswith("OPQ") and sample.shape[0] < OPQ_MIN_TRAIN:
            # FAISS's OPQ training crashes the process (not an exception) on a few hundred vectors
            raise InvalidInputError(
                f"an opq index needs at least {OPQ_MIN_TRAIN} vectors to train, got {sample.shape[0]}; "
                "use kind='ivf-pq' or 'flat' for small sets"
            )
        try:
            self._index.train(sample)
        except RuntimeError as e:  # e.g. an IVF index with fewer training vectors than lists
            raise InvalidInputError(
                f"FAISS index {self.plan_.factory!r} could not be trained on {sample.shape[0]} vectors: {e}"
            ) from e

    def _add_prepared(self, x: np.ndarray) -> None:
        assert self._index is not None
        try:
            self._index.add(x)
        except RuntimeError as e:
            raise InvalidInputError(f"FAISS index could not add {x.shape[0]} vectors: {e}") from e
        if self._store is not None:
            self._store.append(x)

    def add(self, embeddings: object) -> EmbeddingIndex:
        """Add vectors; their ids are their positions, continuing from ``ntotal``. The first call picks the
        kind's parameters for its number of vectors and trains the index on them."""
        x = self._prepare(embeddings, "embeddings")
        if self._index is None:
            self._create(self._plan(x.shape[0], x.shape[1]), x.shape[1])
            self._train(x)
        self._add_prepared(x)
        return self

    @classmethod
    def build(
        cls,
        source: np.ndarray | str | os.PathLike[str],
        *,
        metric: str = "cosine",
        kind: str = "auto",
        chunk: int = 65_536,
        train_size: int | None = None,
        store_path: str | os.PathLike[str] | None = None,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
        **options: Any,
    ) -> EmbeddingIndex:
        """Build from an array or a ``.npy`` file (memory-mapped), ``chunk`` rows at a time.

        IVF/PQ kinds train on ``train_size`` rows drawn at random (default ``max(64·nlist, 50 000)``, at most
        ``n``), read in sorted order; then vectors are added chunk by chunk. With ``store_path``, the vector
        store is written to that ``.npy`` file and memory-mapped (it must be kept with the index); otherwise
        it is held in memory. ``progress(done, n)`` is called after each chunk."""
        src: np.ndarray
        if isinstance(source, (str, os.PathLike)):
            try:
                src = np.load(Path(source), mmap_mode="r")
            except (OSError, ValueError) as e:
                raise InvalidInputError(f"{source}: cannot be memory-mapped as a .npy array ({e})") from e
        else:
            src = np.asarray(source)
        if src.ndim != 2 or src.shape[0] == 0:
            raise InvalidInputError(f"build needs a non-empty (n, d) array; got shape {src.shape}")
        if not isinstance(chunk, int) or chunk < 1:
            raise InvalidInputError(f"chunk must be a positive integer, got {chunk!r}")
        n, d = int(src.shape[0]), int(src.shape[1])
        self = cls(metric=metric, kind=kind, **options)
        plan = self._plan(n, d)
        self._create(plan, d)
        assert self._index is not None
        if not self._index.is_trained:
            ivf = faiss.try_extract_index_ivf(self._index)
            want = train_size or max(64 * (ivf.nlist if ivf is not None else 1), 50_000)
            rng = np.random.default_rng(seed)
            rows = np.sort(rng.choice(n, size=min(n, want), replace=False))
            sample = np.concatenate(
                [
                    self._prepare(src[rows[s : s + chunk]], "embeddings")
                    for s in range(0, rows.shape[0], chunk)
                ]
            )
            self._train(sample)
            del sample
        mm: np.memmap | None = None
        if self._store is not None and store_path is not None:
            mm = _npy_memmap(Path(store_path), n, d)
        for s in range(0, n, chunk):
            x = self._prepare(src[s : s + chunk], "embeddings")
            try:
                self._index.add(x)
            except RuntimeError as e:
                raise InvalidInputError(f"FAISS index could not add rows {s}..{s + x.shape[0]}: {e}") from e
            if self._store is not None:
                if mm is not None:
                    mm[s : s + x.shape[0]] = x
                else:
                    self._store.append(x)
            if progress is not None:
                progress(min(n, s + chunk), n)
        if mm is not None and self._store is not None:
            mm.flush()
            del mm
            self._store.append(np.load(Path(store_path), mmap_mode="r"))  # type: ignore[arg-type]
        return self

    def remove(self, ids: object) -> np.ndarray:
        """Remove the vectors with these ids (positions); the items after a removed one move down.

        Returns the old ids of the vectors kept, in their new order (``kept[new_id] == old_id``). Trained
        parts (IVF centroids, PQ codebooks) are kept; the lists or graph are rebuilt from the store."""
        if self._index is None or self.ntotal == 0:
            raise NotFittedError("the index is empty: nothing to remove")
        arr = np.asarray(ids)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise InvalidInputError(
                f"ids must be a 1-D sequence of integer positions, got {arr.dtype} {arr.shape}"
            )
        drop = arr.astype(np.int64)
        n = self.ntotal
        if drop.size and (drop.min() < 0 or drop.max() >= n):
            raise InvalidInputError(f"ids must be in [0, {n}); got {drop.min()}..{drop.max()}")
        if np.unique(drop).size != drop.size:
            raise InvalidInputError("ids to remove contain duplicates")
        if drop.size >= n:
            raise InvalidInputError("cannot remove every vector: fit a new index instead")
        keep = np.ones(n, dtype=bool)
        keep[drop] = False
        kept = np.flatnonzero(keep)
        if not drop.size:
            return kept
        if self._store is None:  # an exact flat index: FAISS compacts its own storage
            if not isinstance(self._index, faiss.IndexFlat):
                raise InvalidInputError(
                    f"this {self.factory} index has no vector store (saved by an older version): refit it to remove"
                )
            self._index.remove_ids(faiss.IDSelectorBatch(drop))
            return kept
        old = self._store
        new = _Store(old.d)
        self._index.reset()  # keeps what was trained (centroids, codebooks, rotation)
        self._apply_search_params()
        for start, x in old.chunks(65_536):
            x = x[keep[start : start + x.shape[0]]]
            if x.shape[0]:
                self._index.add(x)
                new.append(np.array(x))
        self._store = new
        return kept

    # --- searching --------------------------------------------------------------------------------------
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

        Distances are true Euclidean distances (not squared), recomputed exactly for the neighbours found.
        ``exclude_self=True``: the queries *are* the indexed vectors in order, and item ``i`` is removed from
        its own neighbour list.
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
        D = np.empty((q.shape[0], k), dtype=np.float32)
        ids = np.empty((q.shape[0], k), dtype=np.int64)
        for start in range(0, q.shape[0], chunk):
            qc = q[start : start + chunk]
            own = np.arange(start, start + qc.shape[0])[:, None] if exclude_self else None
            if self._store is not None:
                dist, I = self._search_refined(qc, k, own)
            else:
                dist, I = self._search_direct(qc, k, own)
            D[start : start + qc.shape[0]] = dist
            ids[start : start + qc.shape[0]] = I
        return D, ids

    def _search_direct(self, qc: np.ndarray, k: int, own: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        assert self._index is not None
        kk = k + (1 if own is not None else 0)
        raw, I = self._index.search(qc, kk)
        if own is not None:
            keep = own != I
            # when the item is not among its kk hits (ties), drop the last column instead
            missing = keep.all(axis=1)
            keep[missing, -1] = False
            I = I[keep].reshape(qc.shape[0], k)
            raw = raw[keep].reshape(qc.shape[0], k)
        xb = self._stored()
        if xb is not None:
            dist = self._exact_distances(qc, lambda rows: xb[rows], I)
            order = np.argsort(dist, axis=1, kind="stable")
            return np.take_along_axis(dist, order, axis=1), np.take_along_axis(I, order, axis=1)
        if self.metric == "cosine":
            return np.sqrt(np.clip(2.0 - 2.0 * raw.astype(np.float64), 0.0, None)), I
        return np.sqrt(np.clip(raw.astype(np.float64), 0.0, None)), I

    def _search_refined(
        self, qc: np.ndarray, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self._index is not None and self._store is not None and self.plan_ is not None
        kk = k + (1 if own is not None else 0)
        cand = min(self.ntotal, kk * max(1, self.plan_.refine))
        _, I = self._index.search(qc, cand)
        I = I.astype(np.int64, copy=True)
        if own is not None:
            I[own == I] = -1
        valid = I >= 0
        store = self._store
        safe = np.where(valid, I, 0)
        if cand > k and len(store.segments) == 1 and store.segments[0].flags.c_contiguous:
            # rank the candidates by float32 squared distances computed in FAISS (a gather, no copy of the
            # store), then recompute the k kept exactly in float64; a margin of 2k keeps float32 ties honest
            d2 = np.empty(safe.shape, dtype=np.float32)
            xb = store.segments[0]
            faiss.fvec_L2sqr_by_idx(  # type: ignore[attr-defined]
                faiss.swig_ptr(d2),
                faiss.swig_ptr(qc),
                faiss.swig_ptr(xb),
                faiss.swig_ptr(safe),
                qc.shape[1],
                qc.shape[0],
                safe.shape[1],
            )
            d2[~valid] = np.inf
            keep = min(cand, 2 * k)
            part = np.argpartition(d2, keep - 1, axis=1)[:, :keep]
            I = np.take_along_axis(I, part, axis=1)
            valid = np.take_along_axis(valid, part, axis=1)
            safe = np.where(valid, I, 0)
        dist = self._exact_distances(qc, lambda rows: store.take(rows), safe)
        dist[~valid] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        dist = np.take_along_axis(dist, order, axis=1)
        I = np.take_along_axis(I, order, axis=1)
        short = np.flatnonzero(~np.isfinite(dist[:, -1]))
        for r in short:  # fewer than k candidates came back: answer this query by brute force
            exclude = None if own is None else int(own[r, 0])
            dist[r], I[r] = self._brute_force(qc[r], k, exclude)
        return dist, I

    def _brute_force(self, q: np.ndarray, k: int, exclude: int | None) -> tuple[np.ndarray, np.ndarray]:
        assert self._store is not None
        best_d = np.full(0, np.inf)
        best_i = np.full(0, -1, dtype=np.int64)
        q64 = q.astype(np.float64)
        for start, x in self._store.chunks(65_536):
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

    @staticmethod
    def _exact_distances(
        q: np.ndarray, rows_of: Callable[[np.ndarray], np.ndarray], ids: np.ndarray
    ) -> np.ndarray:
        out = np.empty(ids.shape, dtype=np.float64)
        rows = max(1, (1 << 22) // max(1, ids.shape[1] * q.shape[1]))  # ≤ 32 MB of float64 at a time
        for s in range(0, q.shape[0], rows):
            diff = q[s : s + rows, None, :].astype(np.float64) - rows_of(ids[s : s + rows])
            out[s : s + rows] = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
        return out

    def vectors(self) -> np.ndarray:
        """The stored vectors (normalised for the cosine metric), in id order: a copy, or a read-only
        memory-mapped view when the store is a single memory-mapped file."""
        if self._index is None:
            raise NotFittedError("the index is empty")
        if self._store is not None:
            arr = self._store.to_array()
            return arr if isinstance(arr, np.memmap) or not arr.flags.writeable else arr.copy()
        xb = self._stored()
        if xb is not None:
            return xb.copy()
        return self._index.reconstruct_n(0, self.ntotal)

    # --- saving -----------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The FAISS index in FAISS's own binary format (no pickle); the vector store is separate
        (:meth:`store_npy_bytes`)."""
        if self._index is None:
            raise NotFittedError("nothing to save: the index is empty")
        return faiss.serialize_index(self._index).tobytes()

    def store_npy_bytes(self) -> bytes | None:
        """The vector store as the bytes of a ``.npy`` file (None for an exact flat index, which has none)."""
        if self._store is None:
            return None
        import io

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self._store.to_array(), dtype=np.float32), allow_pickle=False)
        return buf.getvalue()

    def meta(self) -> dict[str, Any]:
        """What :meth:`from_bytes` needs besides the bytes: kind, options and the resolved plan."""
        return {
            "kind": self.kind,
            "options": {k: v for k, v in self.options.items() if v is not None},
            "plan": None if self.plan_ is None else self.plan_.to_json(),
        }

    def saved_meta(self) -> dict[str, Any] | None:
        """:meth:`meta`, or None for a plain exact flat index (saved as FAISS bytes alone, as it always was)."""
        return None if self.get_params() == {"metric": self.metric, "factory": "Flat"} else self.meta()

    def copy(self) -> EmbeddingIndex:
        """An independent copy (FAISS index and vector store), e.g. to change it aside and swap it in."""
        if self._index is None:
            return EmbeddingIndex(**self.get_params())
        store = None if self._store is None else np.array(self._store.to_array(), dtype=np.float32)
        return EmbeddingIndex.from_bytes(
            self.to_bytes(), self.metric, self.factory, meta=self.saved_meta(), store=store
        )

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        metric: str = "cosine",
        factory: str | None = "Flat",
        *,
        source: str = "index",
        meta: dict[str, Any] | None = None,
        store: np.ndarray | bytes | None = None,
    ) -> EmbeddingIndex:
        """An index from :meth:`to_bytes` output, parsed in memory; ``source`` names it in errors.

        ``meta`` (:meth:`meta`) and ``store`` (an array, or ``.npy`` bytes) restore a refined kind."""
        if meta is not None:
            if not isinstance(meta, dict) or not isinstance(meta.get("options", {}), dict):
                raise InvalidInputError(f"{source}: index metadata must be an object")
            kind = meta.get("kind")
            options = dict(meta.get("options") or {})
            try:
                if kind == "custom":
                    self = cls(metric=metric, factory=factory, **options)
                else:
                    self = cls(metric=metric, kind=kind, **options)
            except TypeError as e:
                raise InvalidInputError(f"{source}: unknown index options ({e})") from e
            plan = IndexPlan.from_json(meta.get("plan"), source) if meta.get("plan") is not None else None
        else:
            self = cls(metric=metric, factory=factory or "Flat")
            plan = None if self.kind == "flat" else IndexPlan("custom", self.factory or "Flat", refine=0)
        try:
            self._index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except (RuntimeError, ValueError, TypeError) as e:
            raise InvalidInputError(f"{source}: not a readable FAISS index ({e})") from e
        expected = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        if self._index.metric_type != expected:
            raise InvalidInputError(f"{source}: the index's FAISS metric does not match metric={metric!r}")
        self.plan_ = plan or IndexPlan("flat", "Flat")
        self._apply_search_params()
        if self.plan_.refine:
            if store is None:
                raise InvalidInputError(
                    f"{source}: the {self.plan_.kind} index needs its vector store, which is missing"
                )
            arr = _array_from_npy_bytes(store, source) if isinstance(store, bytes) else store
            if arr.ndim != 2 or arr.shape != (self.ntotal, self._index.d) or arr.dtype != np.float32:
                raise InvalidInputError(
                    f"{source}: the vector store is {arr.dtype} {arr.shape}, the index holds "
                    f"{self.ntotal}×{self._index.d} float32"
                )
            self._store = _Store(int(self._index.d))
            self._store.append(arr)
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index atomically. An exact flat index is one file in FAISS's binary format; a refined
        kind is a directory: ``index.faiss``, ``vectors.npy`` (the store) and ``index.json`` (kind, plan and
        the sha256 of both files, checked by :meth:`load`). No pickle."""
        if self._store is None and self.kind in ("flat", "custom"):
            atomic_write_bytes(path, self.to_bytes())
            return
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(p / _INDEX_FILE, self.to_bytes())
        store = self.store_npy_bytes()
        if store is not None:
            atomic_write_bytes(p / _STORE_FILE, store)
        meta = {
            "format": "novelty-index",
            "metric": self.metric,
            "factory": self.factory,
            **self.meta(),
            "n": self.ntotal,
            "dim": self.dim,
            "sha256": {
                _INDEX_FILE: sha256_file(p / _INDEX_FILE),
                **({_STORE_FILE: sha256_file(p / _STORE_FILE)} if store is not None else {}),
            },
        }
        atomic_write_text(p / _META_FILE, json.dumps(meta, indent=1))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        metric: str = "cosine",
        factory: str = "Flat",
        *,
        mmap: bool = True,
    ) -> EmbeddingIndex:
        """Read what :meth:`save` wrote; every file's sha256 is checked. With ``mmap`` the vector store is
        memory-mapped rather than read into memory."""
        p = Path(path)
        if p.is_dir():
            return cls._load_dir(p, mmap=mmap)
        try:
            data = read_regular_file(p)
        except OSError as e:
            raise InvalidInputError(f"index file {p} cannot be read: {e.strerror or e}") from e
        return cls.from_bytes(data, metric, factory, source=str(p))

    @classmethod
    def _load_dir(cls, p: Path, *, mmap: bool) -> EmbeddingIndex:
        from novelty.errors import ArtifactIntegrityError

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
                raise ArtifactIntegrityError(
                    f"{p / name}: sha256 {got} does not match {want} in {_META_FILE}"
                )
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
