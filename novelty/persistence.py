"""A :class:`~novelty.detector.NoveltyDetector` as an artifact directory, and back.

:func:`save_detector` turns a fitted detector into a manifest and in-memory files (the FAISS index, the
calibration scores, each scorer's and the head's arrays as safetensors, the training ids as JSON) and writes
them with :func:`novelty.artifact.write_artifact`. :func:`load_detector` reads a verified
:class:`~novelty.artifact.Artifact` (every file read once and checked against its sha256), type-checks every
manifest field, parses everything from those bytes and checks the backbone's weights fingerprint.

Loading never imports code named by a manifest: a scorer is rebuilt only by the class registered under its
name in this process (:func:`novelty.register_scorer`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from novelty import __version__
from novelty.artifact import (
    Artifact,
    ManifestReader,
    arrays_to_bytes,
    check_file_name,
    read_artifact,
    write_artifact,
)
from novelty.calibration import MultiScorerCalibrator
from novelty.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    InvalidInputError,
    NoveltyError,
)
from novelty.head import ConditionHead
from novelty.index import EmbeddingIndex
from novelty.params import check_known_params
from novelty.parts import FittedState
from novelty.scorers import REGISTRY as SCORERS
from novelty.scorers import Scorer

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector
    from novelty.embedder import Embedder

__all__ = ["load_detector", "save_detector"]

D = TypeVar("D", bound="NoveltyDetector")

CALIBRATION_RULE = "p = (1 + #{cal >= s}) / (n_cal + 1); several scorers: mean of robust z-scores, then p"


# --- saving -----------------------------------------------------------------------------------------
def _plain_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"cannot save: {what} is not plain JSON ({e})") from e


def save_detector(det: NoveltyDetector, path: str | os.PathLike[str]) -> Artifact:
    """Write ``det`` (fitted) as a verified, pickle-free artifact directory, atomically."""
    st = det._require_fitted()
    import faiss
    import timm
    import torch

    emb = det.embedder
    files: dict[str, bytes] = {
        "index.faiss": st.index.to_bytes(),
        "calibration.safetensors": arrays_to_bytes(st.calibrator.state_arrays()),
        "train_ids.json": json.dumps({"train": st.train_ids, "calibration": st.calibration_ids}).encode(),
    }
    entries = []
    for s in st.scorers:
        if SCORERS.get(s.name) is not type(s):
            raise InvalidInputError(
                f"cannot save: scorer {s.name!r} ({type(s).__qualname__}) is not registered, so no process could "
                "load it; decorate the class with @novelty.register_scorer"
            )
        params = s.get_params()
        _plain_json(params, f"the parameters of scorer {s.name!r}")
        arrays = s.state_arrays()
        name = f"scorer_{s.name}.safetensors" if arrays else None
        if name is not None:
            files[name] = arrays_to_bytes(arrays)
        entries.append({"name": s.name, "class": type(s).__name__, "params": params, "file": name})
    head = None
    if st.head is not None:
        files["head.safetensors"] = arrays_to_bytes(st.head.state_arrays())
        head = {"file": "head.safetensors", "params": st.head.get_params(), **st.head.state_meta()}
        _plain_json(head, "the head's classes")
    manifest: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "novelty": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "faiss": getattr(faiss, "__version__", "unknown"),
            "numpy": np.__version__,
        },
        "params": {
            "backbone": emb.backbone_name,
            "weights": emb.weights,
            "alpha": det.alpha,
            "calibration_fraction": det.calibration_fraction,
            "n_neighbors": det.n_neighbors,
            "batch_size": emb.batch_size,
            "seed": det.seed,
            "draft": emb.draft,
        },
        "backbone": emb.config(),
        "index": {
            "file": "index.faiss",
            "metric": st.index.metric,
            "factory": st.index.factory,
            "n": st.index.ntotal,
            "dim": st.dim,
        },
        "scorers": entries,
        "calibration": {
            "file": "calibration.safetensors",
            "n": st.calibrator.n,
            "fraction": det.calibration_fraction,
            "split": st.split,
            "seed": det.seed,
            "rule": CALIBRATION_RULE,
        },
        "train_ids": "train_ids.json",
        "head": head,
    }
    return write_artifact(path, manifest, files)


# --- loading ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _as_artifact_error(source: str, where: str) -> Iterator[None]:
    """Whatever a manifest's values make a constructor or ``from_state`` raise becomes an ArtifactError."""
    try:
        yield
    except ArtifactError:
        raise
    except (NoveltyError, TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise ArtifactError(f"{source}: {where}: {e}") from e


def _str_list(r: ManifestReader, section: Any, key: str, where: str, *, required: bool = True) -> list[str]:
    items = (
        r.get(section, key, "list", where=where)
        if required
        else r.get(section, key, "list", where=where, default=[])
    )
    for i in range(len(items)):
        r.get(items, i, "str", where=f"{where}.{key}")
    return list(items)


def load_detector(
    cls: type[D],
    path: str | os.PathLike[str],
    *,
    device: str | None = "auto",
    weights: str | os.PathLike[str] | None = None,
    num_workers: int | None = None,
    embedder: Embedder | None = None,
) -> D:
    """Rebuild a detector from a verified artifact (see :meth:`NoveltyDetector.load`)."""
    art = read_artifact(path)
    root, m = art.root, art.manifest
    src = f"{root / 'manifest.json'}"
    r = ManifestReader(src)

    params = r.section(m, "params")
    p = {
        "backbone": r.get(params, "backbone", "str", where="params"),
        "weights": r.get(params, "weights", "str|null", where="params", default=None),
        "alpha": r.get(params, "alpha", "number", where="params"),
        "calibration_fraction": r.get(params, "calibration_fraction", "number", where="params"),
        "n_neighbors": r.get(params, "n_neighbors", "int", where="params"),
        "batch_size": r.get(params, "batch_size", "int", where="params", default=32),
        "seed": r.get(params, "seed", "int", where="params", default=0),
        "draft": r.get(params, "draft", "bool|null", where="params", default=None),
    }
    bb = r.section(m, "backbone")
    fingerprint = r.get(bb, "fingerprint", "str", where="backbone")
    bb_draft = r.get(bb, "draft", "bool|null", where="backbone", default=None)
    draft = p["draft"] if p["draft"] is not None else (bb_draft if bb_draft is not None else True)

    idx = r.section(m, "index")
    index_file = check_file_name(r.get(idx, "file", "str", where="index"), f"{src}: index.file")
    metric = r.get(idx, "metric", "str", where="index")
    factory = r.get(idx, "factory", "str", where="index", default="Flat")
    n_index = r.get(idx, "n", "int", where="index")
    dim = r.get(idx, "dim", "int", where="index")
    with _as_artifact_error(src, "index"):
        try:
            index = EmbeddingIndex.from_bytes(
                art.data(index_file), metric, factory, source=str(root / index_file)
            )
        except InvalidInputError as e:
            if "not a readable" in str(e):
                raise ArtifactIntegrityError(str(e)) from e
            raise
    if index.ntotal != n_index or index.dim != dim:
        raise ArtifactIntegrityError(
            f"{root}: the index holds {index.ntotal}×{index.dim}, the manifest says {n_index}×{dim}"
        )

    scorers: list[Scorer] = []
    scorer_params: dict[str, dict[str, Any]] = {}
    entries = r.get(m, "scorers", "list")
    if not entries:
        raise ArtifactError(f"{src}: 'scorers' is empty; a detector has at least one scorer")
    for i in range(len(entries)):
        where = f"scorers[{i}]"
        entry = r.section(entries, i, where="scorers")
        name = r.get(entry, "name", "str", where=where)
        recorded_class = r.get(entry, "class", "str|null", where=where, default=None)
        sp = r.get(entry, "params", "dict", where=where)
        file = r.get(entry, "file", "str|null", where=where, default=None)
        scls = SCORERS.get(name)
        if scls is None:
            raise ArtifactVersionError(
                f"{root}: scorer {name!r} (class {recorded_class or '?'}) is not registered in this process. "
                "A detector never imports code named by its manifest: import the module that defines the "
                f"scorer and register it with @novelty.register_scorer, then load again. "
                f"Registered: {', '.join(sorted(SCORERS))}"
            )
        if recorded_class is not None and recorded_class != scls.__name__:
            raise ArtifactVersionError(
                f"{root}: scorer {name!r} was saved by class {recorded_class}, but {scls.__qualname__} is "
                "registered under that name here"
            )
        if name in scorer_params:
            raise ArtifactError(f"{src}: scorer {name!r} is listed twice")
        arrays = art.arrays(check_file_name(file, f"{src}: {where}.file")) if file is not None else {}
        with _as_artifact_error(src, f"{where} ({name})"):
            check_known_params(scls, sp, f"scorer {name!r}")
            scorer = scls.from_state(sp, arrays, index=index)
        if not isinstance(scorer, scls):
            raise ArtifactError(f"{src}: {scls.__qualname__}.from_state did not return a {scls.__qualname__}")
        scorers.append(scorer)
        scorer_params[name] = sp

    cal = r.section(m, "calibration")
    cal_file = check_file_name(r.get(cal, "file", "str", where="calibration"), f"{src}: calibration.file")
    split = r.get(cal, "split", "str", where="calibration", default="random")
    cal_n = r.get(cal, "n", "int|null", where="calibration", default=None)
    with _as_artifact_error(src, "calibration"):
        calibrator = MultiScorerCalibrator.from_state(list(scorer_params), art.arrays(cal_file))
    if cal_n is not None and calibrator.n != cal_n:
        raise ArtifactIntegrityError(
            f"{root}: {cal_file} holds {calibrator.n} calibration scores, the manifest says {cal_n}"
        )

    ids_file = check_file_name(r.get(m, "train_ids", "str", default="train_ids.json"), f"{src}: train_ids")
    ids = art.json(ids_file)
    ri = ManifestReader(str(root / ids_file))
    train_ids = _str_list(ri, ids, "train", "")
    calibration_ids = _str_list(ri, ids, "calibration", "", required=False)
    if len(train_ids) != index.ntotal:
        raise ArtifactIntegrityError(
            f"{root / ids_file}: {len(train_ids)} training ids for an index of {index.ntotal} embeddings"
        )

    head_meta = r.section(m, "head", optional=True)
    head: ConditionHead | None = None
    head_params: dict[str, Any] | None = None
    if head_meta is not None:
        head_file = check_file_name(r.get(head_meta, "file", "str", where="head"), f"{src}: head.file")
        head_params = r.get(head_meta, "params", "dict", where="head")
        r.get(head_meta, "classes", "list", where="head")
        r.get(head_meta, "temperature", "number", where="head")
        r.get(head_meta, "dim", "int", where="head")
        with _as_artifact_error(src, "head"):
            head = ConditionHead.from_state(head_params, head_meta, art.arrays(head_file))
        if head.model_.dim != dim:
            raise ArtifactIntegrityError(
                f"{root}: the head takes {head.model_.dim}-d embeddings, the index {dim}-d"
            )

    _warn_versions(r.get(m, "versions", "dict", default={}), root)
    with _as_artifact_error(src, "params"):
        det = cls(
            backbone=None if embedder is not None else p["backbone"],
            scorers=scorer_params,
            weights=None if embedder is not None else (weights if weights is not None else p["weights"]),
            alpha=p["alpha"],
            calibration_fraction=p["calibration_fraction"],
            n_neighbors=p["n_neighbors"],
            device=device,
            batch_size=p["batch_size"] if embedder is None else embedder.batch_size,
            num_workers=num_workers,
            seed=p["seed"],
            head=head_params,
            draft=draft if embedder is None else embedder.draft,
            index=EmbeddingIndex(metric=metric, factory=factory),
            embedder=embedder,
        )
    det._set_fitted(
        FittedState(
            index=index,
            scorers=tuple(scorers),
            calibrator=calibrator,
            head=head,
            train_ids=train_ids,
            calibration_ids=calibration_ids,
            dim=dim,
            split=split,
            artifact_id=art.artifact_id,
        )
    )
    _check_backbone(
        det.embedder, bb_name=p["backbone"], fingerprint=fingerprint, draft=draft, dim=dim, root=root
    )
    return det


def _check_backbone(
    emb: Embedder, *, bb_name: str, fingerprint: str, draft: bool, dim: int, root: Path
) -> None:
    """The backbone embedding new images must be the one the detector was fitted with."""
    if emb.fingerprint != fingerprint:
        raise ArtifactVersionError(
            f"{root}: backbone {bb_name!r} weights differ from those the detector was fitted with "
            f"(fingerprint {emb.fingerprint[:12]}… vs {fingerprint[:12]}…, source {emb.weights_source}); "
            "scores would be meaningless. Install the recorded weights or pass weights=PATH to them."
        )
    if emb.dim != dim:
        raise ArtifactVersionError(f"{root}: backbone gives {emb.dim}-d embeddings, the index holds {dim}-d")
    if emb.draft != draft:
        raise ArtifactVersionError(
            f"{root}: the detector was fitted with JPEG draft={draft}, the embedder given uses draft={emb.draft}; "
            f"scores would shift. Pass an Embedder(..., draft={draft})."
        )


def _warn_versions(saved: Mapping[str, Any], root: Path) -> None:
    import faiss
    import timm
    import torch

    now = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "faiss": getattr(faiss, "__version__", "unknown"),
    }
    diffs = [
        f"{k} {saved[k]} → {v}" for k, v in now.items() if isinstance(saved.get(k), str) and saved[k] != v
    ]
    if diffs:
        warnings.warn(
            f"{root} was saved with other library versions ({', '.join(diffs)}); the backbone fingerprint still "
            "matches, but re-check the calibration if scores look off",
            stacklevel=4,
        )
