"""A :class:`~novelty.detector.NoveltyDetector` as an artifact directory, and back.

:func:`save_detector` turns a fitted detector into a manifest and in-memory files (the FAISS index, the
calibration scores, each scorer's and the head's arrays as safetensors, the training ids as JSON) and writes
them with :func:`novelty.artifact.write_artifact`. :func:`load_detector` reads a verified
:class:`~novelty.artifact.Artifact` (every file read once and checked against its sha256), type-checks every
manifest field (each section by its reader in :mod:`novelty.manifest_sections`), parses everything from those
bytes and checks the backbone's weights fingerprint. :func:`describe_artifact` says what a saved detector is
without loading it.

Loading never imports code named by a manifest: a scorer is rebuilt only by the class registered under its
name in this process (:func:`novelty.register_scorer`).
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from novelty.artifact import (
    Artifact,
    ManifestReader,
    arrays_to_bytes,
    check_file_name,
    read_artifact,
    write_artifact,
)
from novelty.clock import utc_now_iso
from novelty.embedder import Embedder, parse_device, resolve_device
from novelty.embedding_layers import DEFAULT_LAYERS, layers_name
from novelty.errors import (
    ArtifactVersionError,
    InvalidInputError,
    UnknownNameError,
)
from novelty.index import EmbeddingIndex
from novelty.manifest_sections import (
    as_artifact_error,
    index_params,
    read_calibration,
    read_head,
    read_ids,
    read_index,
    read_layers,
    read_scorers,
    read_trust,
)
from novelty.params import check_int
from novelty.parts import FittedState
from novelty.runtimes import (
    AUTO,
    RUNTIME_FILE,
    RUNTIMES,
    RuntimeMismatchError,
    RuntimeMismatchWarning,
    check_runtime,
    runtimes_agree,
    why_not_here,
)
from novelty.scorers import REGISTRY as SCORERS
from novelty.trust import LEGACY_RULE, SUPPORT_FACTOR
from novelty.version import __version__

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector

__all__ = ["ArtifactSummary", "calibration_scores", "describe_artifact", "load_detector", "save_detector"]

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
    st = det.state_
    import faiss
    import timm
    import torch

    emb = det.embedder
    files: dict[str, bytes] = {
        "index.faiss": st.index.to_bytes(),
        **({"index_vectors.npy": store} if (store := st.index.store_npy_bytes()) is not None else {}),
        "calibration.safetensors": arrays_to_bytes(st.calibrator.state_arrays()),
        "train_ids.json": json.dumps(
            {
                "train": st.train_ids,
                "calibration": st.calibration_ids,
                **({"sha256": list(st.trained_sha256)} if st.trained_sha256 is not None else {}),
            }
        ).encode(),
    }
    runtime_state = emb.runtime_state()  # an int8 runtime's quantised backbone (ONNX), else None
    if runtime_state is not None:
        files[RUNTIME_FILE] = runtime_state
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
    trust = None
    if st.trust is not None:
        arrays = st.trust.state_arrays()
        if st.train_correct is not None:
            arrays["trust.train_correct"] = np.asarray(st.train_correct, dtype=np.uint8)
        files["trust.safetensors"] = arrays_to_bytes(arrays)
        trust = {"file": "trust.safetensors", **st.trust.to_meta()}
    manifest: dict[str, Any] = {
        "created": utc_now_iso(),
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
            "factory": st.index.plan_.factory if st.index.plan_ is not None else st.index.factory,
            **(st.index.saved_meta() or {}),
            "vectors": "index_vectors.npy" if "index_vectors.npy" in files else None,
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
        "trust": trust,
        "runtime": {
            "name": det.calibrated_runtime_ or emb.runtime,  # the runtime the calibration belongs to
            "file": RUNTIME_FILE if runtime_state is not None else None,
            # runtime="auto": what was measured on the machine that fitted it (information only)
            **({"auto": emb.runtime_choice.to_meta()} if emb.runtime_choice is not None else {}),
        },
    }
    return write_artifact(path, manifest, files)


# --- what a saved detector is, without loading it -------------------------------------------------------
@dataclass(frozen=True)
class ArtifactSummary:
    """What a saved detector is, read from its verified manifest without loading the backbone, the index or the
    head: the one reader of ``manifest.json`` besides :func:`load_detector` (the training record, the batch
    report and the registry take it from here).

    ``params``: the parameters that define training, in the shape of
    :func:`novelty.flywheel.record.detector_params` (before its canonical-JSON pass)."""

    artifact_id: str
    params: dict[str, Any]
    scorers: list[str]
    classes: list[Any] | None
    n_index: int | None
    metric: str
    created: str | None


def describe_artifact(art: Artifact) -> ArtifactSummary:
    """The :class:`ArtifactSummary` of a verified artifact (:func:`~novelty.artifact.read_artifact`); a missing
    key or a value of the wrong type raises :class:`~novelty.errors.ArtifactError` naming it."""
    r = ManifestReader(str(art.root / "manifest.json"))
    m = art.manifest
    p = r.section(m, "params")
    bb = r.section(m, "backbone")
    idx = r.section(m, "index")
    draft = r.get(p, "draft", "bool|null", where="params", default=None)
    if draft is None:
        draft = r.get(bb, "draft", "bool|null", where="backbone", default=None)
    scorers = []
    entries = r.get(m, "scorers", "list")
    for i in range(len(entries)):
        e = r.section(entries, i, where="scorers")
        scorers.append(
            {
                "name": r.get(e, "name", "str", where=f"scorers[{i}]"),
                "params": r.get(e, "params", "dict", where=f"scorers[{i}]"),
            }
        )
    head = r.section(m, "head", optional=True)
    params: dict[str, Any] = {
        "backbone": r.get(p, "backbone", "str", where="params"),
        "weights_fingerprint": r.get(bb, "fingerprint", "str", where="backbone"),
        "draft": True if draft is None else draft,
        "scorers": scorers,
        "head": None if head is None else r.get(head, "params", "dict", where="head"),
        "alpha": float(r.get(p, "alpha", "number", where="params")),
        "calibration_fraction": float(r.get(p, "calibration_fraction", "number", where="params")),
        "n_neighbors": r.get(p, "n_neighbors", "int", where="params"),
        "seed": r.get(p, "seed", "int", where="params", default=0),
        "index": index_params(r, idx),
    }
    layers = read_layers(r, bb)
    if layers != DEFAULT_LAYERS:
        params["layers"] = list(layers)
    trust = r.section(m, "trust", optional=True)
    if trust is not None:
        params["trust"] = {
            "rule": r.get(trust, "rule", "str", where="trust"),
            "risk": float(r.get(trust, "risk", "number", where="trust")),
            "delta": float(r.get(trust, "delta", "number", where="trust")),
        }
        support = r.get(trust, "support_factor", "number|null", where="trust", default=None)
        if support is not None and float(support) != SUPPORT_FACTOR:
            params["trust"]["support"] = float(support)
        margin = r.get(trust, "margin", "number|null", where="trust", default=None)
        if margin is not None:
            params["trust"]["margin"] = float(margin)
    classes = None if head is None else r.get(head, "classes", "list|null", where="head", default=None)
    return ArtifactSummary(
        artifact_id=art.artifact_id,
        params=params,
        scorers=[s["name"] for s in scorers],
        classes=classes,
        n_index=r.get(idx, "n", "int|null", where="index", default=None),
        metric=params["index"]["metric"],
        created=r.get(m, "created", "str|null", default=None),
    )


def calibration_scores(art: Artifact) -> np.ndarray:
    """The combined calibration scores of a verified artifact (the reference the p-values count against)."""
    r = ManifestReader(str(art.root / "manifest.json"))
    calibrator, _ = read_calibration(art, r, describe_artifact(art).scorers)
    return np.asarray(calibrator.combined_scores(calibrator.raw_), dtype=np.float64)


def load_detector(
    cls: type[D],
    path: str | os.PathLike[str],
    *,
    device: str | None = "auto",
    weights: str | os.PathLike[str] | None = None,
    num_workers: int | None = None,
    embedder: Embedder | None = None,
    runtime: str | None = None,
    recalibrate: Any = None,
) -> D:
    """Rebuild a detector from a verified artifact (see :meth:`NoveltyDetector.load`)."""
    if embedder is not None and not isinstance(embedder, Embedder):  # the caller's arguments first
        raise InvalidInputError(f"embedder must be a novelty.Embedder, got {type(embedder).__name__}")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise InvalidInputError(f"weights must be None, 'random' or a path, got {weights!r}")
    parse_device(device)
    if num_workers is not None:
        check_int(num_workers, "num_workers", minimum=0)
    art = read_artifact(path)
    r = ManifestReader(str(art.root / "manifest.json"))
    params = r.section(art.manifest, "params")
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
    bb = r.section(art.manifest, "backbone")
    fingerprint = r.get(bb, "fingerprint", "str", where="backbone")
    layers = read_layers(r, bb)
    bb_draft = r.get(bb, "draft", "bool|null", where="backbone", default=None)
    draft = p["draft"] if p["draft"] is not None else (bb_draft if bb_draft is not None else True)

    index = read_index(art, r)
    scorers, scorer_params = read_scorers(art, r, index)
    calibrator, split = read_calibration(art, r, list(scorer_params))
    train_ids, calibration_ids, trained_sha256 = read_ids(art, r, index.ntotal)
    dim = int(index.dim or 0)
    head, head_params = read_head(art, r, dim)
    trust, train_correct = read_trust(art, r, head, index.ntotal)
    _warn_versions(r.get(art.manifest, "versions", "dict", default={}), art.root)
    rt = r.get(art.manifest, "runtime", "dict", default={"name": "torch"})
    recorded = r.get(rt, "name", "str", where="runtime")
    rt_file = r.get(rt, "file", "str|null", where="runtime", default=None)
    rt_state = art.data(check_file_name(rt_file, f"{r.source}: runtime.file")) if rt_file else None
    try:
        check_runtime(recorded)
    except UnknownNameError as e:
        raise ArtifactVersionError(
            f"{art.root}: the detector was calibrated with a runtime this version does not offer ({e}); refit it"
        ) from None
    if runtime is None:
        runtime = embedder.runtime if embedder is not None else recorded
    # the runtimes that may score this detector: those that stand in for the recorded one, or any when the
    # calibration is redone
    may_score = [n for n in RUNTIMES if recalibrate is not None or runtimes_agree(n, recorded)]
    if embedder is None:
        _check_runs_here(art.root, recorded, may_score if runtime == AUTO else [runtime], device)
    if runtime == AUTO and embedder is None:  # measured here, among the runtimes that may score this detector
        embedder = Embedder(
            p["backbone"],
            weights=weights if weights is not None else p["weights"],
            device=device,
            batch_size=p["batch_size"],
            num_workers=num_workers,
            draft=draft,
            layers=layers,
            runtime=AUTO,
            runtimes=may_score,
        )

    with as_artifact_error(r.source, "params"):
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
            index=EmbeddingIndex(**index.get_params()),
            embedder=embedder,
            runtime=runtime if embedder is None else embedder.runtime,
            layers=DEFAULT_LAYERS if embedder is not None else layers,
            **(
                {
                    "trust": trust.rule,
                    "risk": trust.risk,
                    "trust_delta": trust.delta,
                    "trust_support": trust.factor,
                    "trust_margin": trust.margin,
                }
                if trust is not None
                else {"trust": LEGACY_RULE}
                if head is not None
                else {}
            ),
        )
    det.set_state(
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
            trust=trust,
            train_correct=train_correct,
            trained_sha256=trained_sha256,
        )
    )
    _check_backbone(
        det.embedder,
        bb_name=p["backbone"],
        fingerprint=fingerprint,
        draft=draft,
        dim=dim,
        root=art.root,
        layers=layers,
    )
    if det.runtime == recorded and rt_state is not None:
        det.embedder.set_runtime_state(rt_state)
    _use_recorded_runtime(det, recorded, recalibrate)
    return det


def _check_runs_here(root: Path, recorded: str, among: list[str], device: Any) -> None:
    """Refuse, before anything is built, a load none of whose runtimes ``among`` can run on this machine (a
    detector fitted with bf16 on a CPU that has it, loaded on one that has not), saying how to go on."""
    dev = resolve_device(device)
    why = {n: why_not_here(n, dev) for n in among}
    if any(w is None for w in why.values()):
        return
    reasons = "; ".join(f"{n!r} {w}" for n, w in why.items())
    raise RuntimeMismatchError(
        f"{root}: the detector was calibrated with runtime {recorded!r} and no runtime that may score it runs "
        f"here ({reasons}). Redo the calibration with one that does: load(..., runtime='auto', "
        "recalibrate=HELD_OUT_IMAGES)"
    )


def _use_recorded_runtime(det: NoveltyDetector, recorded: str, recalibrate: Any = None) -> None:
    """After loading: warn when scoring with another runtime than the calibration's; refuse where the
    two runtimes' embeddings differ beyond the tolerance, unless ``recalibrate`` images redo it."""
    det.calibrated_runtime_ = recorded
    if recalibrate is not None:
        det.recalibrate(recalibrate)
        return
    if det.runtime == recorded:
        return
    if not runtimes_agree(det.runtime, recorded):
        raise RuntimeMismatchError(
            f"the detector was calibrated with runtime {recorded!r}; runtime {det.runtime!r} gives embeddings "
            "that differ from it beyond the tolerance, so its p-values would not hold. Load it with "
            f"runtime={recorded!r}, or redo the calibration: load(..., runtime={det.runtime!r}, "
            "recalibrate=HELD_OUT_IMAGES)"
        )
    warnings.warn(
        f"the detector was calibrated with runtime {recorded!r} and scores with {det.runtime!r}: their "
        "embeddings agree within the tolerance, but scores move slightly; recalibrate for exact p-values",
        RuntimeMismatchWarning,
        stacklevel=4,
    )


def _check_backbone(
    emb: Embedder,
    *,
    bb_name: str,
    fingerprint: str,
    draft: bool,
    dim: int,
    root: Path,
    layers: tuple[str, ...] = DEFAULT_LAYERS,
) -> None:
    """The backbone embedding new images must be the one the detector was fitted with."""
    if emb.layers != layers:
        raise ArtifactVersionError(
            f"{root}: the detector's embeddings are made of layers {layers_name(layers)!r}, the embedder given "
            f"makes {layers_name(emb.layers)!r}; pass an Embedder(..., layers={layers_name(layers)!r})"
        )
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
