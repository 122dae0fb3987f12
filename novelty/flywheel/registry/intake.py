"""What enters a registry, for every backend: the detector verified (every checksum; a full load where asked)
and its training record, checked to be this detector's."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from novelty.artifact import MANIFEST, Artifact, read_artifact
from novelty.errors import ArtifactError, NoveltyError
from novelty.fileio import read_regular_file
from novelty.flywheel.registry.errors import RegistryError

__all__ = ["DETECTOR", "check_loads", "check_record", "prepare", "read_json", "verify_detector"]

log = logging.getLogger("novelty.flywheel.registry.store")

DETECTOR = "detector"
MAX_JSON = 16 << 20


def read_json(path: Path, what: str, error: type[RegistryError]) -> Any:
    """The JSON document in ``path`` (at most 16 MiB); ``error`` saying what is wrong otherwise."""
    try:
        data = read_regular_file(path, max_bytes=MAX_JSON)
    except FileNotFoundError:
        raise error(f"{path}: {what} is missing") from None
    except OverflowError:
        raise error(f"{path}: {what} is larger than {MAX_JSON >> 20} MiB; not a file of ours") from None
    except OSError as e:
        raise error(f"{path}: {what} cannot be read ({e.strerror or e})") from e
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{path}: {what} is not valid JSON ({e})") from e


def verify_detector(src: Path) -> Artifact:
    """Read and verify a saved detector (every checksum) before it enters a registry."""
    try:
        return read_artifact(src)
    except ArtifactError as e:
        raise RegistryError(f"refusing to register {src}: {e}") from e


def prepare(
    path: str | os.PathLike[str], record: Mapping[str, Any] | str | os.PathLike[str] | None
) -> tuple[Path, Artifact, Any]:
    """The detector to register, verified, and its training record.

    ``path`` is a detector directory or a directory holding ``detector/`` and ``record.json`` (what
    ``novelty retrain --out`` writes, and the layout of a registry version). Without ``record``, a
    ``record.json`` found there (or beside the detector directory) is used when it names this detector's
    artifact id, and ignored otherwise; an explicit ``record`` must match."""
    p = Path(path)
    found: Path | None = None
    if not (p / MANIFEST).exists() and (p / DETECTOR / MANIFEST).exists():
        found = p / "record.json"
        p = p / DETECTOR
    elif (p / MANIFEST).exists():
        found = p.resolve().parent / "record.json"
    art = verify_detector(p)
    if record is None and found is not None and found.is_file():
        doc = read_json(found, "training record", RegistryError)
        if isinstance(doc, dict) and doc.get("artifact_id") == art.artifact_id:
            record = doc
            log.info("using the training record %s", found)
        else:
            log.warning("%s is not the training record of %s (another artifact id): ignored", found, p)
    return p, art, check_record(record, art.artifact_id)


def check_loads(det_dir: Path, src: Path, embedder: Any = None) -> None:
    """A full :func:`novelty.load` of ``det_dir`` (a copy of ``src``): the backbone's weights must be there."""
    from novelty.detector import NoveltyDetector  # lazy: pulls in torch

    try:
        NoveltyDetector.load(det_dir, device="cpu", embedder=embedder)
    except NoveltyError as e:
        raise RegistryError(f"refusing to register {src}: it does not load ({e})") from e


def check_record(record: Mapping[str, Any] | str | os.PathLike[str] | None, artifact_id: str) -> Any:
    """The training record as a dict (``None`` when none): a JSON object whose ``artifact_id``, when it names
    one, is this detector's."""
    if record is None:
        return None
    if isinstance(record, (str, os.PathLike)):
        rec = read_json(Path(record), "training record", RegistryError)
    elif isinstance(record, Mapping):
        rec = dict(record)
    else:
        rec = record
    if not isinstance(rec, dict):
        raise RegistryError(f"the training record must be a JSON object, got {type(rec).__name__}")
    rid = rec.get("artifact_id")
    if rid is not None and rid != artifact_id:
        raise RegistryError(
            f"the training record is for detector {str(rid)[:12]}…, not for this one ({artifact_id[:12]}…); "
            "give the record.json written with this detector"
        )
    try:
        json.dumps(rec, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"the training record is not plain JSON ({e})") from e
    return rec
