"""Class-conditional kNN scorer: the kNN distance to the nearest *class*, for training data with labels.
**Higher = more novel.**

With labels (``NoveltyDetector.fit(..., labels=...)``) the training embeddings are split by class; the score
of a query is ``min over classes c`` of its kNN distance within class ``c`` (the k-th, or the mean of the k
nearest, as :class:`~novelty.scorers.KNNScorer`). A query then has to sit inside one class, not between two,
to look familiar. With ``k = 1`` it equals the plain kNN; without labels it *is* the plain kNN (one class).
A class with no more than ``k`` members uses all of them.

It uses the detector's shared FAISS index for its vectors and keeps only the class code of every indexed
embedding as state (``codes``); the per-class exact indexes are rebuilt from the shared one on load.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from novelty.errors import InvalidInputError
from novelty.index import EmbeddingIndex, as_embeddings
from novelty.params import check_choice, check_int
from novelty.scorers.base import Scorer
from novelty.scorers.mahalanobis import class_codes

__all__ = ["ClassKNNScorer"]

_AGGREGATES = ("kth", "mean")


class ClassKNNScorer(Scorer):
    """kNN distance (k-th or mean of k) to the nearest class of the training data. Higher = more novel."""

    name = "knn-per-class"
    uses_index = True

    def __init__(self, k: int = 5, aggregate: str = "mean"):
        self.k = check_int(k, "k", minimum=1)
        self.aggregate = check_choice(aggregate, "aggregate", _AGGREGATES)

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "aggregate": self.aggregate}

    def min_fit_samples(self) -> int:
        return 2

    def _build(self, vectors: np.ndarray, codes: np.ndarray) -> None:
        self.class_indexes_ = [
            EmbeddingIndex(metric="cosine").add(np.ascontiguousarray(vectors[codes == c]))
            for c in range(int(codes.max()) + 1)
        ]
        self.codes_ = codes
        self.fitted_ = True

    def fit(
        self, embeddings: np.ndarray, labels: np.ndarray | None = None, *, index: EmbeddingIndex | None = None
    ) -> ClassKNNScorer:
        x = as_embeddings(embeddings)
        if x.shape[0] < 2:
            raise InvalidInputError(
                f"the class kNN scorer needs at least 2 training embeddings, got {x.shape[0]}"
            )
        if index is not None and (index.ntotal != x.shape[0] or index.metric != "cosine"):
            raise InvalidInputError("the shared index must hold exactly the fitted embeddings, metric cosine")
        codes = class_codes(labels, x.shape[0])
        vectors = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        self._build(vectors.astype(np.float32), codes)
        return self

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        self._check_fitted()
        x = as_embeddings(embeddings)
        best = np.full(x.shape[0], np.inf)
        for idx in self.class_indexes_:
            k = min(self.k, idx.ntotal)
            dist, _ = idx.search(x, k)
            agg = dist[:, -1] if self.aggregate == "kth" else dist.mean(axis=1)
            best = np.minimum(best, agg.astype(np.float64))
        return best

    def state_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {"codes": self.codes_}

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, index: EmbeddingIndex | None = None
    ) -> ClassKNNScorer:
        if index is None:
            raise InvalidInputError("ClassKNNScorer.from_state needs the detector's index")
        codes = np.asarray(arrays.get("codes"), dtype=np.int64)
        if codes.shape != (index.ntotal,) or not np.array_equal(
            np.unique(codes), np.arange(codes.max(initial=-1) + 1)
        ):
            raise InvalidInputError(
                f"codes have shape {codes.shape}, the index holds {index.ntotal} embeddings"
            )
        self = cls(**params)
        self._build(np.asarray(index.vectors(), dtype=np.float32), codes)
        return self
