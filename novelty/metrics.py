"""Detection metrics over novelty scores (higher = more novel; positives = novel/OOD)."""

from __future__ import annotations

import numpy as np

from novelty.errors import InvalidInputError

__all__ = ["auroc", "flagged_share"]


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for separating ``out_scores`` (novel) from ``in_scores``; ties count half.

    Computed as the Mann–Whitney U statistic: P(out > in) + ½·P(out = in).
    """
    a = np.asarray(in_scores, dtype=np.float64).ravel()
    b = np.asarray(out_scores, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise InvalidInputError("auroc needs at least one in-distribution and one novel score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidInputError("auroc scores contain NaN or infinity")
    ranks = _average_ranks(np.concatenate([a, b]))
    u = ranks[a.size :].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


def flagged_share(p_values: np.ndarray, alpha: float) -> float:
    """Share of images flagged as novel (``p < alpha``)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        raise InvalidInputError("no p-values")
    return float((p < alpha).mean())


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last member of each tie group
    avg = upper - (counts - 1) / 2.0
    return avg[inverse]
