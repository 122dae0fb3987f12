"""Scorer contract for every registered scorer, and kNN against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from novelty.errors import InvalidInputError, NotFittedError, UnknownNameError
from novelty.scorers import REGISTRY, KNNScorer, LocalKNNScorer, Scorer, create_scorer


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def knn_reference(
    train: np.ndarray, q: np.ndarray, k: int, aggregate: str, exclude_self: bool = False
) -> np.ndarray:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - train[None].astype(np.float64)) ** 2).sum(-1))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    d = np.sort(d, axis=1)[:, :k]
    return d[:, -1] if aggregate == "kth" else d.mean(axis=1)


@pytest.mark.parametrize("aggregate", ["kth", "mean"])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_equals_numpy_reference(rng, k, aggregate):
    train = unit(rng.normal(size=(300, 48)))
    q = unit(rng.normal(size=(40, 48)))
    s = KNNScorer(k=k, aggregate=aggregate).fit(train)
    np.testing.assert_allclose(s.score(q), knn_reference(train, q, k, aggregate), atol=1e-5)
    np.testing.assert_allclose(s.score_training(), knn_reference(train, train, k, aggregate, True), atol=1e-5)


def test_knn_higher_means_more_novel(rng):
    train = unit(rng.normal(size=(200, 16)) + 5.0)  # a tight cluster
    near = unit(rng.normal(size=(20, 16)) + 5.0)
    far = unit(rng.normal(size=(20, 16)) - 5.0)
    s = KNNScorer(k=5).fit(train)
    assert s.score(far).min() > s.score(near).max()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_scorer_contract(rng, name):
    scorer = create_scorer(name)
    assert isinstance(scorer, Scorer) and scorer.name == name
    with pytest.raises(NotFittedError):
        scorer.score(unit(rng.normal(size=(2, 8))))
    train = unit(rng.normal(size=(100, 8)))
    assert scorer.fit(train) is scorer
    out = scorer.score(unit(rng.normal(size=(7, 8))))
    assert out.shape == (7,) and out.dtype == np.float64 and np.isfinite(out).all()
    assert type(scorer)(**scorer.get_params()).get_params() == scorer.get_params()


def test_registry_errors():
    with pytest.raises(UnknownNameError, match="registered: autoencoder, knn, knn-local"):
        create_scorer("nope")
    with pytest.raises(InvalidInputError, match="aggregate"):
        KNNScorer(aggregate="median").fit(np.eye(4, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="k=5 needs more than 5"):
        KNNScorer(k=5).fit(np.eye(4, dtype=np.float32))


def test_local_knn_equals_numpy_reference(rng):
    train = unit(rng.normal(size=(250, 24)))
    q = unit(rng.normal(size=(30, 24)))
    k = 7
    s = LocalKNNScorer(k=k).fit(train)
    d_tr = np.sqrt(((train[:, None].astype(np.float64) - train[None]) ** 2).sum(-1))
    np.fill_diagonal(d_tr, np.inf)
    kth_tr = np.sort(d_tr, axis=1)[:, k - 1]
    d_q = np.sqrt(((q[:, None].astype(np.float64) - train[None]) ** 2).sum(-1))
    nn = np.argsort(d_q, axis=1)[:, :k]
    ref = np.sort(d_q, axis=1)[:, k - 1] / (kth_tr[nn].mean(axis=1) + 1e-6)
    np.testing.assert_allclose(s.score(q), ref, rtol=1e-4)
    np.testing.assert_allclose(s.kth_distance_, kth_tr, atol=1e-5)


def test_local_knn_compares_like_with_like(rng):
    """A tight and a loose cluster: a point just outside the tight one is more novel than a typical point of
    the loose one, although its plain kNN distance is smaller."""
    tight = rng.normal(size=(200, 8)) * 0.05
    loose = rng.normal(size=(200, 8)) * 1.0 + 10.0
    train = np.vstack([tight, loose]).astype(np.float32)
    edge_of_tight = (rng.normal(size=(20, 8)) * 0.05 + 0.6).astype(np.float32)
    inside_loose = (rng.normal(size=(20, 8)) * 1.0 + 10.0).astype(np.float32)
    plain = KNNScorer(k=10, metric="euclidean").fit(train)
    local = LocalKNNScorer(k=10, metric="euclidean").fit(train)
    assert np.median(plain.score(edge_of_tight)) < np.median(plain.score(inside_loose))
    assert local.score(edge_of_tight).min() > local.score(inside_loose).max()
