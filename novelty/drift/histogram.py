"""Histogram intersection on clusters of the reference: *where* in embedding space the window moved.

    clusters = ReferenceClusters(n_clusters=16).fit(reference_embeddings, ids=train_ids)
    r = histogram_test(clusters, window_embeddings)
    r.details["findings"]      # ["cluster 7 grew from 1.0 % to 9.0 %", …]

k-means (scikit-learn) is fitted on a random half of the reference; the other half, never seen by k-means,
gives the reference's cluster occupancy (so reference and window images are assigned by a function neither
of them shaped, and the permutation test stays exact). Each window image goes to its nearest centroid. The
statistic is ``1 − Σ_c min(p_ref(c), p_win(c))``: one minus the histogram intersection, i.e. the total
variation distance between the two occupancies (0 = the same shares, 1 = disjoint). The p-value counts the
observed statistic among ``n_permutations`` random relabellings of the pooled cluster labels. Small windows
have a positive statistic even without any shift; ``details["null_mean"]`` says how much, and the effect's
bootstrap interval resamples both histograms.

Each cluster is described by the reference image nearest its centroid (``representatives``), so a finding
reads "cluster 7 (like train/0412.jpg) grew from 1 % to 9 %".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from novelty.drift.bootstrap import bootstrap_interval
from novelty.drift.errors import WindowTooSmallError
from novelty.drift.result import (
    DriftTestResult,
    as_sample,
    check_permutations,
    require_sklearn,
    sequential_p_value,
)
from novelty.errors import InvalidInputError, NotFittedError
from novelty.params import check_int, check_real

__all__ = ["ReferenceClusters", "histogram_test"]

_BLOCK = 256


class ReferenceClusters:
    """k-means clusters of the reference embeddings and the reference's occupancy of them."""

    def __init__(self, n_clusters: int = 16, *, seed: int = 0):
        self.n_clusters = check_int(n_clusters, "n_clusters", minimum=2)
        self.seed = check_int(seed, "seed", minimum=0)

    def fit(self, reference: object, *, ids: Sequence[str] | None = None) -> ReferenceClusters:
        require_sklearn()
        from sklearn.cluster import KMeans

        ref = as_sample(reference, "reference")
        n = ref.shape[0]
        if ids is not None and len(ids) != n:
            raise WindowTooSmallError(f"ids has {len(ids)} entries for {n} reference embeddings")
        n_fit = n // 2
        if n_fit < 2 * self.n_clusters or n - n_fit < self.n_clusters:
            raise WindowTooSmallError(
                f"the reference holds {n} embeddings; {self.n_clusters} clusters need at least "
                f"{4 * self.n_clusters} (half fit k-means, half give the reference occupancy): use fewer clusters"
            )
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(n)
        fit_idx, held_idx = np.sort(perm[:n_fit]), np.sort(perm[n_fit:])
        km = KMeans(n_clusters=self.n_clusters, n_init=3, random_state=self.seed).fit(ref[fit_idx])
        self.centroids_ = km.cluster_centers_.astype(np.float32)
        self.reference_labels_ = self.assign(ref[held_idx])
        self.reference_index_ = held_idx  # positions in the reference of the held-out half
        self.reference_counts_ = np.bincount(self.reference_labels_, minlength=self.n_clusters)
        # the reference image nearest each centroid (of all of them): what the cluster looks like
        d = _sq_dist(self.centroids_, ref)
        self.representatives_ = d.argmin(axis=1)
        self.representative_ids_ = (
            [str(ids[i]) for i in self.representatives_]
            if ids is not None
            else [f"#{i}" for i in self.representatives_]
        )
        self.dim_ = int(ref.shape[1])
        return self

    def _check(self) -> None:
        if not hasattr(self, "centroids_"):
            raise NotFittedError("ReferenceClusters is not fitted: call fit(reference_embeddings)")

    def assign(self, x: np.ndarray) -> np.ndarray:
        """The nearest centroid of each row of ``x``."""
        return _sq_dist(np.asarray(x, dtype=np.float32), self.centroids_).argmin(axis=1)

    @property
    def reference_shares_(self) -> np.ndarray:
        self._check()
        return self.reference_counts_ / self.reference_counts_.sum()


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * (a64 @ b64.T)


def _tv(counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    """1 − histogram intersection of count vectors (last axis), for each row."""
    pa = counts_a / counts_a.sum(axis=-1, keepdims=True)
    pb = counts_b / counts_b.sum(axis=-1, keepdims=True)
    return 1.0 - np.minimum(pa, pb).sum(axis=-1)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %" if x < 0.995 else f"{100 * x:.0f} %"


def histogram_test(
    clusters: ReferenceClusters,
    window: object,
    *,
    n_permutations: int = 500,
    stop_after: int | None = None,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    n_findings: int = 3,
    seed: int = 0,
) -> DriftTestResult:
    """Test the window's cluster occupancy against the reference's (see the module docstring);
    ``stop_after``: see :func:`~novelty.drift.result.sequential_p_value`."""
    if not isinstance(clusters, ReferenceClusters):
        raise InvalidInputError(f"clusters must be a fitted ReferenceClusters, got {type(clusters).__name__}")
    clusters._check()
    win = as_sample(window, "window", dim=clusters.dim_)
    b_perm = check_permutations(n_permutations)
    stop_after = None if stop_after is None else check_int(stop_after, "stop_after", minimum=1)
    n_boot = check_int(n_bootstrap, "n_bootstrap", minimum=0)
    confidence = check_real(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    k = clusters.n_clusters
    rng = np.random.default_rng(seed)
    ref_labels = clusters.reference_labels_
    win_labels = clusters.assign(win)
    n, m = ref_labels.size, win_labels.size
    ref_counts = np.bincount(ref_labels, minlength=k)
    win_counts = np.bincount(win_labels, minlength=k)
    observed = float(_tv(ref_counts[None, :], win_counts[None, :])[0])

    pooled = np.concatenate([ref_labels, win_labels])
    total = np.bincount(pooled, minlength=k)

    def draw(b: int) -> np.ndarray:
        pick = np.argsort(rng.random((b, n + m)), axis=1)[:, :m]
        wc = np.zeros((b, k), dtype=np.int64)
        np.add.at(wc, (np.repeat(np.arange(b), m), pooled[pick].ravel()), 1)
        return _tv(total[None, :] - wc, wc)

    p_value, null = sequential_p_value(observed, draw, b_perm, stop_after=stop_after, block=_BLOCK)

    lo, hi = bootstrap_interval(
        _tv, class_counts=(ref_counts, win_counts), n_boot=n_boot, confidence=confidence, rng=rng
    )

    ref_share, win_share = ref_counts / n, win_counts / m
    order = np.argsort(-np.abs(win_share - ref_share), kind="stable")
    table = [
        {
            "cluster": int(c),
            "reference_share": float(ref_share[c]),
            "window_share": float(win_share[c]),
            "change": float(win_share[c] - ref_share[c]),
            "representative": clusters.representative_ids_[c],
        }
        for c in range(k)
    ]
    findings = []
    for c in order[: max(0, n_findings)]:
        if win_share[c] == ref_share[c]:
            break
        verb = "grew" if win_share[c] > ref_share[c] else "shrank"
        findings.append(
            f"cluster {int(c)} (like {clusters.representative_ids_[c]}) {verb} from {_pct(ref_share[c])} "
            f"to {_pct(win_share[c])}"
        )
    return DriftTestResult(
        test="histogram",
        statistic=observed,
        p_value=p_value,
        effect=observed,
        effect_name="1 − histogram intersection of cluster occupancies (total variation distance)",
        ci_low=lo,
        ci_high=hi,
        n_window=m,
        n_reference=n,
        details={
            "n_clusters": k,
            "n_permutations": int(null.size),
            "null_mean": float(null.mean()) if null.size else None,
            "findings": findings,
            "clusters": table,
        },
        arrays={"window_clusters": win_labels},
        confidence=confidence,
    )
