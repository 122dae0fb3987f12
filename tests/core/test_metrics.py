from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from novelty.errors import InvalidInputError
from novelty.metrics import (
    aupr_in,
    aupr_out,
    auroc,
    detection_metrics,
    false_alarm_rate,
    flagged_share,
    fpr_at_tpr,
    roc_curve,
)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = np.round(rng.normal(size=120), 1)  # with ties
    b = np.round(rng.normal(0.7, size=80), 1)
    ref = roc_auc_score(np.r_[np.zeros(a.size), np.ones(b.size)], np.r_[a, b])
    assert auroc(a, b) == pytest.approx(ref, abs=1e-12)


def test_auroc_hand_cases():
    assert auroc([0, 1], [2, 3]) == 1.0
    assert auroc([2, 3], [0, 1]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    with pytest.raises(InvalidInputError):
        auroc([], [1])


def test_flagged_share():
    assert flagged_share(np.array([0.01, 0.04, 0.05, 0.5]), 0.05) == 0.5


def _sample(seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=150)
    b = rng.normal(0.8, size=60)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return a, b


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_aupr_matches_sklearn(seed, ties):
    a, b = _sample(seed, ties)
    y_out = np.r_[np.zeros(a.size), np.ones(b.size)]
    s = np.r_[a, b]
    assert aupr_out(a, b) == pytest.approx(average_precision_score(y_out, s), abs=1e-12)
    assert aupr_in(a, b) == pytest.approx(average_precision_score(1 - y_out, -s), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tpr", [0.5, 0.9, 0.95, 1.0])
def test_fpr_at_tpr_matches_sklearn_roc(seed, ties, tpr):
    a, b = _sample(seed, ties)
    fpr, tprs, _ = sk_roc_curve(
        np.r_[np.zeros(a.size), np.ones(b.size)], np.r_[a, b], drop_intermediate=False
    )
    ref = fpr[np.argmax(tprs >= tpr - 1e-12)]
    assert fpr_at_tpr(a, b, tpr) == pytest.approx(ref, abs=1e-12)


def test_detection_metrics_hand_case():
    # novel scores 3, 4, 5, 6 (and one 0.5); in-distribution 0, 1, 2, 3.5
    inn = np.array([0.0, 1.0, 2.0, 3.5])
    out = np.array([0.5, 3.0, 4.0, 5.0, 6.0])
    m = detection_metrics(inn, out)
    # pairs (out > in): 0.5 beats 1; 3 beats 3; 4, 5, 6 beat 4 each → 16 of 20
    assert m["auroc"] == pytest.approx(16 / 20)
    # ranking by score: 6 5 4 3.5(in) 3 2(in) 1(in) 0.5 0(in)
    # precision at each novel hit: 1, 1, 1, 4/5, 5/8 → AP = (1 + 1 + 1 + 0.8 + 0.625) / 5
    assert m["aupr_out"] == pytest.approx((3 + 0.8 + 0.625) / 5)
    # 95 % of 5 novel images → all 5 → threshold 0.5 → in-distribution 1, 2, 3.5 flagged: 3 of 4
    assert m["fpr95"] == pytest.approx(0.75)
    # 80 % → 4 of 5 → threshold 3.0 → only 3.5 flagged
    assert fpr_at_tpr(inn, out, 0.8) == pytest.approx(0.25)
    # in-distribution as positives, lowest score first: 0(in) 0.5 1(in) 2(in) 3 3.5(in) 4 5 6
    # precision at each in-distribution hit: 1, 2/3, 3/4, 4/6
    assert m["aupr_in"] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 6) / 4)


def test_perfect_and_inverted_separation():
    m = detection_metrics([0, 1, 2], [3, 4])
    assert m == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    m = detection_metrics([3, 4], [0, 1, 2])
    assert m["auroc"] == 0.0 and m["fpr95"] == 1.0


def test_metric_input_errors():
    with pytest.raises(InvalidInputError, match="at least one"):
        aupr_out([], [1.0])
    with pytest.raises(InvalidInputError, match="NaN"):
        fpr_at_tpr([np.nan], [1.0])
    with pytest.raises(InvalidInputError, match="tpr"):
        fpr_at_tpr([0.0], [1.0], tpr=0.0)
    with pytest.raises(InvalidInputError, match="alpha"):
        false_alarm_rate(np.array([0.5]), 1.5)


def test_false_alarm_rate():
    p = np.r_[np.full(9, 0.01), np.full(190, 0.5), 0.05]  # p = alpha is not flagged
    assert false_alarm_rate(p, 0.05) == pytest.approx(9 / 200)


@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_matches_sklearn(ties):
    a, b = _sample(7, ties)
    fpr, tpr = roc_curve(a, b)
    ref_fpr, ref_tpr, _ = sk_roc_curve(
        np.r_[np.zeros(a.size), np.ones(b.size)], np.r_[a, b], drop_intermediate=False
    )
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(a, b), abs=1e-12)
