"""What a :class:`~novelty.detector.NoveltyDetector` is made of.

- :func:`build_parts`: fresh, unfitted scorers, head and index built from a detector's parameters (and
  checking them). Instances the caller passed are cloned, so they never receive fitted state.
- :class:`FittedState`: everything ``fit`` learns (or ``load`` restores), swapped in as one object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from novelty.calibration import MultiScorerCalibrator
from novelty.errors import InvalidInputError
from novelty.head import ConditionHead
from novelty.index import INDEX_KINDS, EmbeddingIndex
from novelty.params import check_known_params, clone
from novelty.scorers import Scorer, create_scorer
from novelty.trust import TrustCalibration

__all__ = ["DetectorParts", "FittedState", "build_parts"]


@dataclass(frozen=True)
class FittedState:
    """Everything ``fit`` learns, as one object: a detector never holds the index of one fit beside the
    calibration of another, and a failed fit leaves the previous state in place."""

    index: EmbeddingIndex
    scorers: tuple[Scorer, ...]
    calibrator: MultiScorerCalibrator
    head: ConditionHead | None
    train_ids: list[str]
    calibration_ids: list[str]
    dim: int
    split: str
    artifact_id: str | None = None  # sha256 of the manifest saved or loaded; None after an unsaved fit
    # the trust decision (novelty.trust) of a detector fitted with labels; None: no head, or an artifact saved
    # before the decision existed (trusted = not novel, named as the legacy rule)
    trust: TrustCalibration | None = None
    # (n_fit,) whether cross-fitted heads got each indexed training image right, for the local trust rules
    train_correct: np.ndarray | None = None
    # the sha256 of the bytes of every image the fit saw (fitted or calibrated on), sorted and unique: what a
    # test set must not contain. None where unknown (a fit from embeddings or PIL images, an older artifact)
    trained_sha256: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DetectorParts:
    """Fresh, unfitted parts for one ``fit``."""

    scorers: list[Scorer]
    head: ConditionHead | None  # None when head=False
    index: EmbeddingIndex  # empty, of the kind asked for

    def min_fit(self, with_head: bool) -> tuple[int, list[str]]:
        """The fewest images the fitting part needs, and who needs how many."""
        needs = [(s.min_fit_samples(), f"scorer {s!r} needs {s.min_fit_samples()}") for s in self.scorers]
        if with_head and self.head is not None:
            needs.append((self.head.min_fit_samples(), f"the head needs {self.head.min_fit_samples()}"))
        return max(k for k, _ in needs), [why for _, why in needs]


def _scorers(spec: Any) -> list[Scorer]:
    if isinstance(spec, (str, Scorer)):
        spec = (spec,)
    if isinstance(spec, Mapping):
        built = []
        for name, params in spec.items():
            if params is not None and not isinstance(params, Mapping):
                raise InvalidInputError(f"scorers[{name!r}] must be a dict of parameters, got {params!r}")
            built.append(create_scorer(name, **(params or {})))
    elif isinstance(spec, Sequence):
        built = [clone(s) if isinstance(s, Scorer) else create_scorer(s) for s in spec]
    else:
        raise InvalidInputError(f"scorers must be names, Scorer instances or {{name: params}}; got {spec!r}")
    if not built:
        raise InvalidInputError("at least one scorer is needed, e.g. scorers=('knn',)")
    names = [s.name for s in built]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"each scorer may appear once; got {names}")
    return built


def _head(spec: Any, seed: int) -> ConditionHead | None:
    if spec is False:
        return None
    if isinstance(spec, ConditionHead):
        return clone(spec)
    if isinstance(spec, Mapping):
        check_known_params(ConditionHead, spec, "head")
        return ConditionHead(**{"seed": seed, **spec})
    if spec is None or spec is True:
        return ConditionHead(seed=seed)
    raise InvalidInputError(
        f"head must be None, False, a ConditionHead or a dict of its parameters; got {spec!r}"
    )


def _index(spec: Any) -> EmbeddingIndex:
    if isinstance(spec, str) and spec in INDEX_KINDS:
        return EmbeddingIndex(metric="cosine", kind=spec)
    if spec is None or isinstance(spec, str):
        return EmbeddingIndex(metric="cosine", factory=spec or "Flat")
    if isinstance(spec, EmbeddingIndex):
        return EmbeddingIndex(**spec.get_params())
    raise InvalidInputError(
        f"index must be None, a FAISS factory string or an EmbeddingIndex (or an index kind: {', '.join(INDEX_KINDS)}); got {type(spec).__name__}"
    )


def build_parts(scorers: Any, head: Any, index: Any, seed: int) -> DetectorParts:
    """Fresh parts from a detector's ``scorers``, ``head`` and ``index`` parameters; any bad value raises
    :class:`~novelty.errors.InvalidInputError`."""
    built, proto = _scorers(scorers), _index(index)
    for s in built:
        metric = getattr(s, "metric", proto.metric)
        if s.uses_index and metric != proto.metric:
            raise InvalidInputError(
                f"scorer {s!r} measures {metric} distances but the index is {proto.metric}; "
                "give them the same metric"
            )
    return DetectorParts(built, _head(head, seed), proto)
