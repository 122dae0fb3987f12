"""Errors of the drift layer. All are :class:`~novelty.errors.NoveltyError` subclasses."""

from __future__ import annotations

from novelty.errors import InvalidInputError, NoveltyError

__all__ = [
    "DriftDependencyError",
    "DriftError",
    "EmptyWindowError",
    "MissingEmbeddingsError",
    "NonFiniteEmbeddingsError",
    "WindowTooSmallError",
]


class DriftError(NoveltyError):
    """A drift analysis could not run: the message says what is wrong and how to fix it."""


class EmptyWindowError(DriftError, InvalidInputError):
    """A window holds no image (or no readable, scored image)."""


class WindowTooSmallError(DriftError, InvalidInputError):
    """A window (or the reference) holds too few images for the test asked for."""


class NonFiniteEmbeddingsError(DriftError, InvalidInputError):
    """Embeddings or p-values contain NaN or infinity."""


class MissingEmbeddingsError(DriftError):
    """Results were written without embeddings (``novelty score`` without ``--embeddings``)."""


class DriftDependencyError(DriftError, ImportError):
    """scikit-learn or scipy is missing: ``pip install 'novelty[drift]'``."""
