"""Detection metrics over novelty scores (higher = more novel; positives = novel/OOD).

==========================  ===================================================================================
:func:`auroc`               P(novel score > in-distribution score), ties half: threshold-free separation.
:func:`aupr_out`            average precision with the novel images as positives (scores as given).
:func:`aupr_in`             average precision with the in-distribution images as positives (scores negated).
:func:`fpr_at_tpr`          share of in-distribution images flagged at the loosest threshold that still
                            catches ``tpr`` (default 95 %) of the novel ones (OpenOOD's "FPR@95").
:func:`false_alarm_rate`    share of held-out in-distribution images with p-value < alpha: what a calibrated
                            detector promises to keep at alpha.
==========================  ===================================================================================

Average precision is the step-wise sum of sklearn's ``average_precision_score`` (no interpolation).
"""

from __future__ import annotations

import numpy as np

from novelty.errors import InvalidInputError

__all__ = [
    "aupr_in",
    "aupr_out",
    "auroc",
    "detection_metrics",
    "false_alarm_rate",
    "flagged_share",
    "fpr_at_tpr",
    "roc_curve",
]


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for separating ``out_scores`` (novel) from ``in_scores``; ties count half.

    Computed as the Mann–Whitney U statistic: P(out > in) + ½·P(out = in).
    """
    a, b = _pair(in_scores, out_scores, "auroc")
    ranks = _average_ranks(np.concatenate([a, b]))
    u = ranks[a.size :].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


def _pair(in_scores: np.ndarray, out_scores: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(in_scores, dtype=np.float64).ravel()
    b = np.asarray(out_scores, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise InvalidInputError(f"{what} needs at least one in-distribution and one novel score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidInputError(f"{what} scores contain NaN or infinity")
    return a, b


def _threshold_counts(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(tp, fp)`` when flagging score ≥ t, for every distinct score t from the highest down."""
    scores = np.concatenate([positive, negative])
    is_pos = np.concatenate([np.ones(positive.size), np.zeros(negative.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_pos = scores[order], is_pos[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(is_pos)[last_of_tie]
    return tp, (last_of_tie + 1.0) - tp


def _average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """Σ (Rₖ − Rₖ₋₁)·Pₖ over the distinct score thresholds, highest first (sklearn's definition)."""
    tp, fp = _threshold_counts(positive, negative)
    precision = tp / (tp + fp)
    recall = tp / positive.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_out(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Average precision of finding the novel images (positives) by their score."""
    a, b = _pair(in_scores, out_scores, "aupr_out")
    return _average_precision(b, a)


def aupr_in(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Average precision of finding the in-distribution images (positives) by their negated score."""
    a, b = _pair(in_scores, out_scores, "aupr_in")
    return _average_precision(-a, -b)


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate on in-distribution images at the highest threshold whose true-positive rate on
    the novel images is at least ``tpr`` (flag when score ≥ threshold); the first ROC point reaching ``tpr``."""
    if not 0.0 < tpr <= 1.0:
        raise InvalidInputError(f"tpr must lie in (0, 1], got {tpr}")
    a, b = _pair(in_scores, out_scores, "fpr_at_tpr")
    need = int(np.ceil(tpr * b.size - 1e-9))  # novel images that must score >= threshold
    threshold = np.sort(b)[::-1][need - 1]
    return float((a >= threshold).mean())


def false_alarm_rate(in_p_values: np.ndarray, alpha: float) -> float:
    """Share of held-out in-distribution images flagged (p < alpha); a calibrated detector keeps it ≈ alpha."""
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"alpha must lie in (0, 1), got {alpha}")
    return flagged_share(in_p_values, alpha)


def roc_curve(in_scores: np.ndarray, out_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` at every distinct threshold, from (0, 0) to (1, 1): novel images are the positives,
    flagged when score ≥ threshold. Same points as ``sklearn.metrics.roc_curve(drop_intermediate=False)``."""
    a, b = _pair(in_scores, out_scores, "roc_curve")
    tp, fp = _threshold_counts(b, a)
    return np.r_[0.0, fp / a.size], np.r_[0.0, tp / b.size]


def detection_metrics(in_scores: np.ndarray, out_scores: np.ndarray) -> dict[str, float]:
    """``auroc``, ``aupr_in``, ``aupr_out`` and ``fpr95`` of one in-distribution / novel pair."""
    return {
        "auroc": auroc(in_scores, out_scores),
        "aupr_in": aupr_in(in_scores, out_scores),
        "aupr_out": aupr_out(in_scores, out_scores),
        "fpr95": fpr_at_tpr(in_scores, out_scores, 0.95),
    }


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
