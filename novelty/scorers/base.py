"""The scorer interface: embeddings in, one float per row out — **higher = more novel**."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from novelty.errors import NotFittedError

__all__ = ["Scorer"]


class Scorer(ABC):
    """Scores embeddings by how far they lie from the fitted (training) distribution.

    Contract, checked for every registered scorer by ``tests/core/test_scorers.py``:
    - ``__init__`` checks and stores parameters (a bad value raises ``InvalidInputError`` there);
      ``fit(embeddings, labels=None)`` learns state and returns ``self``;
    - ``score(embeddings)`` returns a float64 array of shape ``(n,)``; **higher means more novel**;
    - ``get_params()`` returns the constructor arguments (JSON-serialisable), so that
      ``type(s)(**s.get_params())`` is an unfitted copy (:func:`novelty.params.clone`);
    - ``min_fit_samples()`` is the fewest training embeddings ``fit`` accepts;
    - ``state_arrays()`` / ``from_state(params, arrays, index=...)`` round-trip the fitted state without pickle.
    Scorers that use the detector's shared FAISS index set ``uses_index = True`` and receive it in ``fit``.
    Scorers of spatial patch features (``input_kind = "patches"``, e.g. ``patch-knn``) receive ``(n, h, w, c)``
    patch features instead of embeddings; a detector computes them only when such a scorer is used.
    A scorer of your own is saved and loaded with a detector once registered (:func:`novelty.register_scorer`).
    """

    name: ClassVar[str]
    uses_index: ClassVar[bool] = False
    input_kind: ClassVar[str] = "embeddings"  # or "patches": spatial features from a detector's patch pass

    @abstractmethod
    def fit(
        self, embeddings: np.ndarray, labels: np.ndarray | None = None, *, index: Any = None
    ) -> Scorer: ...

    @abstractmethod
    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Novelty scores, shape ``(n,)``: higher = more novel."""

    @abstractmethod
    def get_params(self) -> dict[str, Any]: ...

    def min_fit_samples(self) -> int:
        """The fewest training embeddings ``fit`` accepts (a detector adds its calibration images on top)."""
        return 1

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as named numpy arrays (saved as safetensors). Index-based scorers have none."""
        return {}

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, index: Any = None
    ) -> Scorer:
        raise NotImplementedError(f"{cls.__name__} does not implement from_state")

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "fitted_", False)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(embeddings) first")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
