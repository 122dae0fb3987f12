"""Typed readers of each section of a detector manifest (``manifest.json`` of a saved
:class:`~novelty.detector.NoveltyDetector`): the index, the scorers, the calibration, the ids, the head, the trust
decision and the embedding layers. Every missing key or wrong type becomes an
:class:`~novelty.errors.ArtifactError` naming it; nothing named by a manifest is imported
(:mod:`novelty.persistence` saves and loads with these).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from novelty.artifact import (
    Artifact,
    ManifestReader,
    check_file_name,
)
from novelty.calibration import MultiScorerCalibrator
from novelty.embedding_layers import DEFAULT_LAYERS, check_embedding_layers
from novelty.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    InvalidInputError,
    NoveltyError,
)
from novelty.fileio import is_sha256
from novelty.head import ConditionHead
from novelty.index import EmbeddingIndex
from novelty.params import check_known_params
from novelty.scorers import REGISTRY as SCORERS
from novelty.scorers import Scorer
from novelty.trust import LOCAL_RULES, TrustCalibration

__all__ = [
    "as_artifact_error",
    "index_params",
    "read_calibration",
    "read_head",
    "read_ids",
    "read_index",
    "read_layers",
    "read_scorers",
    "read_trust",
    "str_list",
]


@contextlib.contextmanager
def as_artifact_error(source: str, where: str) -> Iterator[None]:
    """Whatever a manifest's values make a constructor or ``from_state`` raise becomes an ArtifactError."""
    try:
        yield
    except ArtifactError:
        raise
    except (NoveltyError, TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise ArtifactError(f"{source}: {where}: {e}") from e


def str_list(r: ManifestReader, section: Any, key: str, *, required: bool = True) -> list[str]:
    items = r.get(section, key, "list") if required else r.get(section, key, "list", default=[])
    for i in range(len(items)):
        r.get(items, i, "str", where=key)
    return list(items)


def read_index(art: Artifact, r: ManifestReader) -> EmbeddingIndex:
    idx = r.section(art.manifest, "index")
    name = check_file_name(r.get(idx, "file", "str", where="index"), f"{r.source}: index.file")
    metric = r.get(idx, "metric", "str", where="index")
    factory = r.get(idx, "factory", "str", where="index", default="Flat")
    n, dim = r.get(idx, "n", "int", where="index"), r.get(idx, "dim", "int", where="index")
    kind = r.get(idx, "kind", "str|null", where="index", default=None)
    vectors = r.get(idx, "vectors", "str|null", where="index", default=None)
    meta = None
    if kind is not None:
        meta = {
            "kind": kind,
            "options": r.get(idx, "options", "dict", where="index", default={}),
            "plan": r.get(idx, "plan", "dict|null", where="index", default=None),
        }
    store = None
    if vectors is not None:
        store = art.data(check_file_name(vectors, f"{r.source}: index.vectors"))
    with as_artifact_error(r.source, "index"):
        try:
            index = EmbeddingIndex.from_bytes(
                art.data(name), metric, factory, source=str(art.root / name), meta=meta, store=store
            )
        except InvalidInputError as e:
            if "not a readable" in str(e):
                raise ArtifactIntegrityError(str(e)) from e
            raise
    if index.ntotal != n or index.dim != dim:
        raise ArtifactIntegrityError(
            f"{art.root}: the index holds {index.ntotal}×{index.dim}, the manifest says {n}×{dim}"
        )
    return index


def read_scorers(
    art: Artifact, r: ManifestReader, index: EmbeddingIndex
) -> tuple[list[Scorer], dict[str, dict[str, Any]]]:
    """The scorers, each rebuilt by the class registered under its name (never one the manifest names)."""
    scorers: list[Scorer] = []
    params: dict[str, dict[str, Any]] = {}
    entries = r.get(art.manifest, "scorers", "list")
    if not entries:
        raise ArtifactError(f"{r.source}: 'scorers' is empty; a detector has at least one scorer")
    for i in range(len(entries)):
        where = f"scorers[{i}]"
        entry = r.section(entries, i, where="scorers")
        name = r.get(entry, "name", "str", where=where)
        recorded = r.get(entry, "class", "str|null", where=where, default=None)
        sp = r.get(entry, "params", "dict", where=where)
        file = r.get(entry, "file", "str|null", where=where, default=None)
        cls = SCORERS.get(name)
        if cls is None:
            raise ArtifactVersionError(
                f"{art.root}: scorer {name!r} (class {recorded or '?'}) is not registered in this process. "
                "A detector never imports code named by its manifest: import the module that defines the "
                "scorer and register it with @novelty.register_scorer, then load again. "
                f"Registered: {', '.join(sorted(SCORERS))}"
            )
        if recorded is not None and recorded != cls.__name__:
            raise ArtifactVersionError(
                f"{art.root}: scorer {name!r} was saved by class {recorded}, but {cls.__qualname__} is "
                "registered under that name here"
            )
        if name in params:
            raise ArtifactError(f"{r.source}: scorer {name!r} is listed twice")
        arrays = art.arrays(check_file_name(file, f"{r.source}: {where}.file")) if file is not None else {}
        with as_artifact_error(r.source, f"{where} ({name})"):
            check_known_params(cls, sp, f"scorer {name!r}")
            scorer = cls.from_state(sp, arrays, index=index)
        if not isinstance(scorer, cls):
            raise ArtifactError(
                f"{r.source}: {cls.__qualname__}.from_state did not return a {cls.__qualname__}"
            )
        scorers.append(scorer)
        params[name] = sp
    return scorers, params


def read_calibration(art: Artifact, r: ManifestReader, names: list[str]) -> tuple[MultiScorerCalibrator, str]:
    cal = r.section(art.manifest, "calibration")
    name = check_file_name(r.get(cal, "file", "str", where="calibration"), f"{r.source}: calibration.file")
    split = r.get(cal, "split", "str", where="calibration", default="random")
    n = r.get(cal, "n", "int|null", where="calibration", default=None)
    with as_artifact_error(r.source, "calibration"):
        calibrator = MultiScorerCalibrator.from_state(names, art.arrays(name))
    if n is not None and calibrator.n != n:
        raise ArtifactIntegrityError(
            f"{art.root}: {name} holds {calibrator.n} calibration scores, the manifest says {n}"
        )
    return calibrator, split


def read_ids(
    art: Artifact, r: ManifestReader, n_train: int
) -> tuple[list[str], list[str], tuple[str, ...] | None]:
    """The training and calibration ids, and the sha256 of every image the fit saw (``None``: not recorded,
    as in artifacts of releases before it was)."""
    name = check_file_name(
        r.get(art.manifest, "train_ids", "str", default="train_ids.json"), f"{r.source}: train_ids"
    )
    ids = art.json(name)
    ri = ManifestReader(str(art.root / name))
    train, calibration = str_list(ri, ids, "train"), str_list(ri, ids, "calibration", required=False)
    if len(train) != n_train:
        raise ArtifactIntegrityError(
            f"{art.root / name}: {len(train)} training ids for an index of {n_train} embeddings"
        )
    shas = None
    if isinstance(ids, dict) and ids.get("sha256") is not None:
        raw = str_list(ri, ids, "sha256")
        if not all(map(is_sha256, raw)) or list(raw) != sorted(set(raw)):
            raise ArtifactIntegrityError(
                f"{art.root / name}: 'sha256' must be sorted, distinct sha256 digests"
            )
        shas = tuple(raw)
    return train, calibration, shas


def read_head(
    art: Artifact, r: ManifestReader, dim: int
) -> tuple[ConditionHead | None, dict[str, Any] | None]:
    meta = r.section(art.manifest, "head", optional=True)
    if meta is None:
        return None, None
    name = check_file_name(r.get(meta, "file", "str", where="head"), f"{r.source}: head.file")
    params = r.get(meta, "params", "dict", where="head")
    r.get(meta, "classes", "list", where="head")
    r.get(meta, "temperature", "number", where="head")
    r.get(meta, "dim", "int", where="head")
    with as_artifact_error(r.source, "head"):
        head = ConditionHead.from_state(params, meta, art.arrays(name))
    if head.model_.dim != dim:
        raise ArtifactIntegrityError(
            f"{art.root}: the head takes {head.model_.dim}-d embeddings, the index {dim}-d"
        )
    return head, params


def read_trust(
    art: Artifact, r: ManifestReader, head: ConditionHead | None, n_index: int
) -> tuple[TrustCalibration | None, np.ndarray | None]:
    """The trust decision (``None`` for artifacts saved before it existed: they keep the legacy rule)."""
    meta = r.section(art.manifest, "trust", optional=True)
    if meta is None:
        return None, None
    if head is None:
        raise ArtifactIntegrityError(f"{art.root}: a trust decision without a head")
    name = check_file_name(r.get(meta, "file", "str", where="trust"), f"{r.source}: trust.file")
    arrays = art.arrays(name)
    with as_artifact_error(r.source, "trust"):
        trust = TrustCalibration.from_state(meta, arrays)
    correct = arrays.get("trust.train_correct")
    if trust.rule in LOCAL_RULES and (correct is None or correct.shape != (n_index,)):
        raise ArtifactIntegrityError(
            f"{art.root}: trust rule {trust.rule!r} needs the cross-fitted correctness of every indexed image"
        )
    if trust.scales is not None and trust.scales.shape != (n_index,):
        raise ArtifactIntegrityError(
            f"{art.root}: the trust decision holds {trust.scales.shape[0]} neighbour scales for {n_index} "
            "indexed images"
        )
    return trust, None if correct is None else correct.astype(bool)


def index_params(r: ManifestReader, idx: Mapping[str, Any]) -> dict[str, Any]:
    """The index's constructor parameters as a saved manifest describes them (= ``index.get_params()``)."""
    metric = r.get(idx, "metric", "str", where="index")
    factory = r.get(idx, "factory", "str", where="index", default="Flat")
    kind = r.get(idx, "kind", "str|null", where="index", default=None)
    if kind is None:
        return {"metric": metric, "factory": factory}
    options = r.get(idx, "options", "dict", where="index", default={})
    if kind == "custom":
        return {"metric": metric, "factory": factory, **options}
    if kind == "flat" and not options:
        return {"metric": metric, "factory": "Flat"}
    return {"metric": metric, "kind": kind, **options}


def read_layers(r: ManifestReader, bb: Mapping[str, Any]) -> tuple[str, ...]:
    """The embedding layers a manifest records (absent: the default, as before they could be chosen)."""
    layers = r.get(bb, "layers", "list|null", where="backbone", default=None)
    if layers is None:
        return DEFAULT_LAYERS
    try:
        return check_embedding_layers(layers)
    except InvalidInputError as e:
        raise ArtifactError(f"{r.source}: 'backbone.layers': {e}") from None
