"""Greedy k-center (farthest-point) selection: the one loop behind the coreset of a patch memory bank
(:func:`novelty.patches.greedy_coreset`) and the flywheel's diversity selection
(:func:`novelty.flywheel.selection.k_center`).

Each step picks the point farthest from every centre chosen so far, then lowers each point's distance to its
nearest centre by its distance to the new one, so a step costs one distance from every point to one centre
(Sener & Savarese, 2018: the centres cover the points within twice the optimal radius). The points come in
``c`` independent chunks of ``l`` points, selected side by side (one chunk is the usual case). The distance is
pluggable: :class:`Cosine` (``1 − cos`` on L2-normalised rows, numpy) or :class:`SqEuclidean` (squared
Euclidean, batched over the chunks in torch); anything with their ``shape``, ``dtype`` and ``to`` will do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from novelty.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

__all__ = ["Cosine", "Distance", "SqEuclidean", "farthest_points"]


class Distance(Protocol):
    """Distances from the points of ``c`` chunks of ``l`` points each to one centre per chunk."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(c, l)``."""
        ...

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of the distances :meth:`to` returns."""
        ...

    def to(self, centres: np.ndarray) -> np.ndarray:
        """``(c, l)``: each point's distance to its chunk's centre, the point at ``centres[r]`` in chunk ``r``."""
        ...


class Cosine:
    """``1 − cos``, clipped to [0, 2], between the L2-normalised rows of ``x`` ``(l, p)`` (one chunk) or
    ``(c, l, p)``, in float32 (a zero row stays zero: distance 1 from everything)."""

    def __init__(self, x: np.ndarray) -> None:
        raw = np.ascontiguousarray(x, dtype=np.float32)
        if raw.ndim == 2:
            raw = raw[None]
        if raw.ndim != 3:
            raise InvalidInputError(f"points must be (l, p) or (c, l, p), got shape {raw.shape}")
        norms = np.linalg.norm(raw, axis=-1, keepdims=True)
        self.x = (raw / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape[0], self.x.shape[1]

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.float32)

    def to(self, centres: np.ndarray) -> np.ndarray:
        if self.x.shape[0] == 1:
            return np.clip(1.0 - self.x[0] @ self.x[0, centres[0]], 0.0, 2.0)[None]
        return np.stack([np.clip(1.0 - x @ x[i], 0.0, 2.0) for x, i in zip(self.x, centres, strict=True)])


class SqEuclidean:
    """Squared Euclidean distance (``‖a‖² − 2 a·b + ‖b‖²``, clamped at 0) between the rows of ``z`` ``(l, p)``
    (one chunk) or ``(c, l, p)``, in ``z``'s float dtype, batched over the chunks in torch (numpy or torch
    input; a torch tensor is used as it is, on its device: CPU)."""

    def __init__(self, z: np.ndarray | torch.Tensor) -> None:
        import torch

        t = torch.as_tensor(z)
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3:
            raise InvalidInputError(f"points must be (l, p) or (c, l, p), got shape {tuple(t.shape)}")
        self.z = t
        self.sq = (t * t).sum(-1)  # (c, l)
        self.rows = torch.arange(t.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.z.shape[0]), int(self.z.shape[1])

    @property
    def dtype(self) -> np.dtype[Any]:
        import torch

        return torch.empty(0, dtype=self.sq.dtype).numpy().dtype

    def to(self, centres: np.ndarray) -> np.ndarray:
        import torch

        i = torch.from_numpy(np.asarray(centres, dtype=np.int64))
        with torch.inference_mode():
            centre = self.z[self.rows, i]  # (c, p)
            d = self.sq - 2.0 * torch.bmm(self.z, centre[:, :, None])[..., 0] + self.sq[self.rows, i][:, None]
            return d.clamp_(min=0.0).numpy()


def farthest_points(
    dist: Distance,
    k: int,
    *,
    start: np.ndarray | None = None,
    covered: np.ndarray | None = None,
    radius: float | None = None,
    priority: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center: up to ``k`` picks (at most ``l``) in each of the chunks of ``dist``.

    Each step picks, in every chunk, the point farthest from the centres chosen so far (its distance to the
    nearest one), ties going to the lowest ``priority`` (``(l,)`` or ``(c, l)``; ``None``: the lowest position).
    ``start``: the first pick of each chunk ``(c,)``, else the first pick is by the same rule. ``covered``:
    each point's distance ``(l,)`` or ``(c, l)`` to centres chosen before, else none (``inf``); the nearest
    distances are kept in the dtype that holds both ``covered`` and ``dist``'s. ``radius``: a picked point,
    and from then on every point within ``radius`` of a pick, is no longer a candidate; the selection stops
    early, at the first step where a chunk has no candidate left (so each chunk has as many picks). Without
    ``radius`` a point can be picked again only once every point lies (up to rounding) at distance 0 from a
    centre.

    Returns ``(picks, distances)``, both ``(c, m)``: the positions picked in each chunk in order, and each
    one's distance to its nearest centre when it was picked (``inf`` for an uncovered first pick).
    """
    c, n = dist.shape
    k = max(0, min(int(k), n))
    if covered is None:
        mind = np.full((c, n), np.inf, dtype=dist.dtype)
    else:
        cov = np.asarray(covered)
        mind = np.array(np.broadcast_to(cov, (c, n)), dtype=np.result_type(cov.dtype, dist.dtype))
    prio = None if priority is None else np.broadcast_to(np.asarray(priority, dtype=np.float64), (c, n))
    alive = None if radius is None else np.ones((c, n), dtype=bool)
    limit = np.float64(radius or 0.0)  # compared in float64, whatever the distances' dtype
    rows = np.arange(c)
    picks = np.empty((c, k), dtype=np.int64)
    dists = np.empty((c, k), dtype=mind.dtype)
    for j in range(k):
        if j == 0 and start is not None:
            i = np.asarray(start, dtype=np.int64).reshape(c)
        elif alive is None and prio is None:
            i = np.argmax(mind, axis=1)
        else:
            if alive is not None and not alive.any(axis=1).all():
                return picks[:, :j], dists[:, :j]
            i = np.array([_best(mind[r], None if alive is None else alive[r], prio, r) for r in range(c)])
        picks[:, j] = i
        dists[:, j] = mind[rows, i]
        d = dist.to(i)
        np.minimum(mind, d, out=mind)
        if alive is not None:
            alive &= np.greater(d, limit)
            alive[rows, i] = False
    return picks, dists


def _best(mind: np.ndarray, alive: np.ndarray | None, prio: np.ndarray | None, r: int) -> int:
    """The candidate of one chunk farthest from the centres, ties to the lowest priority."""
    best = (mind if alive is None else mind[alive]).max()
    tied = np.flatnonzero(mind == best if alive is None else alive & (mind == best))
    return int(tied[0] if prio is None else tied[np.argmin(prio[r, tied])])
