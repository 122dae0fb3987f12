"""What a detector *is*, in one place. Three identities, each for its own question:

    artifact_id(manifest_bytes)      # which saved detector: sha256 of its manifest.json (the artifact id)
    fitted_fingerprint(det)          # which fitted state, saved or not: sha256 of everything it scores with
    detector_id(det)                 # what results are written with: the artifact id, else "unsaved-" + the above
    config_hash(detector_params(det))  # which configuration: sha256 of its parameters, the random seeds left out

- The **artifact id** names one saved detector; it changes when anything in the manifest changes (and every
  file the manifest lists is checked by its own sha256). A detector loaded from, or last saved to, an artifact
  answers it as ``artifact_id_``.
- The **fitted fingerprint** names the fitted state of a detector that was never saved, so that a batch run
  can refuse to resume with another detector; it is stable across processes for the same fitted state.
- The **config hash** is the ceteris-paribus proof of a retrain: a retrained detector must have exactly its
  champion's parameters, only the data may change. It covers the backbone and the identity of its weights
  (their fingerprint, not where the file lies), the embedding layers (only when not the default), JPEG draft
  decoding, every scorer with its parameters, the head's parameters (or ``None``), the trust decision (rule,
  risk, delta, and the support factor when not the default), ``alpha``, ``calibration_fraction``,
  ``n_neighbors`` and the kind of FAISS index. **It leaves out the random seeds**: a seed is the noise a
  comparison has to see through, not a hyper-parameter.

A detector is read through its public attributes only: this module imports no model code, and the batch engine,
the flywheel and the registry all ask it rather than hash for themselves.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.embedding_layers import DEFAULT_LAYERS
from novelty.errors import InvalidInputError
from novelty.fileio import sha256_bytes
from novelty.trust import LEGACY_RULE, SUPPORT_FACTOR

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector

__all__ = [
    "UNSAVED_PREFIX",
    "artifact_id",
    "canonical_json",
    "config_hash",
    "detector_id",
    "detector_params",
    "fitted_fingerprint",
    "hashed_params",
    "param_diff",
    "with_seed",
]

#: the prefix of :func:`detector_id` for a detector that was never saved
UNSAVED_PREFIX = "unsaved-"


def artifact_id(manifest_bytes: bytes) -> str:
    """The id of a saved detector: the sha256 of its ``manifest.json``, byte for byte."""
    return sha256_bytes(manifest_bytes)


# --- the configuration ------------------------------------------------------------------------------
def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace (NaN and infinity refused): the text that is hashed."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"parameters are not plain JSON: {e}") from e


def hashed_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without the random seeds (the detector's, each scorer's, the head's): what is hashed."""
    out = {k: copy.deepcopy(v) for k, v in params.items() if k != "seed"}
    for s in out.get("scorers") or []:
        if isinstance(s, dict) and isinstance(s.get("params"), dict):
            s["params"].pop("seed", None)
    if isinstance(out.get("head"), dict):
        out["head"].pop("seed", None)
    return out


def config_hash(params: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of :func:`hashed_params` (every parameter but the seeds)."""
    return hashlib.sha256(canonical_json(hashed_params(params)).encode("utf-8")).hexdigest()


def with_seed(params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """``params`` with every seed (the detector's, each scorer's that has one, the head's) set to ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    out = copy.deepcopy(dict(params))
    out["seed"] = seed
    for s in out.get("scorers") or []:
        if "seed" in s.get("params", {}):
            s["params"]["seed"] = seed
    if isinstance(out.get("head"), dict) and "seed" in out["head"]:
        out["head"]["seed"] = seed
    return out


def detector_params(detector: NoveltyDetector) -> dict[str, Any]:
    """The constructor parameters that define ``detector``'s training, as plain JSON.

    A fitted detector answers with its fitted parts (a detector fitted without labels has ``head: None``);
    an unfitted one with the parts it would build. Runtime settings (device, batch size, workers, weights
    location) are not part of it: they do not change what is learnt.
    """
    emb = detector.embedder
    if detector.is_fitted:
        scorers, head, index = detector.scorers_, detector.head_, detector.index_
    else:
        parts = detector.parts()
        scorers, head, index = parts.scorers, parts.head, parts.index
    params: dict[str, Any] = {
        "backbone": emb.backbone_name,
        "weights_fingerprint": emb.fingerprint,
        "draft": bool(emb.draft),
        "scorers": [{"name": s.name, "params": s.get_params()} for s in scorers],
        "head": None if head is None else head.get_params(),
        "alpha": float(detector.alpha),
        "calibration_fraction": float(detector.calibration_fraction),
        "n_neighbors": int(detector.n_neighbors),
        "seed": int(detector.seed),
        "index": index.get_params(),
    }
    if emb.layers != DEFAULT_LAYERS:  # absent for the default layers, as in records made before them
        params["layers"] = list(emb.layers)
    if head is not None and detector.trust != LEGACY_RULE:  # absent for detectors of the legacy rule
        params["trust"] = {"rule": detector.trust, "risk": detector.risk, "delta": detector.trust_delta}
        # absent for the default support, as in records made before it was a choice
        if detector.trust_support != SUPPORT_FACTOR:
            params["trust"]["support"] = detector.trust_support
        # absent for no margin, as in records made before it was a choice
        if detector.trust_margin is not None:
            params["trust"]["margin"] = detector.trust_margin
    return json.loads(canonical_json(params))  # plain JSON: lists for tuples, checked serialisable


def _param_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    diffs = [
        f"{k}: {a.get(k)!r} → {b.get(k)!r}"
        for k in keys
        if canonical_json(a.get(k)) != canonical_json(b.get(k))
    ]
    return "; ".join(diffs) or "(none)"


def param_diff(a: Mapping[str, Any], b: Mapping[str, Any], *, seeds: bool = False) -> str:
    """Which parameters differ between ``a`` and ``b`` (``"k: a → b; …"``); the seeds only if ``seeds``."""
    return _param_diff(a, b) if seeds else _param_diff(hashed_params(a), hashed_params(b))


# --- the fitted state -------------------------------------------------------------------------------
def _hash_arrays(h: Any, arrays: Mapping[str, np.ndarray]) -> None:
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())


def fitted_fingerprint(detector: NoveltyDetector) -> str:
    """sha256 of everything a fitted detector scores with: backbone weights, parameters, index vectors,
    scorer and calibration states, head, training ids. Stable across processes for the same fitted state."""
    h = hashlib.sha256()
    params = {
        "backbone": detector.backbone,
        "weights_fingerprint": detector.embedder.fingerprint,
        "n_neighbors": detector.n_neighbors,
        "draft": detector.draft,
        # another runtime makes other embeddings: a resume must not mix them (torch: the key as before)
        **({"runtime": detector.runtime} if detector.runtime != "torch" else {}),
        "scorers": [[s.name, s.get_params()] for s in detector.scorers_],
        "train_ids": list(detector.train_ids_),
    }
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    _hash_arrays(h, {"index": detector.index_.vectors()})
    for s in detector.scorers_:
        _hash_arrays(h, {f"{s.name}.{k}": v for k, v in s.state_arrays().items()})
    _hash_arrays(h, detector.calibrator_.state_arrays())
    if detector.head_ is not None:
        h.update(json.dumps(detector.head_.state_meta(), sort_keys=True, default=str).encode())
        _hash_arrays(h, {f"head.{k}": v for k, v in detector.head_.state_arrays().items()})
    return h.hexdigest()


def detector_id(detector: NoveltyDetector) -> str:
    """The identity written with the results: the artifact id of a saved or loaded detector, else
    ``unsaved-`` and a fingerprint of its fitted state (a report can then not be checked against a saved
    detector: save it before scoring to get reports with calibration)."""
    aid = getattr(detector, "artifact_id_", None)
    return str(aid) if aid else UNSAVED_PREFIX + fitted_fingerprint(detector)
