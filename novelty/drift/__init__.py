"""Drift over time: is this window of production data shifted from the reference, by how much, since when,
and what is missing from the training data.

    from novelty import drift
    ref = drift.DriftReference.from_detector(det)
    tests = ref.test(window_embeddings, window_p_values)        # one window, every test
    run = drift.monitor(ref, embeddings, p_values=p, times=t, window="1d")
    print(run.table())
    missing = drift.what_is_missing(ref, embeddings, novel=p < det.alpha, times=t, keys=keys)

Tests (each returns a :class:`DriftTestResult`: statistic, p-value, effect size with an interval, sizes):

=====================  ============================================================================
``pvalue-binomial``    share of the window flagged at ``alpha`` against its (beta-)binomial null
``pvalue-ks``          one-sided KS of the window's conformal p-values against their null
``mmd``                kernel MMD² (RBF, median heuristic), permutation p-value
``classifier``         logistic regression window vs reference, out-of-fold AUC, permutation p-value;
                       per-image scores say which images drive the shift
``histogram``          histogram intersection of k-means cluster occupancies, permutation p-value;
                       findings such as "cluster 7 grew from 1 % to 9 %"
=====================  ============================================================================

Measured power and false-alarm rates: ``benchmarks/RESULTS.md`` ("Drift"). This subpackage is not imported by
``import novelty``; it needs scipy (and scikit-learn for k-means): ``pip install 'novelty[drift]'``.
"""

from __future__ import annotations

from novelty.drift.classifier import classifier_test
from novelty.drift.errors import (
    DriftDependencyError,
    DriftError,
    EmptyWindowError,
    MissingEmbeddingsError,
    NonFiniteEmbeddingsError,
    WindowTooSmallError,
)
from novelty.drift.histogram import ReferenceClusters, histogram_test
from novelty.drift.horizon import HorizonCurve, Recommendation, drift_by_lag, recommend
from novelty.drift.missing import MissingCluster, what_is_missing
from novelty.drift.mmd import mmd_test
from novelty.drift.monitor import (
    DriftRun,
    WindowResult,
    adjust_p_values,
    monitor,
    parse_window,
    split_windows,
)
from novelty.drift.predictions import prediction_test
from novelty.drift.pvalues import pvalue_binomial_test, pvalue_ks_test
from novelty.drift.reference import TESTS, DriftReference
from novelty.drift.result import DriftTestResult

__all__ = [
    "TESTS",
    "DriftDependencyError",
    "DriftError",
    "DriftReference",
    "DriftRun",
    "DriftTestResult",
    "EmptyWindowError",
    "HorizonCurve",
    "MissingCluster",
    "MissingEmbeddingsError",
    "NonFiniteEmbeddingsError",
    "Recommendation",
    "ReferenceClusters",
    "WindowResult",
    "WindowTooSmallError",
    "adjust_p_values",
    "classifier_test",
    "drift_by_lag",
    "histogram_test",
    "mmd_test",
    "monitor",
    "parse_window",
    "prediction_test",
    "pvalue_binomial_test",
    "pvalue_ks_test",
    "recommend",
    "split_windows",
    "what_is_missing",
]
