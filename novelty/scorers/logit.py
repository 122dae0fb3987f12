"""Classifier-logit scorer for labelled training data: max-logit (Hendrycks et al., 2022, "Scaling
out-of-distribution detection for real-world settings") or energy (Liu et al., 2020, "Energy-based
out-of-distribution detection") of a linear classifier over the known classes. **Higher = more novel.**

``fit(embeddings, labels)`` trains a multinomial logistic regression on the embeddings (full-batch L-BFGS
in float32 with an L2 penalty ``l2``, deterministic, torch only: no Lightning, no scikit-learn). An image that no known
class claims strongly gets a low maximum logit (or a low log-sum-exp of the logits): the score is its negative.
Where classes are close relatives (a shirt beside T-shirts, pullovers and coats) distances in a generic
embedding barely separate a new class, while a classifier trained on the known ones has learnt which
directions matter. It needs labels: the detector passes them when it is fitted with ``labels=``.
State: the classifier's ``weight`` (classes × d) and ``bias``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from novelty.errors import InvalidInputError
from novelty.index import as_embeddings
from novelty.params import check_choice, check_int, check_real
from novelty.scorers.base import Scorer
from novelty.scorers.mahalanobis import class_codes

__all__ = ["LogitScorer"]

_SCORES = ("max-logit", "energy")


class LogitScorer(Scorer):
    """Negative max-logit (or negative energy) of a linear classifier over the labelled classes.
    Higher = more novel. Needs labels."""

    name = "logit"
    requires_labels: ClassVar[bool] = True

    def __init__(self, score: str = "max-logit", l2: float = 1e-4, max_iter: int = 100):
        self.score_kind = check_choice(score, "score", _SCORES)
        self.l2 = check_real(l2, "l2", low=0.0)
        self.max_iter = check_int(max_iter, "max_iter", minimum=1)

    def get_params(self) -> dict[str, Any]:
        return {"score": self.score_kind, "l2": self.l2, "max_iter": self.max_iter}

    def min_fit_samples(self) -> int:
        return 2

    def fit(
        self, embeddings: np.ndarray, labels: np.ndarray | None = None, *, index: Any = None
    ) -> LogitScorer:
        x = as_embeddings(embeddings)
        if labels is None:
            raise InvalidInputError(
                "the 'logit' scorer needs class labels of the training images: fit the detector with "
                "labels=... (or use a scorer without labels, such as 'knn')"
            )
        codes = class_codes(labels, x.shape[0])
        n_classes = int(codes.max()) + 1
        if n_classes < 2:
            raise InvalidInputError(f"the 'logit' scorer needs at least two classes, got {n_classes}")
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(codes)
        w = torch.zeros((n_classes, x.shape[1]), dtype=torch.float32, requires_grad=True)
        b = torch.zeros(n_classes, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w, b],
            lr=1.0,
            max_iter=self.max_iter,
            tolerance_grad=1e-7,
            tolerance_change=1e-10,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(xt @ w.T + b, yt) + 0.5 * self.l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight_ = w.detach().double().numpy()
        self.bias_ = b.detach().double().numpy()
        self.fitted_ = True
        return self

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """The classifier's logits, ``(n, classes)``, classes in sorted label order."""
        self._check_fitted()
        x = as_embeddings(embeddings, self.weight_.shape[1]).astype(np.float64)
        return x @ self.weight_.T + self.bias_

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        z = self.logits(embeddings)
        if self.score_kind == "max-logit":
            return -z.max(axis=1)
        m = z.max(axis=1)
        return -(m + np.log(np.exp(z - m[:, None]).sum(axis=1)))

    def state_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {"weight": self.weight_, "bias": self.bias_}

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, index: Any = None
    ) -> LogitScorer:
        self = cls(**params)
        try:
            w = np.asarray(arrays["weight"], dtype=np.float64)
            b = np.asarray(arrays["bias"], dtype=np.float64)
        except KeyError as e:
            raise InvalidInputError(f"the logit scorer's state lacks {e}") from None
        if w.ndim != 2 or b.shape != (w.shape[0],) or w.shape[0] < 2:
            raise InvalidInputError(f"inconsistent logit scorer state: weight {w.shape}, bias {b.shape}")
        self.weight_, self.bias_ = w, b
        self.fitted_ = True
        return self
