"""Autoencoder scorer: reconstruction error of an MLP autoencoder trained on the training embeddings.

**Higher = more novel.** The error is the mean squared residual of the centred embedding (a plain MSE).
``standardise=True`` instead divides every dimension by its training standard deviation first, so that
low-variance dimensions weigh as much as high-variance ones; it measured worse than the plain MSE (the
standardised error is dominated by noisy near-constant dimensions; numbers in benchmarks/RESULTS.md,
"Scorers side by side"), so the plain MSE is the default. Training goes through ``training/`` (PyTorch Lightning, needed only to fit); scoring and loading need only torch.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch

from novelty.errors import InvalidInputError
from novelty.index import as_embeddings
from novelty.models import EmbeddingAutoencoder
from novelty.params import check_bool, check_int, check_real
from novelty.scorers.base import Scorer
from novelty.trainers import training_api

__all__ = ["AutoencoderScorer"]

_MIN_FIT = 10  # the autoencoder holds out a validation part for early stopping


class AutoencoderScorer(Scorer):
    """Reconstruction error of an embedding autoencoder. Higher = more novel.

    Parameters: ``hidden`` widths and ``bottleneck`` size of the MLP, training ``max_epochs`` / ``patience``
    (early stopping on a validation split of the training embeddings), ``lr`` and ``seed``.
    """

    name = "autoencoder"

    def __init__(
        self,
        hidden: tuple[int, ...] | list[int] = (256,),
        bottleneck: int = 32,
        max_epochs: int = 200,
        patience: int = 15,
        lr: float = 1e-3,
        seed: int = 0,
        standardise: bool = False,
    ):
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (tuple, list)):
            raise InvalidInputError(f"hidden must be a list of layer widths such as [256], got {hidden!r}")
        self.hidden = tuple(check_int(h, "each hidden width", minimum=1) for h in hidden)
        self.bottleneck = check_int(bottleneck, "bottleneck", minimum=1)
        self.max_epochs = check_int(max_epochs, "max_epochs", minimum=1)
        self.patience = check_int(patience, "patience", minimum=0)
        self.lr = check_real(lr, "lr", low=0.0, low_open=True)
        self.seed = check_int(seed, "seed", minimum=0)
        self.standardise = check_bool(standardise, "standardise")

    def get_params(self) -> dict[str, Any]:
        return {
            "hidden": list(self.hidden),
            "bottleneck": self.bottleneck,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "lr": self.lr,
            "seed": self.seed,
            "standardise": self.standardise,
        }

    def min_fit_samples(self) -> int:
        return _MIN_FIT

    def fit(
        self, embeddings: np.ndarray, labels: np.ndarray | None = None, *, index: Any = None
    ) -> AutoencoderScorer:
        x = as_embeddings(embeddings)
        if x.shape[0] < _MIN_FIT:
            raise InvalidInputError(
                f"the autoencoder needs at least {_MIN_FIT} training embeddings, got {x.shape[0]}"
            )
        training = training_api("the autoencoder")
        TrainConfig, train_autoencoder = training.TrainConfig, training.train_autoencoder
        cfg = TrainConfig(max_epochs=self.max_epochs, patience=self.patience, lr=self.lr, seed=self.seed)
        res = train_autoencoder(
            x, hidden=tuple(self.hidden), bottleneck=self.bottleneck, standardise=self.standardise, config=cfg
        )
        self.model_: EmbeddingAutoencoder = cast(EmbeddingAutoencoder, res.model)
        self.epochs_ = res.epochs
        self.train_seconds_ = res.seconds
        self.fitted_ = True
        return self

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        self._check_fitted()
        x = as_embeddings(embeddings, self.model_.dim)
        out = np.empty(x.shape[0], dtype=np.float64)
        with torch.inference_mode():
            for s in range(0, x.shape[0], 4096):
                out[s : s + 4096] = (
                    self.model_.reconstruction_error(torch.from_numpy(x[s : s + 4096])).double().numpy()
                )
        return out

    def state_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {k: v.detach().cpu().numpy() for k, v in self.model_.state_dict().items()}

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, index: Any = None
    ) -> AutoencoderScorer:
        self = cls(**params)
        mean = arrays.get("mean")
        if mean is None or np.ndim(mean) != 1 or np.shape(mean)[0] < 1:
            raise InvalidInputError("autoencoder state lacks its 1-D 'mean' buffer")
        model = EmbeddingAutoencoder(int(np.shape(mean)[0]), hidden=self.hidden, bottleneck=self.bottleneck)
        try:
            model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, strict=True)
        except RuntimeError as e:
            raise InvalidInputError(f"autoencoder state does not fit its parameters: {e}") from e
        self.model_ = model.eval()
        self.fitted_ = True
        return self
