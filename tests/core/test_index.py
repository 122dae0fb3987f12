"""EmbeddingIndex against a numpy brute-force reference (exact distances, self-exclusion, errors)."""

from __future__ import annotations

import numpy as np
import pytest

from novelty import EmbeddingIndex
from novelty.errors import DimensionMismatchError, InvalidInputError, NotFittedError


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(
    db: np.ndarray, q: np.ndarray, k: int, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - db[None, :, :].astype(np.float64)) ** 2).sum(-1))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    ids = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, ids, axis=1), ids


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 5, 17])
def test_search_matches_brute_force(rng, metric, k):
    db = rng.normal(size=(500, 32)).astype(np.float32)
    q = rng.normal(size=(60, 32)).astype(np.float32)
    if metric == "cosine":
        db, q = unit(db), unit(q)
    index = EmbeddingIndex(metric=metric).add(db)
    D, I = index.search(q, k)
    D_ref, I_ref = brute_force(db, q, k)
    assert D.shape == I.shape == (60, k)
    np.testing.assert_allclose(D, D_ref, atol=1e-5)
    assert (I_ref == I).mean() > 0.999


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exclude_self_matches_brute_force(rng, metric):
    db = rng.normal(size=(400, 24)).astype(np.float32)
    if metric == "cosine":
        db = unit(db)
    index = EmbeddingIndex(metric=metric).add(db)
    D, I = index.search(db, 7, exclude_self=True)
    D_ref, _ = brute_force(db, db, 7, exclude_self=True)
    np.testing.assert_allclose(D, D_ref, atol=1e-5)
    assert not (np.arange(400)[:, None] == I).any(), "an item was returned as its own neighbour"
    # without exclusion every item is its own nearest neighbour at distance 0
    D0, I0 = index.search(db, 1)
    assert (I0[:, 0] == np.arange(400)).all()
    np.testing.assert_allclose(D0[:, 0], 0.0, atol=1e-6)


def test_exclude_self_with_exact_duplicates(rng):
    base = unit(rng.normal(size=(50, 16)).astype(np.float32))
    db = np.concatenate([base, base])  # every vector twice
    D, I = EmbeddingIndex().add(db).search(db, 3, exclude_self=True)
    assert not (np.arange(100)[:, None] == I).any()
    np.testing.assert_allclose(D[:, 0], 0.0, atol=1e-6)  # the duplicate is the nearest other item
    assert ((I[:, 0] - np.arange(100)) % 50 == 0).all()


def test_distances_are_not_squared():
    db = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    D, _ = EmbeddingIndex(metric="euclidean").add(db).search(np.array([[4.0, 0.0]], dtype=np.float32), 2)
    np.testing.assert_allclose(D[0], [3.0, np.sqrt(17.0)], rtol=1e-6)


def test_near_duplicate_distances_are_precise(rng):
    x = unit(rng.normal(size=(1, 256)).astype(np.float32))
    y = unit(x + 1e-4 * rng.normal(size=x.shape).astype(np.float32))
    D, _ = EmbeddingIndex().add(x).search(y, 1)
    ref = np.linalg.norm(x.astype(np.float64) - y.astype(np.float64))
    assert abs(D[0, 0] - ref) < 1e-7


def test_cosine_does_not_modify_caller_arrays(rng):
    db = rng.normal(size=(20, 8)).astype(np.float32) * 3
    before = db.copy()
    EmbeddingIndex().add(db).search(db, 2)
    np.testing.assert_array_equal(db, before)


def test_errors(rng):
    index = EmbeddingIndex()
    with pytest.raises(NotFittedError):
        index.search(np.ones((1, 4), np.float32), 1)
    index.add(unit(rng.normal(size=(10, 4))))
    with pytest.raises(DimensionMismatchError, match="dimension 5"):
        index.search(np.ones((1, 5), np.float32), 1)
    with pytest.raises(DimensionMismatchError):
        index.add(np.ones((2, 3), np.float32))
    with pytest.raises(InvalidInputError, match="only 10"):
        index.search(np.ones((1, 4), np.float32), 11)
    with pytest.raises(InvalidInputError, match="only 9"):
        index.search(index.vectors(), 10, exclude_self=True)
    with pytest.raises(InvalidInputError, match="NaN"):
        index.search(np.full((1, 4), np.nan, np.float32), 1)
    with pytest.raises(InvalidInputError, match="all-zero"):
        index.search(np.zeros((1, 4), np.float32), 1)
    with pytest.raises(InvalidInputError, match="metric"):
        EmbeddingIndex(metric="manhattan")


def test_save_load_roundtrip(tmp_path, rng):
    db = unit(rng.normal(size=(100, 16)).astype(np.float32))
    q = unit(rng.normal(size=(10, 16)).astype(np.float32))
    index = EmbeddingIndex().add(db)
    index.save(tmp_path / "i.faiss")
    loaded = EmbeddingIndex.load(tmp_path / "i.faiss")
    for a, b in zip(index.search(q, 5), loaded.search(q, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InvalidInputError, match="metric"):
        EmbeddingIndex.load(tmp_path / "i.faiss", metric="euclidean")


def test_approximate_factory_agrees_mostly(rng):
    db = unit(rng.normal(size=(2000, 32)).astype(np.float32))
    q = unit(rng.normal(size=(50, 32)).astype(np.float32))
    D, I = EmbeddingIndex(factory="HNSW32").add(db).search(q, 5)
    D_ref, I_ref = brute_force(db, q, 5)
    assert (I[:, 0] == I_ref[:, 0]).mean() > 0.9
    np.testing.assert_allclose(D[I_ref == I], D_ref[I_ref == I], atol=1e-4)
