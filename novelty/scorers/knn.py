"""kNN-distance scorer (Sun et al., 2022, "Out-of-distribution detection with deep nearest neighbors").

The score of an embedding is the Euclidean distance to its k-th nearest training embedding
(``aggregate="kth"``) or the mean distance to its k nearest (``aggregate="mean"``). On L2-normalised
embeddings this is monotone in cosine similarity. **Higher = more novel.**

:class:`LocalKNNScorer` (``"knn-local"``) divides that distance by the local k-th-neighbour distance of the
training data around the query (a simplified LOF), for training sets of clusters with different spreads.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from novelty.errors import InvalidInputError
from novelty.index import EmbeddingIndex, as_embeddings
from novelty.params import check_choice, check_int, check_real
from novelty.scorers.base import Scorer

__all__ = ["KNNScorer", "LocalKNNScorer"]

_AGGREGATES = ("kth", "mean")
_METRICS = ("cosine", "euclidean")


class KNNScorer(Scorer):
    """Distance to the k-th (or mean of the k) nearest training embeddings. Higher = more novel.

    ``k=5`` is a robust default for training sets of hundreds to tens of thousands of images; larger sets
    tolerate larger k. ``fit`` builds a FAISS index unless the detector passes its shared one.
    """

    name = "knn"
    uses_index = True

    def __init__(self, k: int = 5, aggregate: str = "kth", metric: str = "cosine"):
        self.k = k
        self.aggregate = aggregate
        self.metric = metric
        self._validate()

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "aggregate": self.aggregate, "metric": self.metric}

    def _validate(self) -> None:
        self.k = check_int(self.k, "k", minimum=1)
        check_choice(self.aggregate, "aggregate", _AGGREGATES)
        check_choice(self.metric, "metric", _METRICS)

    def min_fit_samples(self) -> int:
        return self.k + 1

    def fit(
        self, embeddings: np.ndarray, labels: np.ndarray | None = None, *, index: EmbeddingIndex | None = None
    ) -> KNNScorer:
        self._validate()
        x = as_embeddings(embeddings)
        if x.shape[0] <= self.k:
            raise InvalidInputError(
                f"k={self.k} needs more than {self.k} training embeddings, got {x.shape[0]}"
            )
        if index is None:
            index = EmbeddingIndex(metric=self.metric).add(x)
        elif index.ntotal != x.shape[0] or index.metric != self.metric:
            raise InvalidInputError(
                "the shared index must hold exactly the fitted embeddings with the same metric"
            )
        self.index_ = index
        self.n_train_ = x.shape[0]
        self.fitted_ = True
        return self

    def _aggregate(self, dist: np.ndarray) -> np.ndarray:
        agg = dist[:, -1] if self.aggregate == "kth" else dist.mean(axis=1)
        return agg.astype(np.float64)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        self._check_fitted()
        dist, _ = self.index_.search(embeddings, self.k)
        return self._aggregate(dist)

    def score_training(self) -> np.ndarray:
        """Leave-one-out scores of the training embeddings themselves (each excluded from its own neighbours)."""
        self._check_fitted()
        dist, _ = self.index_.search(self.index_.vectors(), self.k, exclude_self=True)
        return self._aggregate(dist)

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, index: EmbeddingIndex | None = None
    ) -> KNNScorer:
        if index is None:
            raise InvalidInputError("KNNScorer.from_state needs the detector's index")
        self = cls(**params)
        if index.metric != self.metric:
            raise InvalidInputError(
                f"{cls.__name__} with metric={self.metric!r} cannot use an index of metric {index.metric!r}"
            )
        self.index_ = index
        self.n_train_ = index.ntotal
        self.fitted_ = True
        return self


class LocalKNNScorer(KNNScorer):
    """kNN distance relative to the local density of the training data. Higher = more novel.

    ``score(x) = d_k(x) / mean_{j ∈ N_k(x)} d_k(j)``: the distance from ``x`` to its k-th nearest training
    embedding, divided by the mean k-th-neighbour distance (leave-one-out) of those k training embeddings
    themselves. A simplified Local Outlier Factor (Breunig et al., 2000) without reachability distances.

    Where the training data has clusters of very different spread (clothing classes, product types), a plain
    kNN distance calls every point of a loose cluster novel and misses novel points next to a tight one; the
    ratio compares like with like. Under a global shift (darkness, fog) every distance grows together and
    the plain kNN distance is the stronger signal — so this scorer complements ``knn`` rather than replaces it.
    State: the training embeddings' own k-th-neighbour distances (``kth_distance``).
    """

    name = "knn-local"

    def __init__(self, k: int = 10, metric: str = "cosine", eps: float = 1e-6):
        super().__init__(k=k, aggregate="kth", metric=metric)
        self.eps = check_real(eps, "eps", low=0.0)

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "metric": self.metric, "eps": self.eps}

    def fit(
        self, embeddings: np.ndarray, labels: np.ndarray | None = None, *, index: EmbeddingIndex | None = None
    ) -> LocalKNNScorer:
        super().fit(embeddings, labels, index=index)
        dist, _ = self.index_.search(self.index_.vectors(), self.k, exclude_self=True)
        self.kth_distance_ = dist[:, -1].astype(np.float64)
        return self

    def _relative(self, dist: np.ndarray, ids: np.ndarray) -> np.ndarray:
        local = self.kth_distance_[ids].mean(axis=1)
        return dist[:, -1].astype(np.float64) / (local + float(self.eps))

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        self._check_fitted()
        dist, ids = self.index_.search(embeddings, self.k)
        return self._relative(dist, ids)

    def score_training(self) -> np.ndarray:
        self._check_fitted()
        dist, ids = self.index_.search(self.index_.vectors(), self.k, exclude_self=True)
        return self._relative(dist, ids)

    def state_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {"kth_distance": self.kth_distance_}

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, index: EmbeddingIndex | None = None
    ) -> LocalKNNScorer:
        if index is None:
            raise InvalidInputError("LocalKNNScorer.from_state needs the detector's index")
        kth = np.asarray(arrays.get("kth_distance"), dtype=np.float64)
        if kth.shape != (index.ntotal,):
            raise InvalidInputError(
                f"kth_distance has shape {kth.shape}, the index holds {index.ntotal} embeddings"
            )
        self = cast(LocalKNNScorer, super().from_state(params, arrays, index=index))
        self.kth_distance_ = kth
        return self
