"""A FAISS index over embeddings that returns *true* Euclidean distances, exact or approximate.

- ``metric="cosine"`` (default): vectors are L2-normalised and searched by inner product;
  distances are ``‖q − x‖ = sqrt(2 − 2·q·x)`` on the unit sphere.
- ``metric="euclidean"``: raw vectors, searched by L2.

**Kinds** (``EmbeddingIndex(kind=…)``: ``flat``, ``ivf-flat``, ``ivf-pq``, ``opq``, ``hnsw``, ``auto``), resolved
for the number of vectors at the first ``add``/``build``: :mod:`novelty.index_plan`.

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

The vectors and their exact distances are :mod:`novelty.index_store`'s; saving and reading,
:mod:`novelty.index_files`'s.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from novelty.errors import InvalidInputError, NotFittedError
from novelty.fileio import read_regular_file
from novelty.index_files import index_from_bytes, load_index_dir, save_index
from novelty.index_plan import AUTO_FLAT_MAX, INDEX_KINDS, OPQ_MIN_TRAIN, IndexPlan, plan_index
from novelty.index_plan import default_nlist as default_nlist
from novelty.index_plan import default_pq_m as default_pq_m
from novelty.index_store import _npy_memmap, _Store, as_embeddings, brute_force, exact_distances

__all__ = ["AUTO_FLAT_MAX", "INDEX_KINDS", "EmbeddingIndex", "IndexPlan", "as_embeddings", "plan_index"]

_METRICS = ("cosine", "euclidean")


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
            if self.factory is None:
                raise InvalidInputError("a custom index needs a FAISS factory string")
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
        if self._index is None or self.plan_ is None:
            raise NotFittedError("the index is not built: add vectors first")
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
        if self._index is None:
            raise NotFittedError("the index is not built: add vectors first")
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
        if self._index is None:
            raise NotFittedError("the index could not be created")
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
        if self._index is None:
            raise NotFittedError("the index is not built: add vectors first")
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
            dist = exact_distances(qc, lambda rows: xb[rows], I)
            order = np.argsort(dist, axis=1, kind="stable")
            return np.take_along_axis(dist, order, axis=1), np.take_along_axis(I, order, axis=1)
        if self.metric == "cosine":
            return np.sqrt(np.clip(2.0 - 2.0 * raw.astype(np.float64), 0.0, None)), I
        return np.sqrt(np.clip(raw.astype(np.float64), 0.0, None)), I

    def _search_refined(
        self, qc: np.ndarray, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None or self._store is None or self.plan_ is None:
            raise NotFittedError("the index is not built: add vectors first")
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
        dist = exact_distances(qc, lambda rows: store.take(rows), safe)
        dist[~valid] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        dist = np.take_along_axis(dist, order, axis=1)
        I = np.take_along_axis(I, order, axis=1)
        short = np.flatnonzero(~np.isfinite(dist[:, -1]))
        for r in short:  # fewer than k candidates came back: answer this query by brute force
            exclude = None if own is None else int(own[r, 0])
            dist[r], I[r] = brute_force(store, qc[r], k, exclude)
        return dist, I

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
        return index_from_bytes(cls, data, metric, factory, source=source, meta=meta, store=store)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index atomically. An exact flat index is one file in FAISS's binary format; a refined
        kind is a directory: ``index.faiss``, ``vectors.npy`` (the store) and ``index.json`` (kind, plan and
        the sha256 of both files, checked by :meth:`load`). No pickle."""
        save_index(self, path)

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
            return load_index_dir(cls, p, mmap=mmap)
        try:
            data = read_regular_file(p)
        except OSError as e:
            raise InvalidInputError(f"index file {p} cannot be read: {e.strerror or e}") from e
        return cls.from_bytes(data, metric, factory, source=str(p))
