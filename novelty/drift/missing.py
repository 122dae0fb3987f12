"""What is missing from the training data: clusters of a window's novel images.

    clusters = what_is_missing(ref, embeddings, novel=p_values < alpha, times=t, keys=keys)
    c = clusters[0]
    c.size, c.medoid_key, c.neighbors, c.distance, c.first_seen, c.last_seen

The novel images are grouped by k-means (scikit-learn; the number of clusters chosen by the silhouette
score among 2…``max_clusters`` unless ``n_clusters`` is given) or by HDBSCAN (``method="hdbscan"``: no number
to choose; images in no dense group are reported as ``unclustered``), in the space of the novel images'
``n_components`` leading principal components: in all 1,280 dimensions the silhouette is nearly flat in the
number of clusters, on the leading components it peaks where the groups are (benchmarks/RESULTS.md, "Drift"). For each cluster: its size, its
*medoid* (the member with the smallest total distance to the other members: a real image that stands for the
cluster), the medoid's nearest training images with their distances, the cluster's distance from the training
data (median over members of the distance to the nearest training image) and when it was first and last seen.
Largest cluster first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from novelty.clock import iso_seconds
from novelty.drift.reference import DriftReference
from novelty.drift.result import as_sample, require_sklearn
from novelty.errors import InvalidInputError
from novelty.params import check_int

__all__ = ["MissingCluster", "what_is_missing"]

_MEDOID_CANDIDATES = 400
_SILHOUETTE_SAMPLE = 2000


@dataclass
class MissingCluster:
    cluster: int
    size: int
    members: np.ndarray = field(repr=False)  # positions in the given embeddings
    medoid: int  # position in the given embeddings
    medoid_key: str
    neighbors: list[tuple[str, float]]  # nearest training images of the medoid: (id, distance)
    distance: float  # median distance of the members to their nearest training image
    first_seen: float | None = None
    last_seen: float | None = None
    member_keys: list[str] = field(default_factory=list, repr=False)

    def to_json(self, max_members: int = 12) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "size": self.size,
            "medoid": self.medoid_key,
            "neighbors": [{"id": i, "distance": round(d, 6)} for i, d in self.neighbors],
            "distance": round(self.distance, 6),
            "first_seen": iso_seconds(self.first_seen),
            "last_seen": iso_seconds(self.last_seen),
            "members": self.member_keys[:max_members],
        }


def _medoid(x: np.ndarray, rng: np.random.Generator) -> int:
    cand = (
        np.arange(x.shape[0])
        if x.shape[0] <= _MEDOID_CANDIDATES
        else rng.choice(x.shape[0], _MEDOID_CANDIDATES, replace=False)
    )
    x64 = x.astype(np.float64)
    sq = (x64 * x64).sum(1)
    d2 = np.maximum(sq[cand][:, None] + sq[None, :] - 2.0 * x64[cand] @ x64.T, 0.0)
    return int(cand[np.sqrt(d2).sum(axis=1).argmin()])


def _principal(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` centred and projected onto its ``k`` leading principal components (all of ``x`` if fewer)."""
    z = x.astype(np.float64) - x.mean(axis=0)
    k = min(k, z.shape[0] - 1, z.shape[1])
    if k < 1 or k >= z.shape[1]:
        return z
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    return z @ vt[:k].T


def _kmeans(x: np.ndarray, n_clusters: int | None, max_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = x.shape[0]
    if n_clusters is not None:
        k = min(n_clusters, n)
        return (
            KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
            if k > 1
            else np.zeros(n, dtype=int)
        )
    if n < 3:
        return np.zeros(n, dtype=int)
    best, best_labels = -2.0, np.zeros(n, dtype=int)
    for k in range(2, min(max_clusters, n - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
        if len(set(labels.tolist())) < 2:
            continue
        s = float(silhouette_score(x, labels, sample_size=min(n, _SILHOUETTE_SAMPLE), random_state=seed))
        if s > best:
            best, best_labels = s, labels
    return best_labels


def what_is_missing(
    reference: DriftReference,
    embeddings: object,
    *,
    novel: object | None = None,
    times: object | None = None,
    keys: Sequence[str] | None = None,
    method: str = "kmeans",
    n_clusters: int | None = None,
    max_clusters: int = 8,
    n_neighbors: int = 5,
    n_components: int = 10,
    seed: int = 0,
) -> list[MissingCluster]:
    """Cluster the novel images of ``embeddings`` (rows where ``novel`` is true; all rows when ``None``)."""
    require_sklearn()
    x_all = as_sample(embeddings, "window", dim=reference.dim, minimum=1)
    n = x_all.shape[0]
    mask = np.ones(n, dtype=bool) if novel is None else np.asarray(novel, dtype=bool)
    if mask.shape != (n,):
        raise InvalidInputError(f"novel has shape {mask.shape} for {n} images")
    t = None if times is None else np.asarray(times, dtype=np.float64)
    if t is not None and t.shape != (n,):
        raise InvalidInputError(f"times has shape {t.shape} for {n} images")
    if keys is not None and len(keys) != n:
        raise InvalidInputError(f"keys has {len(keys)} entries for {n} images")
    if method not in ("kmeans", "hdbscan"):
        raise InvalidInputError(f"unknown clustering method {method!r}; choose kmeans or hdbscan")
    if n_clusters is not None:
        n_clusters = check_int(n_clusters, "n_clusters", minimum=1)
    max_clusters = check_int(max_clusters, "max_clusters", minimum=2)
    pos = np.flatnonzero(mask)
    if pos.size == 0:
        return []
    x = x_all[pos]
    z = _principal(x, n_components)
    if method == "hdbscan" and pos.size >= 5:
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(min_cluster_size=max(5, pos.size // 50), copy=True).fit_predict(z)
    else:
        labels = _kmeans(z, n_clusters, max_clusters, seed)
    dist1, _ = reference.nearest(x, 1)
    rng = np.random.default_rng(seed)
    names = [str(k) for k in keys] if keys is not None else [f"#{i}" for i in range(n)]
    out = []
    for c in sorted(set(labels.tolist()), key=lambda c: (-int((labels == c).sum()), c)):
        members = np.flatnonzero(labels == c)
        med = members[_medoid(x[members], rng)]
        nd, ni = reference.nearest(x[med : med + 1], n_neighbors)
        ts = None if t is None else t[pos[members]]
        ts = None if ts is None or not np.isfinite(ts).any() else ts[np.isfinite(ts)]
        out.append(
            MissingCluster(
                cluster=int(c),
                size=int(members.size),
                members=pos[members],
                medoid=int(pos[med]),
                medoid_key=names[pos[med]] if c != -1 else "(unclustered)",
                neighbors=[(reference.ids[j], float(d)) for j, d in zip(ni[0], nd[0], strict=True)],
                distance=float(np.median(dist1[members, 0])),
                first_seen=None if ts is None else float(ts.min()),
                last_seen=None if ts is None else float(ts.max()),
                member_keys=[names[i] for i in pos[members]],
            )
        )
    return out
