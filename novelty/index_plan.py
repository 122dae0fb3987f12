"""Index kinds and what they resolve to (:func:`plan_index`): the FAISS factory string and the search
parameters an :class:`~novelty.index.EmbeddingIndex` of a kind gets for its number of vectors.

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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from novelty.errors import InvalidInputError

__all__ = [
    "AUTO_FLAT_MAX",
    "INDEX_KINDS",
    "OPQ_MIN_TRAIN",
    "IndexPlan",
    "default_nlist",
    "default_pq_m",
    "plan_index",
]

INDEX_KINDS = ("flat", "ivf-flat", "ivf-pq", "opq", "hnsw", "auto")
AUTO_FLAT_MAX = 200_000  # "auto" uses exact search up to this many vectors
OPQ_MIN_TRAIN = 1000
_DEFAULT_REFINE = {"flat": 0, "ivf-flat": 1, "ivf-pq": 80, "opq": 80, "hnsw": 1, "custom": 1}


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
