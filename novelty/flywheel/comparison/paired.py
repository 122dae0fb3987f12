"""Statistics of two models on the same images: McNemar's exact test, the expected calibration error, and
the weighted metrics behind a paired, clustered bootstrap.

A bootstrap replicate is a row of resampling weights over the images (how often each was drawn), so one
matrix ``W`` of shape ``(replicates, n)`` gives every replicate's accuracy, ECE, AUROC or false-alarm rate
at once, for both models with the same draws (:func:`bootstrap_weights`). Each function is tested against a
reference: scipy's binomial test, scikit-learn's AUROC, a plain loop over bins, repetition for weights.
"""

from __future__ import annotations

import numpy as np

from novelty.errors import InvalidInputError

__all__ = [
    "ECE_BINS",
    "bootstrap_weights",
    "expected_calibration_error",
    "mcnemar_exact",
    "weighted_auroc",
    "weighted_ece",
    "weighted_mean",
]

ECE_BINS = 15


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` and ``c`` are the discordant pairs (only the first model right,
    only the second right); under the null each is Binomial(b + c, ½). ``p = min(1, 2·P(X ≤ min(b, c)))``."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise InvalidInputError(f"discordant counts must be ≥ 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # exact: integer binomial coefficients, each from the previous one (C(n, i+1) = C(n, i)·(n−i)/(i+1), an exact
    # integer division), summed, then one correctly rounded division (Python's int / int)
    tail, term = 0, 1
    for i in range(k + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2**n)


def _bins(confidence: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Bin of each confidence among ``n_bins`` equal-width bins ``(lo, hi]`` of [0, 1] (0 falls in the first)."""
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def expected_calibration_error(
    correct: np.ndarray, confidence: np.ndarray, n_bins: int = ECE_BINS, weights: np.ndarray | None = None
) -> float:
    """ECE: ``Σ_b (n_b / n)·|accuracy_b − confidence_b|`` over ``n_bins`` equal-width confidence bins."""
    c = np.asarray(correct, dtype=np.float64)
    p = np.asarray(confidence, dtype=np.float64)
    w = np.ones_like(c) if weights is None else np.asarray(weights, dtype=np.float64)
    if c.size == 0:
        raise InvalidInputError("ECE of no predictions")
    return float(weighted_ece(w[None, :], c, p, n_bins)[0])


def weighted_ece(W: np.ndarray, correct: np.ndarray, conf: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """ECE under each row of weights ``W`` (m, n): a bootstrap replicate is a row of resampling counts."""
    bins = _bins(conf, n_bins)
    gap = correct - conf
    total = np.zeros(W.shape[0])
    for k in np.unique(bins):
        sel = bins == k
        total += np.abs(W[:, sel] @ gap[sel])
    return total / W.sum(axis=1)


def weighted_mean(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The mean of ``x`` under each row of weights ``W`` (m, n)."""
    return (W @ x) / W.sum(axis=1)


def weighted_auroc(W_neg: np.ndarray, W_pos: np.ndarray, neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Weighted AUROC (P(pos > neg) + ½ P(tie)) under each row of weights."""
    uniq, inv = np.unique(np.concatenate([neg, pos]), return_inverse=True)
    inv_n, inv_p = inv[: neg.size], inv[neg.size :]
    u = uniq.size
    out = np.empty(W_neg.shape[0])
    for r in range(W_neg.shape[0]):
        wn = np.bincount(inv_n, weights=W_neg[r], minlength=u)
        wp = np.bincount(inv_p, weights=W_pos[r], minlength=u)
        below = np.cumsum(wn) - wn
        out[r] = float(wp @ (below + 0.5 * wn)) / (wn.sum() * wp.sum())
    return out


def bootstrap_weights(
    strata: np.ndarray, units: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``(n_boot, n)`` resampling weights: within each stratum its clusters (``units``) are drawn with
    replacement, as many as it has; an image's weight is how often its cluster was drawn."""
    n = strata.shape[0]
    W = np.zeros((n_boot, n))
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        ids, inv = np.unique(units[members], return_inverse=True)
        m = ids.size
        draws = rng.integers(0, m, size=(n_boot, m))
        counts = np.zeros((n_boot, m))
        np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
        W[:, members] = counts[:, inv]
    return W
