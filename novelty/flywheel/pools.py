"""The candidates of a selection: a :class:`Pool` of images, each with a real file, its content hash, where it
came from, its embedding and the detector's answer for it.

    pool = build_pool(det, ["results.parquet", "inbox/"], flags="novelty-flags", images_dir="sel/images")
    pool.embeddings, pool.p_value, pool.predictions, pool.train_distance, pool.sources
    pool.trusted, pool.competence, pool.trust      # the trust decision (novelty.trust), per image and its header

Sources (:mod:`novelty.flywheel.candidates`): results files of ``novelty score``, image inputs (folders, globs,
path lists, archives, files) and the flag store.

Candidates are deduplicated by the sha256 of their bytes across all sources: the first occurrence is kept, and
``sources`` lists every place the image was found. Every candidate is then scored by the detector given, from
its embedding (``score_embeddings``), so all numbers of a pool come from one model version, whatever detector
scored the results files. ``train_distance`` is the cosine distance (``1 − cos``) of each candidate to its
nearest training embedding, found in the detector's FAISS index: what the training data already covers.
Scores: **higher = more novel**; ``novelty = 1 − p_value``.

With a condition head, each candidate also carries the detector's trust decision (:mod:`novelty.trust`):
``trusted`` (``v.trusted``: not novel and, with a trust decision, ``competence`` ≥ the detector's threshold)
and ``competence``. ``pool.trust`` (:func:`trust_header`) records the decision's rule, ε, δ and the competence
threshold at each ε of :data:`TRUST_RISKS` and at the detector's own, all from the same calibration split, so that
auto-accept can hold its own ε (``novelty export --auto-risk``). Detectors without a trust decision (no head, or
the legacy rule ``"not-novel"``) have no header.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty import identity
from novelty.errors import InvalidInputError
from novelty.flywheel.candidates import (
    Candidate,
    PoolError,
    candidates_from_flags,
    candidates_from_images,
    candidates_from_results,
    image_suffix,
    iso_time,
)
from novelty.flywheel.dataset import add_to_cache, cached_embeddings

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector

log = logging.getLogger(__name__)

__all__ = [
    "RESULTS_SUFFIXES",
    "TRUST_RISKS",
    "Candidate",
    "Pool",
    "PoolError",
    "build_pool",
    "candidates_from_flags",
    "candidates_from_images",
    "candidates_from_results",
    "check_trust_header",
    "image_suffix",
    "iso_time",
    "score_pool",
    "trust_header",
]

#: inputs with these suffixes are results files of ``novelty score``; anything else is an image source
RESULTS_SUFFIXES = (".parquet", ".csv", ".jsonl")
#: the error rates ε whose competence threshold a pool's trust header records (besides the detector's own)
TRUST_RISKS = (0.01, 0.02, 0.05, 0.1)


@dataclass
class Pool:
    """Candidates with their scores: one row per image, every array in the same order.

    ``sources[i]`` lists every source that held image ``i`` (first one first); ``skipped`` holds
    ``(input, reason)`` for every input left out as unreadable.
    """

    ids: list[str]
    paths: list[str]
    sha256: list[str]
    sources: list[tuple[str, ...]]
    embeddings: np.ndarray  # float32 (n, d), L2-normalised
    p_value: np.ndarray
    novelty: np.ndarray  # 1 - p_value
    score: np.ndarray  # the raw (combined) score behind p_value; higher = more novel
    is_novel: np.ndarray
    timestamps: list[str | None]
    alpha: float
    detector_id: str
    train_distance: np.ndarray | None = None  # cosine distance to the nearest training embedding
    predictions: list[Any] | None = None  # the head's class per image (None: the detector has no head)
    probabilities: np.ndarray | None = None  # (n, n_classes), in the order of ``classes``
    classes: list[Any] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    trusted: np.ndarray | None = None  # bool (n,): the verdict's ``trusted`` (None: the detector has no head)
    competence: np.ndarray | None = None  # (n,) the trust rule's score (None: no trust decision)
    trust: dict[str, Any] | None = None  # :func:`trust_header` (None: no trust decision)
    nearest: list[str] | None = None  # the id of each candidate's nearest training image (None: not recorded)
    groups: list[str | None] | None = (
        None  # each image's group, where its source gave one (None: no source did)
    )
    conditions: list[str | None] | None = None  # each image's condition, where its source gave one

    def __post_init__(self) -> None:
        n = len(self.ids)
        x = np.asarray(self.embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != n:
            raise InvalidInputError(f"a pool of {n} images needs embeddings of shape ({n}, d), got {x.shape}")
        self.embeddings = x
        for name in ("paths", "sha256", "sources", "timestamps"):
            if len(getattr(self, name)) != n:
                raise InvalidInputError(f"pool.{name} has {len(getattr(self, name))} entries for {n} images")
        for name in ("nearest", "groups", "conditions"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise InvalidInputError(f"pool.{name} has {len(v)} entries for {n} images")
        for name in ("p_value", "novelty", "score", "is_novel", "train_distance", "trusted", "competence"):
            v = getattr(self, name)
            if v is not None:
                arr = np.asarray(v, dtype=bool if name in ("is_novel", "trusted") else np.float64)
                if arr.shape != (n,):
                    raise InvalidInputError(f"pool.{name} must have shape ({n},), got {arr.shape}")
                setattr(self, name, arr)
        if len(set(self.ids)) != n:
            raise InvalidInputError("pool ids must be unique")
        if (self.predictions is None) != (self.probabilities is None):
            raise InvalidInputError("a pool has both predictions and probabilities (a head) or neither")
        if self.probabilities is not None:
            proba = np.asarray(self.probabilities, dtype=np.float64)
            if (
                proba.shape != (n, len(self.classes))
                or self.predictions is None
                or len(self.predictions) != n
            ):
                raise InvalidInputError(
                    f"pool probabilities must be ({n}, {len(self.classes)}) with one prediction per image"
                )
            self.probabilities = proba
        if self.trusted is not None and self.probabilities is None:
            raise InvalidInputError(
                "pool.trusted needs the head's predictions (a pool without a head has none)"
            )
        if self.trust is not None:
            self.trust = check_trust_header(self.trust)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_head(self) -> bool:
        return self.probabilities is not None

    @property
    def source(self) -> list[str]:
        """The first source of each image."""
        return [s[0] if s else "" for s in self.sources]

    @property
    def probability(self) -> np.ndarray | None:
        """The head's probability of its predicted class, per image."""
        return None if self.probabilities is None else self.probabilities.max(axis=1)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Pool:
        """The images at ``indices`` (in that order), as a new pool."""
        idx = np.asarray(indices, dtype=np.int64)

        def pick(seq: Sequence[Any]) -> list[Any]:
            return [seq[i] for i in idx.tolist()]

        return Pool(
            ids=pick(self.ids),
            paths=pick(self.paths),
            sha256=pick(self.sha256),
            sources=pick(self.sources),
            embeddings=self.embeddings[idx],
            p_value=self.p_value[idx],
            novelty=self.novelty[idx],
            score=self.score[idx],
            is_novel=self.is_novel[idx],
            timestamps=pick(self.timestamps),
            alpha=self.alpha,
            detector_id=self.detector_id,
            train_distance=None if self.train_distance is None else self.train_distance[idx],
            nearest=None if self.nearest is None else pick(self.nearest),
            groups=None if self.groups is None else pick(self.groups),
            conditions=None if self.conditions is None else pick(self.conditions),
            predictions=None if self.predictions is None else pick(self.predictions),
            probabilities=None if self.probabilities is None else self.probabilities[idx],
            classes=list(self.classes),
            skipped=list(self.skipped),
            trusted=None if self.trusted is None else self.trusted[idx],
            competence=None if self.competence is None else self.competence[idx],
            trust=None if self.trust is None else dict(self.trust),
        )


# --- the trust header -------------------------------------------------------------------------------------
def trust_header(detector: NoveltyDetector) -> dict[str, Any] | None:
    """The detector's trust decision as a pool and ``selection.json`` record it: ``{"rule", "risk", "delta",
    "thresholds": {str(ε): λ}}`` for each ε of :data:`TRUST_RISKS` and the detector's own (λ ``None`` where
    the calibration split cannot certify ε: nothing is trusted at it); ``None`` without a trust decision."""
    t = detector.trust_
    if t is None:
        return None
    thresholds = {}
    for eps in sorted({*TRUST_RISKS, float(t.risk)}):
        lam = t.threshold_for(eps)
        thresholds[str(float(eps))] = None if math.isinf(lam) else float(lam)
    return {"rule": t.rule, "risk": float(t.risk), "delta": float(t.delta), "thresholds": thresholds}


def check_trust_header(value: Any) -> dict[str, Any] | None:
    """A trust header (:func:`trust_header`) read back, checked: :class:`InvalidInputError` names what is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputError(f"'trust' must be an object or null, got {type(value).__name__}")
    rule = value.get("rule")
    if not isinstance(rule, str) or not rule:
        raise InvalidInputError(f"'trust.rule' must be a rule name, got {rule!r}")
    out: dict[str, Any] = {"rule": rule}
    for key in ("risk", "delta"):
        v = value.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
            raise InvalidInputError(f"'trust.{key}' must lie strictly between 0 and 1, got {v!r}")
        out[key] = float(v)
    raw = value.get("thresholds")
    if not isinstance(raw, dict):
        raise InvalidInputError("'trust.thresholds' must map error rates to thresholds")
    thresholds: dict[str, float | None] = {}
    for k, lam in raw.items():
        try:
            eps = float(k)
        except (TypeError, ValueError):
            eps = math.nan
        if not 0.0 < eps < 1.0:
            raise InvalidInputError(f"'trust.thresholds' key {k!r} is not an error rate in (0, 1)")
        if lam is not None and (
            isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam)
        ):
            raise InvalidInputError(f"'trust.thresholds'[{k!r}] must be a number or null, got {lam!r}")
        thresholds[str(k)] = None if lam is None else float(lam)
    out["thresholds"] = thresholds
    return out


# --- scoring ----------------------------------------------------------------------------------------------
def score_pool(
    detector: NoveltyDetector,
    embeddings: np.ndarray,
    *,
    ids: Sequence[str],
    paths: Sequence[str],
    sha256: Sequence[str],
    sources: Sequence[tuple[str, ...]],
    timestamps: Sequence[str | None] | None = None,
    skipped: Sequence[tuple[str, str]] = (),
    groups: Sequence[str | None] | None = None,
    conditions: Sequence[str | None] | None = None,
) -> Pool:
    """A :class:`Pool` of embeddings made by ``detector``'s backbone, scored by ``detector`` (with the head's
    answers and the trust decision when it has them)."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise PoolError(f"no candidate to score (embeddings of shape {x.shape})")
    v = detector.score_embeddings(x, sources=list(paths))
    if v.neighbor_ids.shape[1]:  # the verdicts' own search already found each nearest training image
        d, pos = v.neighbor_distances[:, :1], v.neighbor_ids[:, :1]
    else:  # a detector that reports no neighbours (n_neighbors=0)
        d, pos = detector.index_.search(x, 1)
    train_ids = detector.train_ids_
    return Pool(
        ids=list(ids),
        paths=list(paths),
        sha256=list(sha256),
        sources=[tuple(s) for s in sources],
        embeddings=x,
        p_value=v.p_value,
        novelty=v.novelty,
        score=v.score,
        is_novel=v.is_novel,
        timestamps=list(timestamps) if timestamps is not None else [None] * x.shape[0],
        alpha=float(detector.alpha),
        detector_id=identity.detector_id(detector),
        train_distance=np.asarray(d[:, 0], dtype=np.float64) ** 2 / 2.0,  # ‖a − b‖² / 2 = 1 − cos
        predictions=v.predictions,
        probabilities=v.probabilities,
        classes=list(v.classes or []),
        skipped=list(skipped),
        trusted=None if v.predictions is None else np.asarray(v.trusted, dtype=bool),
        competence=v.competence,
        trust=trust_header(detector),
        nearest=[str(train_ids[int(j)]) if j >= 0 else "" for j in pos[:, 0]],
        groups=None if groups is None else list(groups),
        conditions=None if conditions is None else list(conditions),
    )


def build_pool(
    detector: NoveltyDetector,
    sources: Iterable[str | os.PathLike[str]] = (),
    *,
    flags: str | os.PathLike[str] | None = None,
    flags_since: datetime | str | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    embedding_cache: str | os.PathLike[str] | None = None,
) -> Pool:
    """The candidates of ``sources`` (results files and image inputs) and of the flag store ``flags``,
    deduplicated by sha256 and scored by ``detector`` (see the module docstring).

    ``embedding_cache``: a folder of embeddings by image sha256 (a dataset's ``embeddings_dir``, shared with
    :func:`~novelty.flywheel.dataset.embed_entries`): a candidate embedded before by the same backbone is not
    embedded again, and new embeddings are added, so a pool that grows week by week costs only its new images."""
    srcs = [os.fspath(s) for s in sources]
    if not srcs and flags is None:
        raise InvalidInputError("no source of candidates: give results files, image folders or a flag store")
    det_id = identity.detector_id(detector)
    found: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    for s in srcs:
        if s.lower().endswith(RESULTS_SUFFIXES) and not os.path.isdir(s):
            got, left = candidates_from_results(
                s, detector_id=det_id, dim=detector.dim_, images_dir=images_dir
            )
        else:
            got, left = candidates_from_images(s, images_dir=images_dir)
        found += got
        skipped += left
    if flags is not None:
        got, left = candidates_from_flags(flags, images_dir=images_dir, since=flags_since)
        found += got
        skipped += left
    # deduplicate by content: the first occurrence wins, every source is kept
    first: dict[str, int] = {}
    unique: list[Candidate] = []
    provenance: list[list[str]] = []
    for c in found:
        j = first.get(c.sha256)
        if j is None:
            first[c.sha256] = len(unique)
            unique.append(c)
            provenance.append([c.source])
        else:
            if c.source not in provenance[j]:
                provenance[j].append(c.source)
            if unique[j].embedding is None and c.embedding is not None:
                unique[j].embedding = c.embedding
            if unique[j].timestamp is None:
                unique[j].timestamp = c.timestamp
            if unique[j].group is None:
                unique[j].group = c.group
            if unique[j].condition is None:
                unique[j].condition = c.condition
    if len(found) > len(unique):
        log.info("%d duplicate image(s) (same sha256) merged", len(found) - len(unique))
    if not unique:
        raise PoolError(
            f"no readable candidate in the sources ({len(skipped)} skipped"
            + (f", e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else "")
            + ")"
        )
    cached = {} if embedding_cache is None else cached_embeddings(embedding_cache, detector.embedder)
    for c in unique:
        if c.embedding is None and c.sha256 in cached:
            c.embedding = cached[c.sha256]
    todo = [i for i, c in enumerate(unique) if c.embedding is None]
    emb: list[np.ndarray | None] = [c.embedding for c in unique]
    if todo:
        res = detector.embedder.embed_with_errors([unique[i].path for i in todo], progress=progress)
        fresh: dict[str, np.ndarray] = {}
        for j, i in enumerate(todo):
            err = res.errors[j]
            if err is None:
                emb[i] = fresh[unique[i].sha256] = res.embeddings[j]
            else:
                skipped.append((unique[i].path, f"{err.reason_code}: {err.reason}"))
        if embedding_cache is not None:
            add_to_cache(embedding_cache, detector.embedder, fresh)
    if embedding_cache is not None:
        log.info("%d candidate(s) embedded, %d taken from the cache", len(todo), len(unique) - len(todo))
    keep = [i for i in range(len(unique)) if emb[i] is not None]
    if not keep:
        raise PoolError(f"no candidate could be embedded ({len(skipped)} skipped, e.g. {skipped[0][1]})")
    if skipped:
        log.warning("%d input(s) skipped as unreadable, e.g. %s: %s", len(skipped), *skipped[0])
    kept = [unique[i] for i in keep]
    x = np.stack([np.asarray(emb[i], dtype=np.float32) for i in keep])
    if x.shape[1] != detector.dim_:
        raise PoolError(f"embeddings have {x.shape[1]} dimensions, the detector expects {detector.dim_}")
    return score_pool(
        detector,
        x,
        ids=[c.sha256[:16] for c in kept],
        paths=[c.path for c in kept],
        sha256=[c.sha256 for c in kept],
        sources=[tuple(provenance[i]) for i in keep],
        timestamps=[c.timestamp for c in kept],
        skipped=skipped,
        groups=[c.group for c in kept] if any(c.group is not None for c in kept) else None,
        conditions=[c.condition for c in kept] if any(c.condition is not None for c in kept) else None,
    )
