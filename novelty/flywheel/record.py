"""The training record: what a detector was trained with, written beside it as ``record.json``.

    params = detector_params(det)            # the constructor parameters that define training, as JSON
    config_hash(params)                      # sha256 of their canonical JSON, the random seeds left out
    rec = TrainingRecord.load("runs/v3/record.json"); rec.save(path)
    det, rec = load_champion("REGISTRY/champion")   # the detector and its record (None when absent)

A retrained detector must have *exactly* its champion's parameters — only the data may change — and
:func:`~novelty.identity.config_hash` is the proof (:mod:`novelty.identity` says what it covers). It leaves out
the random seeds, so retraining with another seed keeps the hash (the ceteris-paribus check of
:mod:`novelty.flywheel.comparison.compare` does exactly that); the seeds are still recorded in ``params``.

Layout: a retrained detector is saved as ``DIR/detector/`` (the verified artifact, which must hold nothing
else) and ``DIR/record.json`` — the layout of a registry version. :func:`locate` accepts ``DIR``, the
detector directory itself (a registry's ``champion`` symlink points there) or a plain detector saved
without a record; a record whose ``artifact_id`` names another artifact is ignored with a warning.
A detector without a record still yields its parameters: :func:`params_from_artifact` reads them from the
artifact's manifest, and they equal :func:`detector_params` of the loaded detector.

``record.json``: ``{"format": "novelty-training-record", "format_version": 1, "params": {...},
"config_hash": str, "dataset": {"path", "version", "identity", "n", "window", "new_only"} | null,
"created": ISO-8601 UTC, "compute_s": float, "parent": artifact id | null, "artifact_id": str}``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from novelty.artifact import read_artifact
from novelty.embedding_layers import DEFAULT_LAYERS
from novelty.errors import ArtifactError, NoveltyError
from novelty.fileio import atomic_write_text, read_regular_file
from novelty.identity import (
    canonical_json,
    config_hash,
    detector_params,
    hashed_params,
    param_diff,
    with_seed,
)
from novelty.trust import LEGACY_RULE, SUPPORT_FACTOR

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector
    from novelty.embedder import Embedder

__all__ = [
    "DETECTOR_DIR",
    "FORMAT",
    "FORMAT_VERSION",
    "RECORD_NAME",
    "ConfigMismatchError",
    "DatasetRef",
    "Located",
    "TrainingRecord",
    "TrainingRecordError",
    "build_detector",
    "canonical_json",
    "config_hash",
    "detector_params",
    "hashed_params",
    "load_champion",
    "locate",
    "param_diff",
    "params_from_artifact",
    "with_seed",
]

log = logging.getLogger(__name__)

FORMAT = "novelty-training-record"
FORMAT_VERSION = 1
RECORD_NAME = "record.json"
DETECTOR_DIR = "detector"
_MAX_RECORD_BYTES = 16 << 20
_PARAM_KEYS = (
    "alpha",
    "backbone",
    "calibration_fraction",
    "draft",
    "head",
    "index",
    "n_neighbors",
    "scorers",
    "seed",
    "weights_fingerprint",
)


class TrainingRecordError(NoveltyError, ValueError):
    """A ``record.json`` is unreadable, malformed, or contradicts the detector beside it."""


class ConfigMismatchError(NoveltyError, ValueError):
    """Two detectors (or a detector and its record) were trained with different parameters."""


def params_from_artifact(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """The parameters of a saved detector (read from its verified manifest) and its artifact id.

    Equal to :func:`detector_params` of the loaded detector, without loading the backbone
    (:func:`novelty.persistence.describe_artifact`)."""
    from novelty.persistence import describe_artifact  # lazy: pulls in faiss

    summary = describe_artifact(read_artifact(path))
    return json.loads(canonical_json(summary.params)), summary.artifact_id


def check_params(params: Any, source: str = "params") -> dict[str, Any]:
    """``params`` when it has the shape :func:`detector_params` writes; else :class:`TrainingRecordError`."""
    if not isinstance(params, dict):
        raise TrainingRecordError(f"{source} must be an object, got {type(params).__name__}")
    missing = [k for k in _PARAM_KEYS if k not in params]
    extra = sorted(set(params) - set(_PARAM_KEYS) - {"trust", "layers"})
    if missing or extra:
        raise TrainingRecordError(
            f"{source}: "
            + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"unknown {', '.join(extra)}"] if extra else [])
            )
        )
    kinds: dict[str, tuple[type, ...]] = {
        "backbone": (str,),
        "weights_fingerprint": (str,),
        "draft": (bool,),
        "scorers": (list,),
        "alpha": (float, int),
        "calibration_fraction": (float, int),
        "n_neighbors": (int,),
        "seed": (int,),
        "index": (dict,),
    }
    for k, types in kinds.items():
        v = params[k]
        if not isinstance(v, types) or (bool in types) != isinstance(v, bool):
            raise TrainingRecordError(f"{source}.{k} has the wrong type ({type(v).__name__})")
    if params["head"] is not None and not isinstance(params["head"], dict):
        raise TrainingRecordError(f"{source}.head must be an object or null")
    trust = params.get("trust")
    if trust is not None and not (
        isinstance(trust, dict)
        and {"rule", "risk", "delta"} <= set(trust) <= {"rule", "risk", "delta", "support", "margin"}
        and isinstance(trust["rule"], str)
        and all(
            isinstance(trust[k], (int, float)) and not isinstance(trust[k], bool)
            for k in ("risk", "delta", "support", "margin")
            if k in trust
        )
    ):
        raise TrainingRecordError(
            f"{source}.trust must be an object of rule, risk, delta and optional support and margin"
        )
    layers = params.get("layers")
    if layers is not None and not (
        isinstance(layers, list) and layers and all(isinstance(v, str) for v in layers)
    ):
        raise TrainingRecordError(f"{source}.layers must be a non-empty list of layer names")
    if not params["scorers"] or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("params"), dict)
        for s in params["scorers"]
    ):
        raise TrainingRecordError(f"{source}.scorers must be a non-empty list of {{name, params}}")
    if not isinstance(params["index"].get("metric"), str) or not (
        isinstance(params["index"].get("factory"), str) or isinstance(params["index"].get("kind"), str)
    ):
        raise TrainingRecordError(f"{source}.index must hold the string metric and a factory or kind string")
    return params


def build_detector(
    params: Mapping[str, Any],
    *,
    embedder: Embedder | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | None = "auto",
) -> NoveltyDetector:
    """A new, unfitted detector with exactly ``params`` (the inverse of :func:`detector_params`).

    ``embedder`` shares a loaded backbone (it must be the recorded one: same name, weights fingerprint and
    draft setting); ``weights`` says where the recorded weights lie on this machine. The result's
    :func:`detector_params` equal ``params`` or :class:`ConfigMismatchError` is raised."""
    from novelty.detector import NoveltyDetector  # lazy: pulls in faiss
    from novelty.index import EmbeddingIndex  # lazy: pulls in faiss

    p = check_params(dict(params))
    if embedder is not None:
        what = {
            "backbone": (embedder.backbone_name, p["backbone"]),
            "weights fingerprint": (embedder.fingerprint, p["weights_fingerprint"]),
            "draft": (embedder.draft, p["draft"]),
        }
        for name, (have, want) in what.items():
            if have != want:
                raise ConfigMismatchError(
                    f"the embedder's {name} is {have!r}, the parameters say {want!r}: use the recorded backbone"
                )
    det = NoveltyDetector(
        backbone=None if embedder is not None else p["backbone"],
        scorers={s["name"]: s["params"] for s in p["scorers"]},
        weights=None if embedder is not None else weights,
        alpha=p["alpha"],
        calibration_fraction=p["calibration_fraction"],
        n_neighbors=p["n_neighbors"],
        device=device,
        seed=p["seed"],
        head=False if p["head"] is None else dict(p["head"]),
        draft=True if embedder is not None else p["draft"],
        index=EmbeddingIndex(**p["index"]),
        embedder=embedder,
        layers=DEFAULT_LAYERS if embedder is not None else tuple(p.get("layers", DEFAULT_LAYERS)),
        **(
            {
                "trust": p["trust"]["rule"],
                "risk": p["trust"]["risk"],
                "trust_delta": p["trust"]["delta"],
                "trust_support": p["trust"].get("support", SUPPORT_FACTOR),
                "trust_margin": p["trust"].get("margin"),
            }
            if p.get("trust") is not None
            else {"trust": LEGACY_RULE}
        ),
    )
    got = detector_params(det)
    if canonical_json(got) != canonical_json(p):
        diff = param_diff(p, got, seeds=True)
        raise ConfigMismatchError(f"the detector built differs from the recorded parameters: {diff}")
    return det


# --- the record -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetRef:
    """The training data of a record: which dataset, which version, exactly which entries."""

    path: str
    version: int
    identity: str  # Dataset.identity(version): sha256 naming that version's entries
    n: int  # entries trained on (after the window)
    window: str | None = None  # "30d", "versions 2,3", or None for every entry up to ``version``
    new_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "version": self.version,
            "identity": self.identity,
            "n": self.n,
            "window": self.window,
            "new_only": self.new_only,
        }


@dataclass(frozen=True)
class TrainingRecord:
    """What a detector was trained with (see the module docstring for ``record.json``)."""

    params: dict[str, Any]
    config_hash: str
    dataset: DatasetRef | None
    created: str
    compute_s: float
    parent: str | None = None
    artifact_id: str | None = None  # set when the detector is saved

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "params": self.params,
            "config_hash": self.config_hash,
            "dataset": None if self.dataset is None else self.dataset.to_json(),
            "created": self.created,
            "compute_s": self.compute_s,
            "parent": self.parent,
            "artifact_id": self.artifact_id,
        }

    def with_artifact(self, artifact_id: str) -> TrainingRecord:
        return replace(self, artifact_id=artifact_id)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``record.json`` atomically (``path`` may be the file or its folder)."""
        if self.artifact_id is None:
            raise TrainingRecordError(
                "a record is saved beside its detector: save the detector first and use with_artifact(id)"
            )
        target = Path(path)
        if target.is_dir():
            target = target / RECORD_NAME
        data = self.to_json()
        self.from_json(data, str(target))  # never write what could not be read back
        return atomic_write_text(target, json.dumps(data, indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainingRecord:
        """Read and validate ``record.json`` (``path`` may be the file or its folder)."""
        target = Path(path)
        if target.is_dir():
            target = target / RECORD_NAME
        try:
            raw = read_regular_file(target, max_bytes=_MAX_RECORD_BYTES)
            data = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            raise TrainingRecordError(f"{target}: no training record there") from None
        except (OSError, OverflowError, UnicodeDecodeError, ValueError) as e:
            raise TrainingRecordError(f"{target}: not a readable training record ({e})") from e
        return cls.from_json(data, str(target))

    @classmethod
    def from_json(cls, data: Any, source: str = "record") -> TrainingRecord:
        if not isinstance(data, dict):
            raise TrainingRecordError(f"{source}: a training record is a JSON object")
        if data.get("format") != FORMAT:
            raise TrainingRecordError(f"{source}: format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise TrainingRecordError(
                f"{source}: format_version {data.get('format_version')!r} is not supported (this package "
                f"reads {FORMAT_VERSION})"
            )
        params = check_params(data.get("params"), f"{source}: params")
        h = _typed(data, "config_hash", str, source)
        if h != config_hash(params):
            raise TrainingRecordError(
                f"{source}: config_hash {h[:12]}… does not match its params ({config_hash(params)[:12]}…); "
                "the record was edited"
            )
        ds = data.get("dataset")
        dataset = None
        if ds is not None:
            if not isinstance(ds, dict):
                raise TrainingRecordError(f"{source}: dataset must be an object or null")
            window = ds.get("window")
            if window is not None and not isinstance(window, str):
                raise TrainingRecordError(f"{source}: dataset.window must be a string or null")
            dataset = DatasetRef(
                path=_typed(ds, "path", str, f"{source}: dataset"),
                version=_typed(ds, "version", int, f"{source}: dataset"),
                identity=_typed(ds, "identity", str, f"{source}: dataset"),
                n=_typed(ds, "n", int, f"{source}: dataset"),
                window=window,
                new_only=_typed(ds, "new_only", bool, f"{source}: dataset"),
            )
        compute = data.get("compute_s")
        if isinstance(compute, bool) or not isinstance(compute, (int, float)) or not math.isfinite(compute):
            raise TrainingRecordError(f"{source}: compute_s must be a finite number")
        parent = data.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise TrainingRecordError(f"{source}: parent must be an artifact id or null")
        artifact_id = data.get("artifact_id")
        if artifact_id is not None and not isinstance(artifact_id, str):
            raise TrainingRecordError(f"{source}: artifact_id must be a string")
        return cls(
            params=params,
            config_hash=h,
            dataset=dataset,
            created=_typed(data, "created", str, source),
            compute_s=float(compute),
            parent=parent,
            artifact_id=artifact_id,
        )


def _typed(d: dict[str, Any], key: str, kind: type, source: str) -> Any:
    v = d.get(key)
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise TrainingRecordError(f"{source}: {key!r} must be {kind.__name__}, got {type(v).__name__}")
    return v


# --- where a detector and its record lie ------------------------------------------------------------
@dataclass(frozen=True)
class Located:
    detector_dir: Path
    record_path: Path | None  # record.json beside the detector, when there is one


def locate(path: str | os.PathLike[str]) -> Located:
    """The detector directory and its record: ``path`` is ``DIR`` (holding ``detector/`` and
    ``record.json``), a detector directory (its record is ``record.json`` in the folder above, symlinks
    resolved, as in a registry) or a detector saved alone."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        beside = p.resolve().parent / RECORD_NAME
        return Located(p, beside if beside.is_file() else None)
    if (p / DETECTOR_DIR / "manifest.json").is_file():
        rec = p / RECORD_NAME
        return Located(p / DETECTOR_DIR, rec if rec.is_file() else None)
    if not p.exists():
        raise ArtifactError(f"{p}: no such detector (neither a detector directory nor DIR/detector/)")
    raise ArtifactError(
        f"{p}: not a detector: no manifest.json there or in {p / DETECTOR_DIR}; give a directory written by "
        "det.save() or by novelty retrain --out"
    )


def load_champion(
    path: str | os.PathLike[str], *, embedder: Embedder | None = None, device: str | None = "auto"
) -> tuple[NoveltyDetector, TrainingRecord | None]:
    """Load the detector at ``path`` (see :func:`locate`) and its training record, checked against it.

    A record that names another artifact is ignored (logged); one that names this artifact but other
    parameters raises :class:`TrainingRecordError`."""
    from novelty.detector import NoveltyDetector  # lazy: pulls in faiss

    where = locate(path)
    det = NoveltyDetector.load(where.detector_dir, embedder=embedder, device=device)
    rec = read_record_for(where, det.artifact_id_)
    if rec is not None:
        params = detector_params(det)
        if canonical_json(rec.params) != canonical_json(params):
            raise TrainingRecordError(
                f"{where.record_path}: the record's parameters differ from the detector's "
                f"({param_diff(rec.params, params, seeds=True)})"
            )
    return det, rec


def read_record_for(where: Located, artifact_id: str | None) -> TrainingRecord | None:
    """The record of ``where`` when it belongs to the artifact ``artifact_id``, else ``None``."""
    if where.record_path is None:
        return None
    rec = TrainingRecord.load(where.record_path)
    if rec.artifact_id != artifact_id:
        log.warning(
            "%s belongs to artifact %s, not to %s in %s: ignored",
            where.record_path,
            (rec.artifact_id or "?")[:12],
            (artifact_id or "?")[:12],
            where.detector_dir,
        )
        return None
    return rec
