"""Drift tests on the window's conformal p-values: cheap, and they need nothing but the scored results.

On in-distribution data a conformal p-value is uniform, so a shifted window shows up as too many small
p-values. Both tests are one-sided: only *more* novelty than chance is drift (a window of near-duplicates of
the training images has large p-values, which is not a reason to alarm).

- :func:`pvalue_binomial_test`: the number of images flagged (``p < alpha``) against its null distribution.
- :func:`pvalue_ks_test`: the Kolmogorov–Smirnov distance of the p-values from their null distribution.

**The shared calibration set.** The p-values of one detector all use the same calibration scores, so they are
not independent: given the calibration set, the chance that an in-distribution image is flagged is not
``alpha`` but a random ``U ~ Beta(ℓ, n+1−ℓ)`` with ``ℓ = ⌈alpha (n+1)⌉ − 1`` (``n`` calibration images), and a
window of ``m`` images flags ``K ~ BetaBinomial(m, ℓ, n+1−ℓ)`` images. With ``n_calibration`` the binomial test
uses that law (a plain binomial test would raise false alarms on large windows whenever ``m`` is not small
against ``n``); the KS test becomes the exact two-sample KS test of the window's scores against the
calibration scores, recovered from the p-values (a p-value ``(1 + c)/(n + 1)`` says that ``c`` calibration
scores lie at or above the image's score). Without ``n_calibration`` both tests treat the p-values as
independent uniforms.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from novelty.drift.bootstrap import bootstrap_interval
from novelty.drift.result import DriftTestResult, as_pvalues, require_scipy
from novelty.params import check_int, check_real

__all__ = ["pvalue_binomial_test", "pvalue_ks_test"]


def _n_cal(n_calibration: object) -> int | None:
    return None if n_calibration is None else check_int(n_calibration, "n_calibration", minimum=1)


def pvalue_binomial_test(
    p_values: object,
    alpha: float = 0.05,
    *,
    n_calibration: int | None = None,
    confidence: float = 0.95,
) -> DriftTestResult:
    """Are more images flagged (``p < alpha``) than chance allows?

    ``statistic``: the number flagged; ``effect``: the share flagged minus its null rate, with a
    Clopper–Pearson interval. ``n_calibration``: the detector's number of calibration scores (see the module
    docstring); ``None`` tests against Binomial(m, alpha)."""
    stats = require_scipy()
    p = as_pvalues(p_values)
    alpha = check_real(alpha, "alpha", low=0.0, high=1.0, low_open=True, high_open=True)
    confidence = check_real(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    n_cal = _n_cal(n_calibration)
    m = int(p.size)
    k = int(np.count_nonzero(p < alpha))
    details: dict[str, object] = {"alpha": alpha, "flagged": k}
    if n_cal is not None:
        ell = math.ceil(alpha * (n_cal + 1) - 1e-12) - 1
        rate = ell / (n_cal + 1)
        details.update(n_calibration=n_cal, null="beta-binomial (shared calibration set)")
        if ell <= 0:
            p_value = 1.0  # nothing can be flagged at this alpha with so few calibration scores
            details["note"] = f"with {n_cal} calibration scores no p-value can fall below alpha={alpha:g}"
        else:
            p_value = float(stats.betabinom.sf(k - 1, m, ell, n_cal + 1 - ell))
    else:
        rate = alpha
        details["null"] = "binomial (independent p-values)"
        p_value = float(stats.binom.sf(k - 1, m, alpha))
    lo, hi = _clopper_pearson(k, m, confidence, stats)
    details["null_rate"] = rate
    details["share_flagged"] = k / m
    return DriftTestResult(
        test="pvalue-binomial",
        statistic=float(k),
        p_value=min(1.0, p_value),
        effect=k / m - rate,
        effect_name="excess share flagged (share with p < alpha minus its null rate)",
        ci_low=lo - rate,
        ci_high=hi - rate,
        n_window=m,
        n_reference=n_cal or 0,
        details=details,
        confidence=confidence,
    )


def _clopper_pearson(k: int, n: int, confidence: float, stats: object) -> tuple[float, float]:
    a = (1.0 - confidence) / 2
    beta = stats.beta  # type: ignore[attr-defined]
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def _ks_greater(window: np.ndarray, null_grid: np.ndarray | None) -> float:
    """One-sided KS distance ``max(F_window − F_null)``: how much more mass sits at small values."""
    w = np.sort(window)
    if null_grid is None:  # against U(0, 1)
        i = np.arange(1, w.size + 1)
        return float(np.max(i / w.size - w))
    g = np.sort(null_grid)
    pts = np.concatenate([w, g])
    fw = np.searchsorted(w, pts, side="right") / w.size
    fg = np.searchsorted(g, pts, side="right") / g.size
    return float(np.max(fw - fg))


def pvalue_ks_test(
    p_values: object,
    *,
    n_calibration: int | None = None,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> DriftTestResult:
    """Are the window's p-values smaller than uniform (one-sided Kolmogorov–Smirnov)?

    ``statistic`` and ``effect``: the KS distance ``D⁺`` (the largest excess of the window's p-value CDF over
    the null CDF), with a bootstrap interval over the window's images. With ``n_calibration`` it is the
    two-sample test of the window's scores against the calibration scores (exact under exchangeability)."""
    stats = require_scipy()
    p = as_pvalues(p_values)
    n_cal = _n_cal(n_calibration)
    n_boot = check_int(n_bootstrap, "n_bootstrap", minimum=0)
    confidence = check_real(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    details: dict[str, object] = {}
    if n_cal is not None:
        # c = #{calibration scores ≥ the image's score}; the r-th largest calibration score has r − 1 above it
        window = np.clip(np.rint(p * (n_cal + 1)) - 1, 0, n_cal)
        grid: np.ndarray | None = np.arange(1, n_cal + 1) - 0.5
        with warnings.catch_warnings():  # "exact calculation unsuccessful, switching to asymp": expected
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.ks_2samp(window, grid, alternative="greater")
        details.update(n_calibration=n_cal, null="two-sample KS against the calibration scores")
    else:
        window, grid = p, None
        res = stats.kstest(p, "uniform", alternative="greater")
        details["null"] = "one-sample KS against U(0, 1)"
    d = _ks_greater(window, grid)
    lo, hi = bootstrap_interval(
        lambda counts: np.array([_ks_greater(np.repeat(window, c), grid) for c in counts]),
        sizes=(p.size,),
        n_boot=n_boot,
        confidence=confidence,
        rng=np.random.default_rng(seed),
    )
    details["n_bootstrap"] = n_boot
    return DriftTestResult(
        test="pvalue-ks",
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        effect=d,
        effect_name="KS distance D+ (excess of small p-values over the null CDF)",
        ci_low=lo,
        ci_high=hi,
        n_window=int(p.size),
        n_reference=n_cal or 0,
        details=details,
        confidence=confidence,
    )
