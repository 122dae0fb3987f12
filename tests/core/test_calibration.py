"""Conformal p-values: the formula, and the false-alarm guarantee on exchangeable data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from novelty.calibration import ConformalCalibrator, MultiScorerCalibrator, conformal_p_values
from novelty.errors import CalibrationError, InvalidInputError


def test_p_value_formula_against_brute_force(rng):
    cal = np.round(rng.normal(size=200), 1)  # ties on purpose
    s = np.round(rng.normal(size=300) * 1.5, 1)
    ref = np.array([(1 + (cal >= v).sum()) / (len(cal) + 1) for v in s])
    np.testing.assert_allclose(conformal_p_values(cal, s), ref)
    np.testing.assert_allclose(ConformalCalibrator().fit(cal).p_values(s), ref)


def test_p_value_extremes():
    cal = np.arange(9.0)
    p = conformal_p_values(cal, np.array([100.0, -100.0, 4.0]))
    np.testing.assert_allclose(p, [0.1, 1.0, 0.6])


def test_threshold_agrees_with_p_values(rng):
    c = ConformalCalibrator().fit(rng.normal(size=99))
    for alpha in (0.01, 0.05, 0.1, 0.3):
        t = c.threshold(alpha)
        grid = np.linspace(-4, 4, 2001)
        flagged = grid[c.p_values(grid) < alpha]
        assert (flagged.min() if flagged.size else np.inf) >= t
        if flagged.size:
            assert c.p_values(np.array([t]))[0] < alpha


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_false_alarm_rate_guarantee(alpha):
    """Over many exchangeable draws, P(p < alpha) ≤ alpha (checked to Monte-Carlo precision)."""
    rng = np.random.default_rng(1)
    rates = []
    for _ in range(400):
        cal, test = rng.gamma(2.0, size=100), rng.gamma(2.0, size=100)
        rates.append((conformal_p_values(cal, test) < alpha).mean())
    assert np.mean(rates) <= alpha + 0.003
    assert np.mean(rates) >= alpha - 0.02  # not absurdly conservative either


def test_combined_p_values_keep_the_guarantee():
    rng = np.random.default_rng(2)
    rates = []
    for _ in range(300):
        cal = {"a": rng.normal(size=150), "b": rng.exponential(size=150)}
        test = {"a": rng.normal(size=150), "b": rng.exponential(size=150)}
        p, per = MultiScorerCalibrator().fit(cal).p_values(test)
        assert set(per) == {"a", "b"}
        rates.append((p < 0.05).mean())
    assert abs(np.mean(rates) - 0.05) < 0.01


def test_combined_detects_what_either_scorer_sees():
    rng = np.random.default_rng(3)
    cal = {"a": rng.normal(size=300), "b": rng.normal(size=300)}
    mc = MultiScorerCalibrator().fit(cal)
    p, _ = mc.p_values({"a": np.array([0.0, 6.0, 0.0]), "b": np.array([0.0, 0.0, 6.0])})
    assert p[0] > 0.1 and p[1] < 0.01 and p[2] < 0.01


def test_errors():
    with pytest.raises(CalibrationError):
        ConformalCalibrator().fit(np.array([]))
    with pytest.raises(InvalidInputError, match="NaN"):
        conformal_p_values(np.array([1.0, np.nan]), np.array([0.0]))
    with pytest.raises(CalibrationError, match="different numbers"):
        MultiScorerCalibrator().fit({"a": np.ones(3), "b": np.ones(4)})


def test_combined_state_round_trip_keeps_the_pairing():
    rng = np.random.default_rng(4)
    a = rng.normal(size=200)
    cal = {"a": a, "b": a + 0.1 * rng.normal(size=200)}  # strongly paired scorers
    mc = MultiScorerCalibrator().fit(cal)
    back = MultiScorerCalibrator.from_state(["a", "b"], mc.state_arrays())
    test = {"a": rng.normal(size=50) * 2, "b": rng.normal(size=50) * 2}
    np.testing.assert_array_equal(mc.p_values(test)[0], back.p_values(test)[0])
    np.testing.assert_array_equal(mc.combined_scores(test), back.combined_scores(test))


def test_single_scorer_combined_is_the_scorer_itself(rng):
    cal = rng.normal(size=99)
    mc = MultiScorerCalibrator().fit({"knn": cal})
    s = rng.normal(size=20)
    np.testing.assert_array_equal(mc.combined_scores({"knn": s}), s)
    np.testing.assert_array_equal(mc.p_values({"knn": s})[0], conformal_p_values(cal, s))


def test_too_few_calibration_groups_warn():
    import novelty

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    blocks = np.arange(400) // 25  # 16 blocks → 4 in calibration
    with pytest.warns(UserWarning, match="only 4 groups"):
        novelty.NoveltyDetector(calibration_fraction=0.2).fit_embeddings(x, groups=blocks)
    fine = np.arange(400) // 4  # 100 blocks → 20 in calibration: enough for alpha = 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        novelty.NoveltyDetector(calibration_fraction=0.2).fit_embeddings(x, groups=fine)
