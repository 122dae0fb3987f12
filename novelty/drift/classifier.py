"""Classifier two-sample test: can a classifier tell the window from the reference?

    r = classifier_test(reference_embeddings, window_embeddings, n_permutations=100)
    r.effect                        # out-of-fold AUC (0.5 = indistinguishable)
    r.arrays["window_scores"]       # per window image: how unlike the reference it looks (higher = more)

Logistic regression (L2, ``C``; fitted by Newton's method, many label vectors at once: see
:func:`fit_logistic`) on the embeddings, projected first onto their ``n_components`` leading principal
components (fitted on the pooled sample without labels, so the projection does not change under
permutation), standardised. Every image gets an out-of-fold probability of belonging to the window from a
model that never saw it (stratified ``n_folds``-fold cross-fitting); the statistic is the AUC of those
probabilities. The p-value refits everything on ``n_permutations`` random relabellings of the pooled sample and
counts the observed AUC: ``(1 + #{AUC_perm ≥ AUC_obs}) / (1 + B)`` — exact, at the cost of
``n_folds × (B + 1)`` small fits. The AUC's interval is Hanley & McNeil's normal approximation.

The window images with the highest out-of-fold scores are the ones that drive the shift.
"""

from __future__ import annotations

import math

import numpy as np

from novelty.drift.result import (
    DriftTestResult,
    as_sample,
    check_permutations,
    require_scipy,
    sequential_p_value,
    subsample,
)
from novelty.params import check_int, check_real

__all__ = ["classifier_test", "fit_logistic"]

_BLOCK = 50  # permutations fitted together


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC of ``scores`` for ``labels == 1`` against ``labels == 0`` (Mann–Whitney, ties counted half)."""
    from scipy.stats import rankdata

    pos = labels == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _stratified_folds(y: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold ids (0..n_folds−1): the images of each class shuffled and dealt round-robin."""
    folds = np.empty(y.shape[0], dtype=np.int64)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        folds[rng.permutation(idx)] = np.arange(idx.size) % n_folds
    return folds


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    C: float = 1.0,
    max_iter: int = 25,
    tol: float = 1e-6,
) -> np.ndarray:
    """L2-regularised logistic regressions fitted by Newton's method, one per column of ``y`` (N × B, 0/1),
    each on the rows where its column of ``mask`` is 1. Minimises ``C · Σ log-loss + ½‖w‖²`` (intercept not
    penalised), the objective of scikit-learn's ``LogisticRegression(C=C)``. Returns the weights
    ``(d + 1, B)``, intercept last."""
    n, d = x.shape
    xi = np.concatenate([x, np.ones((n, 1))], axis=1)
    q = d + 1
    outer = (xi[:, :, None] * xi[:, None, :]).reshape(n, q * q)
    reg = np.eye(q) / C
    reg[-1, -1] = 0.0
    m = np.ones_like(y, dtype=np.float64) if mask is None else mask.astype(np.float64)
    w = np.zeros((q, y.shape[1]))
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(xi @ w, -30, 30)))
        grad = xi.T @ (m * (p - y)) + reg @ w
        s = m * p * (1.0 - p)
        hess = (s.T @ outer).reshape(-1, q, q) + reg + 1e-9 * np.eye(q)
        step = np.linalg.solve(hess, grad.T[:, :, None])[:, :, 0].T
        w -= step
        if float(np.abs(step).max()) < tol:
            break
    return w


def _oof_scores(z: np.ndarray, y: np.ndarray, n_folds: int, c: float, rng: np.random.Generator) -> np.ndarray:
    """Out-of-fold decision values for each column of ``y`` (N × B): every image scored by a model fitted
    without it (stratified folds drawn per column)."""
    folds = np.stack([_stratified_folds(y[:, b], n_folds, rng) for b in range(y.shape[1])], axis=1)
    zi = np.concatenate([z, np.ones((z.shape[0], 1))], axis=1)
    out = np.empty(y.shape)
    for f in range(n_folds):
        test = folds == f
        w = fit_logistic(z, y, ~test, C=c)
        out[test] = (zi @ w)[test]
    return out


def _hanley_mcneil(auc: float, n1: int, n0: int, confidence: float) -> tuple[float, float]:
    from scipy.stats import norm

    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc)) / (n1 * n0)
    half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def _project(z: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """The pooled sample on its ``n_components`` leading principal components (randomised range finder with
    two power iterations), standardised. No labels are used: the projection is the same for every
    relabelling, which keeps the permutation test exact."""
    z = z - z.mean(axis=0)
    n, d = z.shape
    k = min(n_components, n - 1, d)
    if 1 <= k < d:
        g = np.random.default_rng(seed).standard_normal((d, min(d, k + 10)))
        basis = np.linalg.qr(z @ g)[0]
        for _ in range(2):
            basis = np.linalg.qr(z @ (z.T @ basis))[0]
        small = basis.T @ z  # (k + 10, d): its right singular vectors are the principal axes
        _, _, vt = np.linalg.svd(small, full_matrices=False)
        z = z @ vt[:k].T
    sd = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def classifier_test(
    reference: object,
    window: object,
    *,
    n_permutations: int = 100,
    stop_after: int | None = None,
    n_folds: int = 5,
    n_components: int = 16,
    C: float = 1.0,
    max_reference: int | None = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> DriftTestResult:
    """Classifier two-sample test of ``window`` against ``reference`` (see the module docstring).

    ``effect``: the out-of-fold AUC with a Hanley–McNeil interval; ``arrays["window_scores"]``: each window
    image's out-of-fold decision value (higher = more unlike the reference). ``n_permutations=0`` computes
    the AUC alone; ``stop_after``: see :func:`~novelty.drift.result.sequential_p_value`."""
    require_scipy()
    ref = as_sample(reference, "reference")
    win = as_sample(window, "window", dim=ref.shape[1])
    b_perm = check_permutations(n_permutations)
    stop_after = None if stop_after is None else check_int(stop_after, "stop_after", minimum=1)
    n_folds = check_int(n_folds, "n_folds", minimum=2)
    n_components = check_int(n_components, "n_components", minimum=1)
    C = check_real(C, "C", low=0.0, low_open=True)
    confidence = check_real(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    if max_reference is not None:
        max_reference = check_int(max_reference, "max_reference", minimum=2)
    rng = np.random.default_rng(seed)
    x = subsample(ref, max_reference, rng)
    n, m = x.shape[0], win.shape[0]
    folds = min(n_folds, n, m)
    z = _project(np.concatenate([x, win]).astype(np.float64), n_components, seed)
    y = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(m, dtype=np.int64)])
    scores = _oof_scores(z, y[:, None].astype(np.float64), folds, C, rng)[:, 0]
    auc = _auc(y, scores)

    def draw(b: int) -> np.ndarray:
        ys = np.stack([rng.permutation(y) for _ in range(b)], axis=1)
        oof = _oof_scores(z, ys.astype(np.float64), folds, C, rng)
        return np.array([_auc(ys[:, j], oof[:, j]) for j in range(b)])

    p_value, null = sequential_p_value(auc, draw, b_perm, stop_after=stop_after, block=_BLOCK)
    lo, hi = _hanley_mcneil(auc, m, n, confidence)
    win_scores = scores[n:]
    top = np.argsort(-win_scores, kind="stable")[: min(10, m)]
    return DriftTestResult(
        test="classifier",
        statistic=auc,
        p_value=p_value,
        effect=auc,
        effect_name="out-of-fold AUC of window vs reference (0.5 = indistinguishable)",
        ci_low=lo,
        ci_high=hi,
        n_window=m,
        n_reference=n,
        details={
            "n_permutations": int(null.size),
            "n_folds": folds,
            "n_components": int(z.shape[1]),
            "null_mean": float(null.mean()) if null.size else None,
            "top_window_images": top.tolist(),
        },
        arrays={"window_scores": win_scores, "reference_scores": scores[:n]},
        confidence=confidence,
    )
