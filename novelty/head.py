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
from novelty.params import check_int, check_known_params, check_real
from novelty.trainers import training_api

__all__ = ["ConditionHead", "check_labels", "fit_temperature"]

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
        self.hidden = check_int(hidden, "hidden", minimum=0)
        self.dropout = check_real(dropout, "dropout", low=0.0, high=1.0, high_open=True)
        self.max_epochs = check_int(max_epochs, "max_epochs", minimum=1)
        self.patience = check_int(patience, "patience", minimum=0)
        self.lr = check_real(lr, "lr", low=0.0, low_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", low=0.0)
        self.val_fraction = check_real(
            val_fraction, "val_fraction", low=0.0, high=1.0, low_open=True, high_open=True
        )
        self.seed = check_int(seed, "seed", minimum=0)

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

    def min_fit_samples(self) -> int:
        """The fewest labelled embeddings ``fit`` accepts: one to train on and one to validate."""
        return 2

    def fit(self, embeddings: np.ndarray, labels: Any, *, groups: Any = None) -> ConditionHead:
        x = as_embeddings(embeddings)
        y_raw = check_labels(labels, x.shape[0])
        classes = np.unique(y_raw)
        if classes.shape[0] < 2:
            raise InvalidInputError(f"a classifier needs at least two classes, got {classes.tolist()}")
        if x.shape[0] < self.min_fit_samples():
            raise InvalidInputError(
                f"the head needs at least {self.min_fit_samples()} labelled embeddings, got {x.shape[0]}"
            )
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
        check_known_params(cls, params, "ConditionHead")
        self = cls(**params)
        dim = check_int(meta.get("dim"), "the head's dim", minimum=1)
        classes = meta.get("classes")
        if (
            not isinstance(classes, list)
            or len(classes) < 2
            or not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise InvalidInputError(
                f"the head's classes must be a list of ≥ 2 distinct labels, got {classes!r}"
            )
        temperature = check_real(meta.get("temperature"), "the head's temperature", low=0.0, low_open=True)
        val_accuracy = meta.get("val_accuracy", float("nan"))
        val_accuracy = float("nan") if val_accuracy is None else check_real(val_accuracy, "val_accuracy")
        model = ClassifierHead(dim, len(classes), hidden=self.hidden, dropout=self.dropout)
        try:
            model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, strict=True)
        except RuntimeError as e:
            raise InvalidInputError(f"head state does not fit its parameters: {e}") from e
        self.model_ = model.eval()
        self.classes_ = list(classes)
        self.temperature_ = temperature
        self.val_accuracy_ = val_accuracy
        return self


def check_labels(labels: Any, n: int) -> np.ndarray:
    """Labels as a 1-D array of one kind (all strings or all numbers), one per embedding, none missing."""
    if labels is None or isinstance(labels, (str, bytes)):
        raise InvalidInputError(f"labels must be a sequence with one label per embedding, got {labels!r}")
    items = list(labels)
    if len(items) != n:
        raise InvalidInputError(f"labels must be 1-D with one entry per embedding ({n}), got {len(items)}")
    missing = [i for i, v in enumerate(items) if v is None or (isinstance(v, float) and v != v)]
    if missing:
        raise InvalidInputError(
            f"labels contain {len(missing)} missing value(s) (None or NaN), first at position {missing[0]}; "
            "label every image or leave the unlabelled ones out"
        )
    strings = [isinstance(v, str) for v in items]
    if any(strings) and not all(strings):
        kinds = sorted({type(v).__name__ for v in items})
        raise InvalidInputError(f"labels must all be strings or all numbers, got a mix of {', '.join(kinds)}")
    y = np.asarray(items)
    if y.ndim != 1:
        raise InvalidInputError(f"labels must be 1-D (one scalar per embedding), got shape {y.shape}")
    if y.dtype.kind not in "biufU":
        raise InvalidInputError(f"labels must be strings or numbers, got values of dtype {y.dtype}")
    return y
