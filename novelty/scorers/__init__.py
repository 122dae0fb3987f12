"""Scorers: embeddings → novelty scores, **higher = more novel**. An explicit registry maps names to classes."""

from __future__ import annotations

from typing import Any

from novelty.errors import UnknownNameError
from novelty.scorers.autoencoder import AutoencoderScorer
from novelty.scorers.base import Scorer
from novelty.scorers.knn import KNNScorer, LocalKNNScorer

__all__ = ["REGISTRY", "AutoencoderScorer", "KNNScorer", "LocalKNNScorer", "Scorer", "create_scorer"]

REGISTRY: dict[str, type[Scorer]] = {
    KNNScorer.name: KNNScorer,
    LocalKNNScorer.name: LocalKNNScorer,
    AutoencoderScorer.name: AutoencoderScorer,
}


def create_scorer(spec: str | Scorer, **params: Any) -> Scorer:
    """A scorer from its registry name (with parameters) or an instance (returned as is)."""
    if isinstance(spec, Scorer):
        return spec
    try:
        cls = REGISTRY[spec]
    except (KeyError, TypeError):
        raise UnknownNameError(
            f"unknown scorer {spec!r}; registered: {', '.join(sorted(REGISTRY))}"
        ) from None
    return cls(**params)
