"""LogitScorer: against scikit-learn's logistic regression, its direction, labels required, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

import novelty
from novelty.calibration import conformal_p_values
from novelty.errors import InvalidInputError
from novelty.scorers import REGISTRY, LogitScorer


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(rng: np.random.Generator, n: int, classes: int = 3, d: int = 12, spread: float = 0.6):
    centres = rng.normal(size=(classes + 1, d)) * 2
    y = rng.integers(0, classes, n)
    return unit(centres[y] + spread * rng.normal(size=(n, d))), y, centres


def test_logits_match_scikit_learn_logistic_regression(rng):
    from sklearn.linear_model import LogisticRegression

    x, y, _ = blobs(rng, 300)
    l2 = 1e-2
    s = LogitScorer(l2=l2).fit(x, y)
    # sklearn minimises 0.5 |w|^2 + C sum(loss); ours mean(loss) + 0.5 l2 |w|^2  →  C = 1 / (l2 n)
    ref = LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-10, max_iter=5000).fit(x, y)
    q = unit(rng.normal(size=(20, 12)))
    ours = s.logits(q)
    theirs = ref.decision_function(q)
    # multinomial logits are defined up to a constant per row
    np.testing.assert_allclose(
        ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True), atol=2e-3
    )


@pytest.mark.parametrize("kind", ["max-logit", "energy"])
def test_a_new_class_scores_higher(rng, kind):
    x, y, centres = blobs(rng, 400)
    s = LogitScorer(score=kind).fit(x, np.array(["a", "b", "c"])[y])
    new = unit(centres[3] + 0.6 * rng.normal(size=(30, 12)))
    known = unit(centres[rng.integers(0, 3, 30)] + 0.6 * rng.normal(size=(30, 12)))
    assert np.median(s.score(new)) > np.quantile(s.score(known), 0.9)
    z = s.logits(known)
    expected = -z.max(1) if kind == "max-logit" else -np.log(np.exp(z).sum(1))
    np.testing.assert_allclose(s.score(known), expected, rtol=1e-10)


def test_needs_labels_of_two_classes_and_checks_parameters(rng):
    x, _, _ = blobs(rng, 50)
    with pytest.raises(InvalidInputError, match="needs class labels"):
        LogitScorer().fit(x)
    with pytest.raises(InvalidInputError, match="at least two classes"):
        LogitScorer().fit(x, np.zeros(50))
    with pytest.raises(InvalidInputError, match="score"):
        LogitScorer(score="softmax")
    with pytest.raises(InvalidInputError, match="l2"):
        LogitScorer(l2=-1.0)
    assert REGISTRY["logit"] is LogitScorer and LogitScorer.requires_labels


def test_state_round_trip(rng):
    x, y, _ = blobs(rng, 120)
    s = LogitScorer(score="energy").fit(x, y)
    t = LogitScorer.from_state(s.get_params(), s.state_arrays())
    q = unit(rng.normal(size=(9, 12)))
    np.testing.assert_array_equal(s.score(q), t.score(q))
    assert t.get_params() == {"score": "energy", "l2": 1e-4, "max_iter": 100}
    with pytest.raises(InvalidInputError, match="inconsistent"):
        LogitScorer.from_state(s.get_params(), {"weight": s.weight_, "bias": np.zeros(7)})
    with pytest.raises(InvalidInputError, match="lacks"):
        LogitScorer.from_state(s.get_params(), {"weight": s.weight_})


def test_false_alarms_at_alpha_on_held_out_in_distribution_data():
    rates = []
    for seed in range(30):
        r = np.random.default_rng(seed)
        x, y, _ = blobs(r, 900, spread=1.0)
        s = LogitScorer(max_iter=20).fit(x[:400], y[:400])  # the guarantee holds however far it trained
        p = conformal_p_values(s.score(x[400:600]), s.score(x[600:]))
        rates.append(np.mean(p < 0.05))
    assert 0.035 <= float(np.mean(rates)) <= 0.065


def test_a_detector_without_labels_says_the_logit_scorer_needs_them(textile_embeddings):
    with pytest.raises(InvalidInputError, match="needs class labels"):
        novelty.NoveltyDetector(scorers=("logit",)).fit_embeddings(textile_embeddings["nominal"][:100])


def test_round_trips_through_a_detector_artifact_with_labels(textile_embeddings, tmp_path):
    x = textile_embeddings["nominal"][:300]
    labels = np.arange(300) % 3
    det = novelty.NoveltyDetector(scorers=("knn", "logit"), head=False).fit_embeddings(x, labels)
    q = np.vstack([textile_embeddings["global"][:5], textile_embeddings["nominal"][600:605]])
    before = det.score_embeddings(q)
    out = det.save(tmp_path / "det")
    assert (out / "scorer_logit.safetensors").is_file()
    after = novelty.load(out).score_embeddings(q)
    np.testing.assert_array_equal(before.scores["logit"], after.scores["logit"])
    np.testing.assert_array_equal(before.p_value, after.p_value)


@pytest.mark.slow
def test_near_ood_on_real_fashion_mnist(embedder, bench_cache_dir, monkeypatch):
    """Real images, real labels: Fashion-MNIST without shirt and ankle boot (small size). The classifier's
    max-logit separates the two held-out classes better than the plain kNN distance, and both stay calibrated."""
    from benchmarks.ood import EmbeddingCache, build_scenarios
    from novelty.metrics import auroc

    monkeypatch.setenv("NOVELTY_CACHE", bench_cache_dir)
    (sc,) = build_scenarios(["fmnist-near"], size="small")
    cache = EmbeddingCache(embedder, progress=False)
    x = cache.get(sc.fit.pool, sc.fit.index)
    x_in = cache.get(sc.test_in.pool, sc.test_in.index)
    (part,) = sc.test_out.values()
    x_out = cache.get(part.pool, part.index)
    result = {}
    for scorers in (("knn",), ("logit",)):
        det = novelty.NoveltyDetector(scorers=scorers, head=False, calibration_fraction=0.3)
        det.fit_embeddings(x, list(sc.fit.labels))
        v_in = det.score_embeddings(x_in)
        result[scorers[0]] = auroc(v_in.score, det.score_embeddings(x_out).score)
        assert 0.0 <= float(np.mean(v_in.is_novel)) <= 0.15  # ~160 test images, ~100 calibration images
    assert result["logit"] > result["knn"]
    assert result["logit"] > 0.75
