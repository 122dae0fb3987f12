"""Scorers: embeddings → novelty scores, **higher = more novel**. An explicit registry maps names to classes.

A scorer of your own saves and loads with a detector once its class is registered::

    @novelty.register_scorer
    class MahalanobisScorer(novelty.Scorer):
        name = "mahalanobis"
        ...

Loading never imports code named by a manifest: the class must be registered in the loading process (import
the module that defines it first), otherwise loading fails with :class:`~novelty.errors.ArtifactVersionError`.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from novelty.errors import InvalidInputError, UnknownNameError
from novelty.params import check_known_params
from novelty.scorers.autoencoder import AutoencoderScorer
from novelty.scorers.base import Scorer
from novelty.scorers.class_knn import ClassKNNScorer
from novelty.scorers.knn import KNNScorer, LocalKNNScorer
from novelty.scorers.logit import LogitScorer
from novelty.scorers.mahalanobis import MahalanobisScorer
from novelty.scorers.patch import PatchKNNScorer

__all__ = [
    "REGISTRY",
    "AutoencoderScorer",
    "ClassKNNScorer",
    "KNNScorer",
    "LocalKNNScorer",
    "LogitScorer",
    "MahalanobisScorer",
    "PatchKNNScorer",
    "Scorer",
    "create_scorer",
    "register_scorer",
]

REGISTRY: dict[str, type[Scorer]] = {}

S = TypeVar("S", bound=type[Scorer])
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def register_scorer(cls: S) -> S:
    """Class decorator: make a :class:`Scorer` subclass known by its ``name`` to ``create_scorer`` and to
    detector loading. The class must implement ``get_params`` and ``state_arrays`` / ``from_state``."""
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise InvalidInputError(f"register_scorer expects a subclass of novelty.Scorer, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"{cls.__qualname__}.name must be a short name of letters, digits, '.', '_' or '-' "
            f"(it names the scorer's file in a saved detector); got {name!r}"
        )
    if getattr(cls.from_state, "__func__", None) is Scorer.from_state.__func__:  # type: ignore[attr-defined]
        raise InvalidInputError(
            f"{cls.__qualname__} must implement the classmethod from_state(params, arrays, *, index=None) so "
            "that a saved detector can rebuild it"
        )
    existing = REGISTRY.get(name)
    if existing is not None and (existing.__module__, existing.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise InvalidInputError(
            f"scorer name {name!r} is already registered to {existing.__module__}.{existing.__qualname__}; "
            "give your scorer another name"
        )
    REGISTRY[name] = cls  # the same class defined again (a re-imported module) replaces its older self
    return cls


for _builtin in (
    KNNScorer,
    LocalKNNScorer,
    AutoencoderScorer,
    MahalanobisScorer,
    ClassKNNScorer,
    LogitScorer,
    PatchKNNScorer,
):
    register_scorer(_builtin)


def create_scorer(spec: str | Scorer, **params: Any) -> Scorer:
    """A scorer from its registry name (with parameters) or an instance (returned as is)."""
    if isinstance(spec, Scorer):
        if params:
            raise InvalidInputError(
                f"parameters {sorted(params)} were given with a {type(spec).__name__} instance; "
                "pass them to its constructor instead"
            )
        return spec
    try:
        cls = REGISTRY[spec]
    except (KeyError, TypeError):
        raise UnknownNameError(
            f"unknown scorer {spec!r}; registered: {', '.join(sorted(REGISTRY))}"
        ) from None
    check_known_params(cls, params, f"scorer {spec!r}")
    return cls(**params)
