"""Mahalanobis-distance scorer (Lee et al., 2018, "A simple unified framework for detecting out-of-distribution
samples and adversarial attacks"), with a shrunk covariance. **Higher = more novel.**

Without labels the training embeddings are one Gaussian: the score is the squared Mahalanobis distance to
their mean. With labels (``NoveltyDetector.fit(..., labels=...)``) and ``class_conditional=True`` every class
has its own mean and all share one within-class covariance (linear discriminant analysis); the score is the
squared distance to the *nearest* class mean.

The covariance ``S`` of a few thousand embeddings of dimension 1280 is near singular, so it is shrunk towards
a multiple of the identity: ``(1 − shrinkage) · S + shrinkage · mean(diag S) · I``. State: the class means
and the whitening matrix ``W`` (``d × d``, ``Σ⁻¹ = W Wᵀ``); the score is ``‖(x − μ) W‖²``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from novelty.errors import InvalidInputError
from novelty.index import as_embeddings
from novelty.params import check_bool, check_real
from novelty.scorers.base import Scorer

__all__ = ["MahalanobisScorer"]

_CHUNK = 4096


def class_codes(labels: Any, n: int) -> np.ndarray:
    """Integer codes ``0..C-1`` of ``labels`` (any comparable values), or all zeros when ``labels`` is None."""
    if labels is None:
        return np.zeros(n, dtype=np.int64)
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise InvalidInputError(f"labels must hold one entry per embedding: got shape {y.shape} for {n}")
    _, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.int64).ravel()


class MahalanobisScorer(Scorer):
    """Squared Mahalanobis distance to the (nearest class) mean. Higher = more novel.

    Parameters: ``shrinkage`` in [0, 1] (share of the identity in the covariance; 0 only when the training
    embeddings outnumber their dimension well), ``class_conditional`` (use labels when ``fit`` gets them).
    """

    name = "mahalanobis"

    def __init__(self, shrinkage: float = 0.1, class_conditional: bool = True):
        self.shrinkage = check_real(shrinkage, "shrinkage", low=0.0, high=1.0)
        self.class_conditional = check_bool(class_conditional, "class_conditional")

    def get_params(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage, "class_conditional": self.class_conditional}

    def min_fit_samples(self) -> int:
        return 2

    def fit(
        self, embeddings: np.ndarray, labels: np.ndarray | None = None, *, index: Any = None
    ) -> MahalanobisScorer:
        x = as_embeddings(embeddings).astype(np.float64)
        n, d = x.shape
        if n < 2:
            raise InvalidInputError(f"the Mahalanobis scorer needs at least 2 training embeddings, got {n}")
        codes = class_codes(labels if self.class_conditional else None, n)
        n_classes = int(codes.max()) + 1
        means = np.zeros((n_classes, d))
        np.add.at(means, codes, x)
        means /= np.bincount(codes, minlength=n_classes)[:, None]
        centred = x - means[codes]
        cov = centred.T @ centred / max(n - n_classes, 1)
        target = float(np.trace(cov)) / d
        if self.shrinkage == 0.0 and target == 0.0:
            raise InvalidInputError("the training embeddings have no variance: use shrinkage > 0")
        cov = (1.0 - self.shrinkage) * cov + self.shrinkage * (target or 1.0) * np.eye(d)
        vals, vecs = np.linalg.eigh(cov)
        floor = max(float(vals.max()) * 1e-10, 1e-300)
        self.whiten_ = (vecs / np.sqrt(np.maximum(vals, floor))).astype(np.float64)
        self.means_ = means
        self.fitted_ = True
        return self

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        self._check_fitted()
        x = as_embeddings(embeddings, self.whiten_.shape[0]).astype(np.float64)
        zm = self.means_ @ self.whiten_  # class means in whitened space
        out = np.empty(x.shape[0], dtype=np.float64)
        for s in range(0, x.shape[0], _CHUNK):
            z = x[s : s + _CHUNK] @ self.whiten_
            d2 = (z**2).sum(1)[:, None] - 2.0 * z @ zm.T + (zm**2).sum(1)[None, :]
            out[s : s + _CHUNK] = np.maximum(d2.min(axis=1), 0.0)
        return out

    def state_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {"means": self.means_, "whiten": self.whiten_}

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, index: Any = None
    ) -> MahalanobisScorer:
        self = cls(**params)
        try:
            means = np.asarray(arrays["means"], dtype=np.float64)
            whiten = np.asarray(arrays["whiten"], dtype=np.float64)
        except KeyError as e:
            raise InvalidInputError(f"the Mahalanobis scorer's state lacks {e}") from None
        if means.ndim != 2 or whiten.shape != (means.shape[1], means.shape[1]):
            raise InvalidInputError(
                f"inconsistent Mahalanobis state: means {means.shape}, whitening matrix {whiten.shape}"
            )
        self.means_, self.whiten_ = means, whiten
        self.fitted_ = True
        return self
