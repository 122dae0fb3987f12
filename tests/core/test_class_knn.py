"""ClassKNNScorer ("knn-per-class") against brute force, its relation to plain kNN, and its round trip."""

from __future__ import annotations

import numpy as np
import pytest

import novelty
from novelty.calibration import conformal_p_values
from novelty.errors import InvalidInputError
from novelty.index import EmbeddingIndex
from novelty.scorers import REGISTRY, ClassKNNScorer, KNNScorer


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference(train: np.ndarray, labels: np.ndarray, q: np.ndarray, k: int, aggregate: str) -> np.ndarray:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - train[None].astype(np.float64)) ** 2).sum(-1))
    per_class = []
    for c in np.unique(labels):
        dc = np.sort(d[:, labels == c], axis=1)[:, : min(k, int((labels == c).sum()))]
        per_class.append(dc[:, -1] if aggregate == "kth" else dc.mean(axis=1))
    return np.min(per_class, axis=0)


@pytest.mark.parametrize("aggregate", ["kth", "mean"])
@pytest.mark.parametrize("k", [1, 4, 10])
def test_equals_brute_force(rng, k, aggregate):
    train = unit(rng.normal(size=(300, 20)))
    labels = rng.integers(0, 4, 300)
    labels[:3] = 7  # a class smaller than k uses all its members
    q = unit(rng.normal(size=(25, 20)))
    s = ClassKNNScorer(k=k, aggregate=aggregate).fit(train, labels)
    np.testing.assert_allclose(s.score(q), reference(train, labels, q, k, aggregate), atol=1e-5)


@pytest.mark.parametrize("aggregate", ["kth", "mean"])
def test_without_labels_it_is_plain_knn_and_k1_ignores_classes(rng, aggregate):
    train = unit(rng.normal(size=(200, 16)))
    q = unit(rng.normal(size=(30, 16)))
    np.testing.assert_allclose(
        ClassKNNScorer(k=5, aggregate=aggregate).fit(train).score(q),
        KNNScorer(k=5, aggregate=aggregate).fit(train).score(q),
        atol=1e-6,
    )
    labels = rng.integers(0, 3, 200)
    np.testing.assert_allclose(
        ClassKNNScorer(k=1).fit(train, labels).score(q), KNNScorer(k=1).fit(train).score(q), atol=1e-6
    )


def test_a_new_class_is_more_novel_than_the_known_ones(rng):
    centres = rng.normal(size=(3, 16)) * 2
    y = rng.integers(0, 2, 400)
    train = unit(centres[y] + 0.5 * rng.normal(size=(400, 16)))
    new = unit(centres[2] + 0.5 * rng.normal(size=(20, 16)))
    inside = unit(centres[rng.integers(0, 2, 20)] + 0.5 * rng.normal(size=(20, 16)))
    s = ClassKNNScorer(k=10).fit(train, y)
    assert s.score(new).min() > s.score(inside).max()


def test_state_round_trip_through_the_shared_index_and_errors(rng):
    train = unit(rng.normal(size=(120, 8)))
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, 120)]
    index = EmbeddingIndex().add(train)
    s = ClassKNNScorer(k=3).fit(train, labels, index=index)
    q = unit(rng.normal(size=(7, 8)))
    t = ClassKNNScorer.from_state(s.get_params(), s.state_arrays(), index=index)
    np.testing.assert_array_equal(s.score(q), t.score(q))
    with pytest.raises(InvalidInputError, match="needs the detector's index"):
        ClassKNNScorer.from_state(s.get_params(), s.state_arrays())
    with pytest.raises(InvalidInputError, match="codes"):
        ClassKNNScorer.from_state(s.get_params(), {"codes": np.zeros(5, np.int64)}, index=index)
    with pytest.raises(InvalidInputError, match="codes"):
        ClassKNNScorer.from_state(s.get_params(), {"codes": np.full(120, 2, np.int64)}, index=index)
    with pytest.raises(InvalidInputError, match="aggregate"):
        ClassKNNScorer(aggregate="max")
    with pytest.raises(InvalidInputError, match="shared index"):
        ClassKNNScorer().fit(train, labels, index=EmbeddingIndex().add(train[:50]))
    assert REGISTRY["knn-per-class"] is ClassKNNScorer


def test_false_alarms_at_alpha_on_held_out_in_distribution_data():
    rates = []
    for seed in range(40):
        r = np.random.default_rng(seed)
        centres = r.normal(size=(3, 10)) * 2
        y = r.integers(0, 3, 900)
        x = unit(centres[y] + r.normal(size=(900, 10)))
        s = ClassKNNScorer(k=5).fit(x[:400], y[:400])
        p = conformal_p_values(s.score(x[400:600]), s.score(x[600:]))
        rates.append(np.mean(p < 0.05))
    assert 0.035 <= float(np.mean(rates)) <= 0.065


def test_round_trips_through_a_detector_artifact_with_labels(textile_embeddings, tmp_path):
    x = textile_embeddings["nominal"][:300]
    labels = np.arange(300) % 3
    det = novelty.NoveltyDetector(scorers=("knn-per-class",), head=False).fit_embeddings(x, labels)
    q = np.vstack([textile_embeddings["global"][:5], textile_embeddings["nominal"][600:605]])
    before = det.score_embeddings(q)
    out = det.save(tmp_path / "det")
    assert (out / "scorer_knn-per-class.safetensors").is_file()
    after = novelty.load(out).score_embeddings(q)
    np.testing.assert_array_equal(before.scores["knn-per-class"], after.scores["knn-per-class"])
    np.testing.assert_array_equal(before.p_value, after.p_value)
