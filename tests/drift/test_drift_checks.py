"""novelty.drift: numeric routines against reference implementations, clear errors on bad input, and the
library import that stays free of the drift layer."""

from __future__ import annotations

import numpy as np
import pytest
from drift_support import blobs  # tests/drift_support.py

from novelty import drift
from novelty.drift import (
    DriftReference,
    EmptyWindowError,
    NonFiniteEmbeddingsError,
    ReferenceClusters,
    WindowTooSmallError,
    classifier_test,
    histogram_test,
    mmd_test,
    pvalue_binomial_test,
    pvalue_ks_test,
)
from novelty.errors import DimensionMismatchError, InvalidInputError, NoveltyError


# --- numeric routines against references --------------------------------------------------------------
def test_mmd_statistic_matches_the_textbook_formula():
    rng = np.random.default_rng(10)
    x, y = blobs(rng, 30), blobs(rng, 20, shift=0.3)
    r = mmd_test(x, y, n_permutations=0, n_bootstrap=0, max_reference=None)
    s = r.details["bandwidth"]
    x, y = x.astype(np.float64), y.astype(np.float64)
    k = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * s * s))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    ref = (kxx.sum() - 30) / (30 * 29) + (kyy.sum() - 20) / (20 * 19) - 2 * kxy.mean()
    assert r.statistic == pytest.approx(ref, rel=1e-6)
    z = np.concatenate([x, y]).astype(np.float64)
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    assert s == pytest.approx(np.median(d[np.triu_indices(50, 1)]), rel=1e-5)


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    from novelty.drift.classifier import fit_logistic

    rng = np.random.default_rng(11)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(float)
    w = fit_logistic(x, y[:, None], C=0.3)
    sk = LogisticRegression(C=0.3, tol=1e-10, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(w[:-1, 0], sk.coef_[0], atol=1e-5)
    assert w[-1, 0] == pytest.approx(sk.intercept_[0], abs=1e-5)


def test_auc_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    from novelty.drift.classifier import _auc

    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 100)
    s = np.round(rng.normal(size=100) + y, 1)  # ties
    assert _auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_holm_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    adj = drift.adjust_p_values(p, "holm")
    ok = p[:4]
    order = np.argsort(ok)
    expect = np.empty(4)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (4 - rank) * ok[i])
        expect[i] = min(1.0, running)
    np.testing.assert_allclose(adj[:4], expect)
    assert np.isnan(adj[4])
    np.testing.assert_allclose(drift.adjust_p_values(p, "bonferroni")[:4], np.minimum(1, ok * 4))


# --- bad inputs: clear NoveltyErrors -------------------------------------------------------------------
@pytest.mark.parametrize("test", ["mmd", "classifier"])
def test_bad_windows_raise_clear_errors(test):
    fn = {"mmd": mmd_test, "classifier": classifier_test}[test]
    ref = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(EmptyWindowError, match="empty"):
        fn(ref, np.zeros((0, 4)))
    with pytest.raises(WindowTooSmallError, match="at least 2"):
        fn(ref, np.zeros((1, 4)))
    bad = np.ones((5, 4))
    bad[2, 1] = np.nan
    with pytest.raises(NonFiniteEmbeddingsError, match="NaN"):
        fn(ref, bad)
    with pytest.raises(DimensionMismatchError, match="dimension 3"):
        fn(ref, np.ones((5, 3)))
    with pytest.raises(InvalidInputError):
        fn(ref, np.ones(5))
    with pytest.raises(InvalidInputError, match="n_permutations"):
        fn(ref, np.ones((5, 4)), n_permutations=-1)


def test_bad_p_values_raise_clear_errors():
    for fn in (pvalue_binomial_test, pvalue_ks_test):
        with pytest.raises(EmptyWindowError):
            fn([])
        with pytest.raises(WindowTooSmallError):
            fn([0.5])
        with pytest.raises(NonFiniteEmbeddingsError):
            fn([0.5, np.nan])
        with pytest.raises(InvalidInputError, match=r"\(0, 1\]"):
            fn([0.5, 1.5])


def test_reference_and_histogram_errors_are_novelty_errors():
    with pytest.raises(WindowTooSmallError, match="clusters need"):
        ReferenceClusters(8).fit(np.random.default_rng(0).normal(size=(20, 4)))
    with pytest.raises(NoveltyError, match="not fitted"):
        histogram_test(ReferenceClusters(2), np.ones((4, 4)))
    with pytest.raises(NoveltyError, match="unknown drift test"):
        DriftReference(np.random.default_rng(0).normal(size=(40, 4))).test(np.ones((4, 4)), tests=["nope"])
    with pytest.raises(InvalidInputError, match="nothing to test"):
        DriftReference(np.random.default_rng(0).normal(size=(40, 4))).test(None, None)


@pytest.mark.slow
def test_drift_is_not_imported_by_novelty():
    import subprocess
    import sys

    code = "import sys, novelty; print('novelty.drift' in sys.modules, 'sklearn' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False", "False"]
