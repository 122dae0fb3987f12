"""novelty.drift: null calibration of every test (p-values uniform, or super-uniform where the statistic is
discrete, when nothing shifted) and power against a planted shift."""

from __future__ import annotations

import numpy as np
import pytest
from drift_support import N_NULL, blobs, conformal_window, uniform_ks  # tests/drift_support.py
from scipy import stats

from novelty.calibration import conformal_p_values
from novelty.drift import (
    ReferenceClusters,
    classifier_test,
    histogram_test,
    mmd_test,
    pvalue_binomial_test,
    pvalue_ks_test,
)


# --- null: p-values uniform (or super-uniform where the statistic is discrete) -------------------------
def test_mmd_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(1)
    p = np.array(
        [
            mmd_test(blobs(rng, 60), blobs(rng, 20), n_permutations=99, n_bootstrap=0, seed=i).p_value
            for i in range(N_NULL)
        ]
    )
    assert uniform_ks(p) > 0.01
    assert np.mean(p <= 0.05) <= 0.05 + 0.035


def test_sequential_permutation_p_values_are_valid_under_the_null():
    """Besag–Clifford early stopping (stop_after): p-values still uniform, at a fraction of the permutations."""
    rng = np.random.default_rng(21)
    res = [
        mmd_test(blobs(rng, 60), blobs(rng, 20), n_permutations=999, stop_after=10, n_bootstrap=0, seed=i)
        for i in range(N_NULL)
    ]
    p = np.array([r.p_value for r in res])
    assert uniform_ks(p) > 0.01
    assert np.mean(p <= 0.05) <= 0.05 + 0.035
    assert np.median([r.details["n_permutations"] for r in res]) < 50


def test_classifier_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(2)
    p = np.array(
        [
            classifier_test(blobs(rng, 40), blobs(rng, 20), n_permutations=39, n_components=4, seed=i).p_value
            for i in range(N_NULL)
        ]
    )
    assert uniform_ks(p) > 0.01
    assert np.mean(p <= 0.05) <= 0.05 + 0.035


def test_histogram_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(3)
    p = []
    for i in range(N_NULL):
        clusters = ReferenceClusters(4, seed=i).fit(blobs(rng, 80))
        p.append(histogram_test(clusters, blobs(rng, 20), n_permutations=199, n_bootstrap=0, seed=i).p_value)
    assert uniform_ks(np.array(p)) > 0.01


def test_pvalue_ks_is_uniform_under_the_null_with_and_without_the_calibration_size():
    rng = np.random.default_rng(4)
    exact = [
        pvalue_ks_test(conformal_window(rng, 300, 50), n_calibration=300, n_bootstrap=0).p_value
        for _ in range(N_NULL)
    ]
    # the two-sample KS p-value is conservative for discrete statistics: super-uniform, and near uniform
    assert np.mean(np.array(exact) <= 0.05) <= 0.05 + 0.035
    assert stats.kstest(exact, "uniform", alternative="less").pvalue > 0.01  # not smaller than uniform
    iid = [pvalue_ks_test(rng.uniform(size=50), n_bootstrap=0).p_value for _ in range(N_NULL)]
    assert uniform_ks(np.array(iid)) > 0.01


def test_pvalue_binomial_is_valid_under_the_null_thanks_to_the_beta_binomial():
    """A window much larger than the calibration set: the plain binomial test raises far more false alarms
    than its level, the beta-binomial one (the shared calibration set taken into account) does not."""
    rng = np.random.default_rng(5)
    n_cal, m = 100, 400
    beta = np.array(
        [
            pvalue_binomial_test(conformal_window(rng, n_cal, m), 0.1, n_calibration=n_cal).p_value
            for _ in range(N_NULL)
        ]
    )
    plain = np.array(
        [pvalue_binomial_test(conformal_window(rng, n_cal, m), 0.1).p_value for _ in range(N_NULL)]
    )
    assert np.mean(beta <= 0.05) <= 0.05 + 0.035
    assert np.mean(plain <= 0.05) > 0.15  # the reason the calibration size matters
    for u in (0.1, 0.25, 0.5):  # super-uniform at every level
        assert np.mean(beta <= u) <= u + 0.06


def test_beta_binomial_null_rate_matches_a_simulation():
    rng = np.random.default_rng(6)
    n_cal, alpha = 39, 0.1  # ℓ = ⌈0.1 · 40⌉ − 1 = 3: P(p < alpha) = 3/40
    flagged = [np.mean(conformal_window(rng, n_cal, 20) < alpha) for _ in range(4000)]
    assert np.mean(flagged) == pytest.approx(3 / 40, abs=0.006)
    r = pvalue_binomial_test(np.full(20, 0.5), alpha, n_calibration=n_cal)
    assert r.details["null_rate"] == pytest.approx(3 / 40)


# --- power: a planted shift is found -------------------------------------------------------------------
def test_every_test_detects_a_planted_shift():
    rng = np.random.default_rng(7)
    ref, win = blobs(rng, 300), blobs(rng, 60, shift=0.8)
    assert mmd_test(ref, win, n_permutations=99).p_value <= 0.01
    c = classifier_test(ref, win, n_permutations=49)
    assert c.p_value <= 0.02 and c.effect > 0.65
    clusters = ReferenceClusters(6).fit(ref)
    h = histogram_test(clusters, win, n_permutations=199)
    assert h.p_value <= 0.01 and h.details["findings"]
    cal = rng.normal(size=300)
    p = conformal_p_values(cal, rng.normal(size=60) + 1.5)
    assert pvalue_binomial_test(p, 0.05, n_calibration=300).p_value < 1e-3
    assert pvalue_ks_test(p, n_calibration=300).p_value < 1e-3


def test_classifier_scores_point_at_the_images_that_drive_the_shift():
    rng = np.random.default_rng(8)
    ref = blobs(rng, 300)
    win = np.concatenate([blobs(rng, 50), blobs(rng, 10, shift=3.0)])
    r = classifier_test(ref, win, n_permutations=19)
    top = np.argsort(-r.arrays["window_scores"])[:10]
    assert np.mean(top >= 50) >= 0.8


def test_histogram_findings_name_the_cluster_that_grew():
    rng = np.random.default_rng(9)
    centers = np.eye(8, dtype=np.float32)[:4] * 6
    ref = np.concatenate([c + rng.normal(size=(100, 8)).astype(np.float32) * 0.3 for c in centers])
    ids = [f"train/{i}.jpg" for i in range(ref.shape[0])]
    clusters = ReferenceClusters(4).fit(ref, ids=ids)
    win = np.concatenate(
        [
            c + rng.normal(size=(n, 8)).astype(np.float32) * 0.3
            for c, n in zip(centers, (10, 10, 10, 70), strict=True)
        ]
    )
    r = histogram_test(clusters, win, n_permutations=199)
    assert r.p_value < 0.01
    grown = clusters.assign(centers[3:4])[0]
    assert r.details["findings"][0].startswith(f"cluster {grown} (like train/")
    assert "grew from" in r.details["findings"][0] and r.details["findings"][0].endswith("to 70.0 %")
