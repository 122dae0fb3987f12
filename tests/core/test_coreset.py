"""Greedy k-center (novelty.coreset): the core loop against a plain-Python reference for both distances, with
and without covered distances, radius, priority, start and several chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from novelty.coreset import Cosine, SqEuclidean, farthest_points
from novelty.errors import InvalidInputError


def cosine(a: list[float], b: list[float]) -> float:
    na, nb = math.sqrt(sum(v * v for v in a)) or 1.0, math.sqrt(sum(v * v for v in b)) or 1.0
    return min(2.0, max(0.0, 1.0 - sum(u * v for u, v in zip(a, b, strict=True)) / (na * nb)))


def sq_euclidean(a: list[float], b: list[float]) -> float:
    return sum((u - v) ** 2 for u, v in zip(a, b, strict=True))


def reference(points, k, dist, *, start=None, covered=None, radius=None, priority=None):
    """Farthest-point selection written plainly: lists, Python floats, the distances recomputed every step."""
    n = len(points)
    nearest = [math.inf] * n if covered is None else [float(v) for v in covered]
    alive = [True] * n
    prio = list(range(n)) if priority is None else [float(v) for v in priority]
    picks: list[int] = []
    dists: list[float] = []
    for j in range(min(k, n)):
        if j == 0 and start is not None:
            i = start
        else:
            cand = [p for p in range(n) if radius is None or alive[p]]
            if not cand:
                break
            # the farthest; ties: the lowest priority, then the lowest position
            i = max(cand, key=lambda p: (nearest[p], -prio[p], -p))
        picks.append(i)
        dists.append(nearest[i])
        for p in range(n):
            d = dist(points[p], points[i])
            nearest[p] = min(nearest[p], d)
            if radius is not None and (p == i or d <= radius):
                alive[p] = False
    return picks, dists


@pytest.mark.parametrize("seed", range(6))
def test_cosine_equals_the_plain_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(70, 5)).astype(np.float32)
    x[3] = 0.0  # a zero row: distance 1 from everything
    covered = None if seed % 2 else rng.uniform(0.0, 1.5, size=70)
    radius = [None, 0.0, 0.25][seed % 3]
    priority = rng.permutation(70).astype(np.float64)
    picks, dists = farthest_points(Cosine(x), 30, covered=covered, radius=radius, priority=priority)
    ref_picks, ref_dists = reference(
        x.tolist(), 30, cosine, covered=covered, radius=radius, priority=priority.tolist()
    )
    assert picks.shape == dists.shape == (1, len(ref_picks))
    assert picks[0].tolist() == ref_picks
    np.testing.assert_allclose(dists[0], ref_dists, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_squared_euclidean_equals_the_plain_reference_in_every_chunk(seed):
    rng = np.random.default_rng(100 + seed)
    x = rng.integers(-3, 4, size=(3, 60, 4)).astype(np.float32)  # small integers: exact distances, many ties
    start = rng.integers(60, size=3) if seed % 2 else None
    covered = None if seed % 3 else rng.integers(0, 30, size=(3, 60)).astype(np.float64)
    priority = None if seed < 3 else rng.permutation(60).astype(np.float64)
    radius = None if seed % 4 else 2.0
    dist = SqEuclidean(torch.from_numpy(x)) if seed % 2 else SqEuclidean(x)
    picks, dists = farthest_points(dist, 25, start=start, covered=covered, radius=radius, priority=priority)
    refs = [
        reference(
            x[r].tolist(),
            25,
            sq_euclidean,
            start=None if start is None else int(start[r]),
            covered=None if covered is None else covered[r],
            radius=radius,
            priority=None if priority is None else priority.tolist(),
        )
        for r in range(3)
    ]
    m = min(len(p) for p, _ in refs)  # with a radius every chunk stops when the first one runs out
    assert picks.shape == (3, m if radius is not None else 25)
    for r, (ref_picks, ref_dists) in enumerate(refs):
        assert picks[r].tolist() == ref_picks[: picks.shape[1]]
        assert dists[r].tolist() == ref_dists[: picks.shape[1]]


def test_chunks_side_by_side_equal_each_chunk_alone(rng):
    x = rng.normal(size=(4, 500, 8)).astype(np.float32)
    start = rng.integers(500, size=4)
    together, _ = farthest_points(SqEuclidean(x), 40, start=start)
    alone = [farthest_points(SqEuclidean(x[r]), 40, start=start[r : r + 1])[0][0] for r in range(4)]
    np.testing.assert_array_equal(together, np.stack(alone))
    assert together.dtype == np.int64 and all(len(set(row.tolist())) == 40 for row in together)


def test_edge_cases():
    x = np.eye(3, dtype=np.float32)
    picks, dists = farthest_points(Cosine(x), 10, priority=np.array([2.0, 0.0, 1.0]))
    assert picks.tolist() == [[1, 2, 0]]  # at most l picks, ties by priority (all at distance 1)
    assert dists[0, 0] == np.inf and dists[0, 1:].tolist() == [1.0, 1.0]
    assert farthest_points(Cosine(x), 0)[0].shape == (1, 0)
    # every point within the radius of the first pick: one pick
    assert farthest_points(Cosine(x), 3, radius=1.5)[0].tolist() == [[0]]
    with pytest.raises(InvalidInputError):
        Cosine(np.zeros(3))
    with pytest.raises(InvalidInputError):
        SqEuclidean(np.zeros((1, 2, 3, 4)))
