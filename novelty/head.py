"""``ConditionHead``: a small classifier over embeddings (rain-on-windshield kind: dry / wet) with
calibrated probabilities.

Training goes through ``training/`` (PyTorch Lightning, only needed to fit); the probabilities are
temperature-scaled on the head's validation split (Guo et al., 2017), so ``probability`` is an honest
confidence on in-distribution data. On *novel* data no classifier's confidence can be trusted — that is what
the detector's p-value is for: a ``Verdict`` trusts a prediction only when the image is not novel.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from novelty.errors import InvalidInputError, NotFittedError
from novelty.index import as_embeddings
from novelty.models import ClassifierHead
from novelty.trainers import training_api

__all__ = ["ConditionHead", "fit_temperature"]

T_MIN, T_MAX = 0.25, 10.0


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` on held-out ``labels``."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    logits, labels = logits.detach().double(), labels.detach().long()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.double().exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    # bounded: a validation split the head separates perfectly would drive T → 0 (every probability → 1)
    return float(np.clip(log_t.exp().item(), T_MIN, T_MAX))


class ConditionHead:
    """A linear (``hidden=0``) or one-hidden-layer classifier on embeddings with calibrated probabilities.

    ``fit(embeddings, labels, groups=None)``: labels may be strings or integers (binary or multiclass);
    ``groups`` keeps near-duplicates on one side of the validation split.
    """

    def __init__(
        self,
        hidden: int = 0,
        dropout: float = 0.1,
        max_epochs: int = 100,
        patience: int = 10,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        val_fraction: float = 0.2,
        seed: int = 0,
    ):
        self.hidden = hidden
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr = lr
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "dropout": self.dropout,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
        }

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "model_")

    def fit(self, embeddings: np.ndarray, labels: Any, *, groups: Any = None) -> ConditionHead:
        x = as_embeddings(embeddings)
        y_raw = np.asarray(labels)
        if y_raw.ndim != 1 or y_raw.shape[0] != x.shape[0]:
            raise InvalidInputError(
                f"labels must be 1-D with one entry per embedding ({x.shape[0]}), got {y_raw.shape}"
            )
        classes = np.unique(y_raw)
        if classes.shape[0] < 2:
            raise InvalidInputError(f"a classifier needs at least two classes, got {classes.tolist()}")
        y = np.searchsorted(classes, y_raw)
        training = training_api("the head")
        TrainConfig, train_classifier = training.TrainConfig, training.train_classifier
        cfg = TrainConfig(
            max_epochs=self.max_epochs,
            patience=self.patience,
            lr=self.lr,
            weight_decay=self.weight_decay,
            val_fraction=self.val_fraction,
            seed=self.seed,
        )
        g = None if groups is None else np.asarray(groups)
        res = train_classifier(
            x, y, int(classes.shape[0]), hidden=self.hidden, dropout=self.dropout, groups=g, config=cfg
        )
        model = cast(ClassifierHead, res.model)
        with torch.inference_mode():
            val_logits = model(torch.from_numpy(x[res.val_idx]))
        self.temperature_ = fit_temperature(val_logits.clone(), torch.from_numpy(y[res.val_idx]))
        self.val_accuracy_ = float((val_logits.argmax(1).numpy() == y[res.val_idx]).mean())
        self.classes_ = [c.item() if hasattr(c, "item") else c for c in classes]
        self.model_ = model
        self.epochs_ = res.epochs
        self.train_seconds_ = res.seconds
        return self

    def _check(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("ConditionHead is not fitted: call fit(embeddings, labels) first")

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Temperature-calibrated class probabilities, ``(n, n_classes)`` in the order of ``classes_``."""
        self._check()
        x = as_embeddings(embeddings, self.model_.dim)
        with torch.inference_mode():
            logits = self.model_(torch.from_numpy(x)).double()
            return F.softmax(logits / self.temperature_, dim=1).numpy()

    def predict(self, embeddings: np.ndarray) -> list[Any]:
        proba = self.predict_proba(embeddings)
        return [self.classes_[i] for i in proba.argmax(axis=1)]

    def state_arrays(self) -> dict[str, np.ndarray]:
        self._check()
        return {k: v.detach().cpu().numpy() for k, v in self.model_.state_dict().items()}

    def state_meta(self) -> dict[str, Any]:
        self._check()
        return {
            "classes": self.classes_,
            "temperature": self.temperature_,
            "val_accuracy": self.val_accuracy_,
            "dim": self.model_.dim,
        }

    @classmethod
    def from_state(
        cls, params: dict[str, Any], meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> ConditionHead:
        self = cls(**params)
        model = ClassifierHead(
            int(meta["dim"]), len(meta["classes"]), hidden=self.hidden, dropout=self.dropout
        )
        try:
            model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, strict=True)
        except RuntimeError as e:
            raise InvalidInputError(f"head state does not fit its parameters: {e}") from e
        self.model_ = model.eval()
        self.classes_ = list(meta["classes"])
        self.temperature_ = float(meta["temperature"])
        self.val_accuracy_ = float(meta.get("val_accuracy", float("nan")))
        return self
