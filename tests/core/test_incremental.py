"""Adding and removing training images of a fitted detector, then recalibrating (synthetic embeddings)."""

from __future__ import annotations

import numpy as np
import pytest

from novelty.detector import NoveltyDetector
from novelty.errors import InvalidInputError
from novelty.incremental import update_training_set


def clustered(n: int, seed: int, d: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(8, d))
    c = np.random.default_rng(98).normal(size=(10, 8)) * 3
    z = c[rng.integers(0, 10, n)] + rng.normal(size=(n, 8))
    return (z @ basis + 0.1 * rng.normal(size=(n, d))).astype(np.float32)


def kth_distance(q: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.linalg.norm(qn[:, None, :].astype(np.float64) - xn[None].astype(np.float64), axis=2)
    return np.sort(d, axis=1)[:, k - 1]


@pytest.mark.parametrize("index", ["flat", "ivf-flat"])
def test_add_remove_then_scores_match_the_new_training_set(index: str) -> None:
    x = clustered(2000, 0)
    det = NoveltyDetector(scorers=("knn", "knn-local"), index=index, alpha=0.1).fit_embeddings(
        x, ids=[f"a{i}" for i in range(2000)]
    )
    old_ids = list(det.train_ids_)
    train = {tid: x[int(tid[1:])] for tid in old_ids}
    new = clustered(300, 1)
    cal = clustered(400, 2)
    remove = old_ids[:50]
    update_training_set(
        det, add=new, add_ids=[f"b{i}" for i in range(300)], remove_ids=remove, calibration=cal
    )
    assert det.index_.ntotal == len(old_ids) - 50 + 300
    assert det.train_ids_[: len(old_ids) - 50] == old_ids[50:] and det.train_ids_[-1] == "b299"
    assert det.artifact_id_ is None and det.calibrator_.n == 400
    now = np.concatenate([np.stack([train[t] for t in old_ids[50:]]), new])
    q = clustered(100, 3)
    v = det.score_embeddings(q)
    k = det.scorers_[0].k
    np.testing.assert_allclose(v.scores["knn"], kth_distance(q, now, k), rtol=1e-5)
    # recalibrated: p-values hold on held-out in-distribution embeddings
    held = det.score_embeddings(clustered(1000, 4))
    assert 0.05 <= float(np.mean(held.p_value <= 0.1)) <= 0.15


def test_bad_updates_leave_the_detector_unchanged() -> None:
    x = clustered(600, 0)
    det = NoveltyDetector(scorers=("knn",)).fit_embeddings(x, ids=[f"a{i}" for i in range(600)])
    before = det.state_
    cal = clustered(100, 2)
    with pytest.raises(InvalidInputError, match="not training images"):
        update_training_set(det, remove_ids=["nope"], calibration=cal)
    with pytest.raises(InvalidInputError, match="add_ids"):
        update_training_set(det, add=clustered(5, 1), calibration=cal)
    with pytest.raises(InvalidInputError, match="new and unique"):
        update_training_set(det, add=clustered(1, 1), add_ids=[det.train_ids_[0]], calibration=cal)
    with pytest.raises(InvalidInputError, match="held out"):
        update_training_set(
            det,
            add=clustered(1, 1),
            add_ids=["n"],
            calibration=cal[:50],
            calibration_ids=["n"] + [f"c{i}" for i in range(49)],
        )
    assert det.state_ is before


def test_scorers_that_do_not_read_the_index_warn() -> None:
    x = clustered(600, 0)
    det = NoveltyDetector(scorers=("knn", "mahalanobis")).fit_embeddings(x)
    with pytest.warns(UserWarning, match="mahalanobis"):
        update_training_set(
            det, add=clustered(10, 1), add_ids=[f"n{i}" for i in range(10)], calibration=clustered(100, 2)
        )
