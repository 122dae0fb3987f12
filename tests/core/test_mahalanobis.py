"""MahalanobisScorer against a numpy reference, its direction, its state round trip, the conformal contract."""

from __future__ import annotations

import numpy as np
import pytest

import novelty
from novelty.calibration import conformal_p_values
from novelty.errors import InvalidInputError, NotFittedError
from novelty.scorers import REGISTRY, MahalanobisScorer


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference(train: np.ndarray, labels: np.ndarray | None, q: np.ndarray, shrinkage: float) -> np.ndarray:
    """Squared Mahalanobis distance to the nearest class mean, with an explicit inverse."""
    x = train.astype(np.float64)
    y = np.zeros(len(x), int) if labels is None else labels
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / (len(x) - len(classes))
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / x.shape[1] * np.eye(x.shape[1])
    prec = np.linalg.inv(cov)
    d = q.astype(np.float64)[:, None, :] - means[None]
    return np.einsum("nkd,de,nke->nk", d, prec, d).min(axis=1)


@pytest.mark.parametrize("shrinkage", [0.0, 0.05, 0.5])
@pytest.mark.parametrize("with_labels", [False, True])
def test_equals_numpy_reference(rng, shrinkage, with_labels):
    train = unit(rng.normal(size=(400, 12)))
    labels = rng.integers(0, 3, 400) if with_labels else None
    q = unit(rng.normal(size=(30, 12)))
    s = MahalanobisScorer(shrinkage=shrinkage).fit(train, labels)
    np.testing.assert_allclose(s.score(q), reference(train, labels, q, shrinkage), rtol=1e-6, atol=1e-8)


def test_labels_are_ignored_when_not_class_conditional(rng):
    train = unit(rng.normal(size=(200, 8)))
    labels = rng.integers(0, 4, 200)
    q = unit(rng.normal(size=(10, 8)))
    a = MahalanobisScorer(class_conditional=False).fit(train, labels).score(q)
    b = MahalanobisScorer().fit(train).score(q)
    np.testing.assert_allclose(a, b)


def test_string_labels_and_higher_means_more_novel(rng):
    centres = rng.normal(size=(2, 16)) * 3
    y = rng.integers(0, 2, 300)
    train = unit(centres[y] + rng.normal(size=(300, 16)))
    between = unit(centres.mean(0) + 0.3 * rng.normal(size=(20, 16)))  # between the two classes
    inside = unit(centres[rng.integers(0, 2, 20)] + rng.normal(size=(20, 16)))
    s = MahalanobisScorer().fit(train, np.array(["wet", "dry"])[y])
    assert s.means_.shape == (2, 16)
    assert s.score(between).min() > np.median(s.score(inside))


def test_state_round_trip_and_errors(rng):
    train = unit(rng.normal(size=(100, 6)))
    s = MahalanobisScorer(shrinkage=0.2).fit(train, rng.integers(0, 2, 100))
    q = unit(rng.normal(size=(9, 6)))
    t = MahalanobisScorer.from_state(s.get_params(), s.state_arrays())
    np.testing.assert_array_equal(s.score(q), t.score(q))
    with pytest.raises(InvalidInputError, match="inconsistent"):
        MahalanobisScorer.from_state(s.get_params(), {"means": s.means_, "whiten": np.eye(3)})
    with pytest.raises(InvalidInputError, match="lacks"):
        MahalanobisScorer.from_state(s.get_params(), {"means": s.means_})
    with pytest.raises(NotFittedError):
        MahalanobisScorer().score(q)
    with pytest.raises(InvalidInputError, match="shrinkage"):
        MahalanobisScorer(shrinkage=1.5)
    with pytest.raises(InvalidInputError, match="one entry per embedding"):
        MahalanobisScorer().fit(train, np.zeros(5))
    with pytest.raises(InvalidInputError, match="no variance"):
        MahalanobisScorer(shrinkage=0.0).fit(np.ones((10, 4), dtype=np.float32))
    assert REGISTRY["mahalanobis"] is MahalanobisScorer


def test_false_alarms_at_alpha_on_held_out_in_distribution_data():
    """The conformal contract on exchangeable data: the flagged share of new in-distribution embeddings
    averages alpha (Monte Carlo over 40 draws)."""
    rates = []
    for seed in range(40):
        r = np.random.default_rng(seed)
        x = unit(r.normal(size=(900, 10)) * np.linspace(0.2, 2.0, 10))
        s = MahalanobisScorer().fit(x[:400], r.integers(0, 3, 400))
        p = conformal_p_values(s.score(x[400:600]), s.score(x[600:]))
        rates.append(np.mean(p < 0.05))
    assert 0.035 <= float(np.mean(rates)) <= 0.065


def test_round_trips_through_a_detector_artifact_with_labels(textile_embeddings, tmp_path):
    x = textile_embeddings["nominal"][:300]
    labels = np.arange(300) % 3  # any labels: the artifact must keep the class means
    det = novelty.NoveltyDetector(scorers=("knn", "mahalanobis"), head=False).fit_embeddings(x, labels)
    q = np.vstack([textile_embeddings["global"][:5], textile_embeddings["nominal"][600:605]])
    before = det.score_embeddings(q)
    out = det.save(tmp_path / "det")
    assert (out / "scorer_mahalanobis.safetensors").is_file()
    after = novelty.load(out).score_embeddings(q)
    np.testing.assert_array_equal(before.scores["mahalanobis"], after.scores["mahalanobis"])
    np.testing.assert_array_equal(before.p_value, after.p_value)
    assert det.scorers_[1].means_.shape[0] == 3
