"""Kernel two-sample test: MMD² with an RBF kernel, the median heuristic and a permutation p-value.

    r = mmd_test(reference_embeddings, window_embeddings, n_permutations=200)
    r.statistic, r.p_value, (r.ci_low, r.ci_high)

The kernel is ``k(x, y) = exp(−‖x − y‖² / (2σ²))`` with ``σ`` the median distance between the pooled images
(computed on the pooled sample, so it does not change under permutation and the test stays exact). The
statistic is the unbiased estimate of MMD² (it can be slightly negative). The p-value counts the observed
statistic: ``(1 + #{MMD²_perm ≥ MMD²_obs}) / (1 + B)`` over ``B`` random relabellings of the pooled sample,
so it is never 0 and is exactly valid (super-uniform) when nothing shifted. All permutations reuse one
kernel matrix: each one is a quadratic form, computed for a block of permutations with one matrix product.
The reference is subsampled to ``max_reference`` images (the kernel matrix is ``(n + m)²``).
"""

from __future__ import annotations

import math

import numpy as np

from novelty.drift.bootstrap import bootstrap_interval
from novelty.drift.result import (
    DriftTestResult,
    as_sample,
    check_permutations,
    sequential_p_value,
    subsample,
)
from novelty.params import check_int, check_real


def _check_stop(stop_after: int | None) -> int | None:
    return None if stop_after is None else check_int(stop_after, "stop_after", minimum=1)


__all__ = ["mmd_test", "rbf_kernel_matrix"]

_BLOCK = 128  # permutations per matrix product


def _sq_distances(z: np.ndarray) -> np.ndarray:
    z64 = z.astype(np.float64)
    sq = np.einsum("ij,ij->i", z64, z64)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z64 @ z64.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def rbf_kernel_matrix(z: np.ndarray, bandwidth: float | None = None) -> tuple[np.ndarray, float]:
    """The RBF kernel matrix of the rows of ``z`` and the bandwidth ``σ`` used (median heuristic if None)."""
    d2 = _sq_distances(z)
    if bandwidth is None:
        iu = np.triu_indices(z.shape[0], k=1)
        med = float(np.median(d2[iu])) if iu[0].size else 0.0
        bandwidth = math.sqrt(med) if med > 0 else 1.0
    k = np.exp(-d2 / (2.0 * bandwidth * bandwidth))
    return k, float(bandwidth)


def _mmd2_from_indicators(
    k: np.ndarray, a: np.ndarray, n: int, m: int, rowsum: np.ndarray, total: float
) -> np.ndarray:
    """Unbiased MMD² for each column of ``a`` (N × B, 1 where the image is in the first sample)."""
    ka = k @ a
    aka = np.einsum("ij,ij->j", a, ka)
    ra = rowsum @ a
    sxx = aka - n  # the diagonal of an RBF kernel is 1
    syy = total - 2.0 * ra + aka - m
    sxy = ra - aka
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def _mmd2_from_counts(k: np.ndarray, cx: np.ndarray, cy: np.ndarray, n: int, m: int) -> np.ndarray:
    """MMD² of bootstrap samples given as draw counts (N × B each), self-pairs of draws left out."""
    kx, ky = k @ cx, k @ cy
    sxx = np.einsum("ij,ij->j", cx, kx) - n
    syy = np.einsum("ij,ij->j", cy, ky) - m
    sxy = np.einsum("ij,ij->j", cx, ky)
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def mmd_test(
    reference: object,
    window: object,
    *,
    n_permutations: int = 200,
    stop_after: int | None = None,
    bandwidth: float | None = None,
    max_reference: int | None = 1000,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> DriftTestResult:
    """Kernel MMD² two-sample test of ``window`` against ``reference`` (both ``(n, d)`` embeddings).

    ``effect``: the MMD² estimate with a bootstrap percentile interval (``n_bootstrap`` resamples of both
    samples); ``details["bandwidth"]`` the σ used. ``n_permutations=0`` computes the statistic alone;
    ``stop_after`` stops the permutations early (see :func:`~novelty.drift.result.sequential_p_value`)."""
    ref = as_sample(reference, "reference")
    win = as_sample(window, "window", dim=ref.shape[1])
    b_perm = check_permutations(n_permutations)
    stop_after = _check_stop(stop_after)
    n_boot = check_int(n_bootstrap, "n_bootstrap", minimum=0)
    confidence = check_real(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    if bandwidth is not None:
        bandwidth = check_real(bandwidth, "bandwidth", low=0.0, low_open=True)
    if max_reference is not None:
        max_reference = check_int(max_reference, "max_reference", minimum=2)
    rng = np.random.default_rng(seed)
    x = subsample(ref, max_reference, rng)
    n, m = x.shape[0], win.shape[0]
    k, sigma = rbf_kernel_matrix(np.concatenate([x, win]), bandwidth)
    big_n = n + m
    rowsum = k.sum(axis=1)
    total = float(rowsum.sum())
    a_obs = np.zeros((big_n, 1))
    a_obs[:n] = 1.0
    observed = float(_mmd2_from_indicators(k, a_obs, n, m, rowsum, total)[0])

    def draw(b: int) -> np.ndarray:
        order = np.argsort(rng.random((b, big_n)), axis=1)[:, :n]
        a = np.zeros((big_n, b))
        a[order.T, np.arange(b)[None, :]] = 1.0
        return _mmd2_from_indicators(k, a, n, m, rowsum, total)

    p_value, null = sequential_p_value(observed, draw, b_perm, stop_after=stop_after, block=_BLOCK)

    def replicates(cx_counts: np.ndarray, cy_counts: np.ndarray) -> np.ndarray:
        cx = np.zeros((big_n, cx_counts.shape[0]))
        cy = np.zeros((big_n, cy_counts.shape[0]))
        cx[:n] = cx_counts.T
        cy[n:] = cy_counts.T
        return _mmd2_from_counts(k, cx, cy, n, m)

    lo, hi = bootstrap_interval(
        replicates, sizes=(n, m), n_boot=n_boot, confidence=confidence, rng=rng, block=_BLOCK
    )
    return DriftTestResult(
        test="mmd",
        statistic=observed,
        p_value=p_value,
        effect=observed,
        effect_name="MMD² (RBF kernel, median-heuristic bandwidth)",
        ci_low=lo,
        ci_high=hi,
        n_window=m,
        n_reference=n,
        details={
            "bandwidth": sigma,
            "n_permutations": int(null.size),
            "n_bootstrap": n_boot,
            "null_mean": float(null.mean()) if null.size else None,
        },
        confidence=confidence,
    )
