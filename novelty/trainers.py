"""The one place where the inference library reaches the training layer.

``training/`` (a folder of its own beside ``novelty/``, installed as ``novelty.training``) holds the PyTorch
Lightning systems and data modules that fit the plain modules of :mod:`novelty.models`. Fitting a scorer or a head calls
:func:`training_api`, which imports it only then: scoring and loading never import Lightning, and an
install without the ``train`` extra gets a message that says what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from novelty.errors import NoveltyError

__all__ = ["TrainingNotInstalledError", "training_api"]


class TrainingNotInstalledError(NoveltyError, ImportError):
    """Training was asked for, but PyTorch Lightning (the ``train`` extra) is not installed."""


def training_api(what: str) -> ModuleType:
    """The ``novelty.training`` package, imported on first use; ``what`` names the caller for the error message."""
    try:
        return importlib.import_module("novelty.training")
    except ImportError as e:
        raise TrainingNotInstalledError(
            f"training {what} needs PyTorch Lightning ({e}); install it: pip install 'novelty[train]'"
        ) from e
