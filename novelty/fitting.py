"""Fitting a detector from embeddings: the grouped calibration split, the index and the scorers on the fitting
part, the calibration of their scores, and with labels the condition head, its cross-fitted correctness and the
trust decision (:mod:`novelty.trust`). :meth:`~novelty.detector.NoveltyDetector.fit_embeddings` swaps the state
built here in at once, so a failed fit leaves the previous one in place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.calibration import (
    MIN_CALIBRATION,
    MultiScorerCalibrator,
    calibration_split,
    check_alpha,
    check_groups,
    min_training_images,
    n_calibration,
)
from novelty.embedder import as_source_list
from novelty.errors import InvalidInputError
from novelty.fileio import sorted_sha256, source_sha256
from novelty.head import check_labels
from novelty.images import describe_source
from novelty.index import as_embeddings
from novelty.parts import FittedState
from novelty.trust import FOLDS, LEGACY_RULE, LOCAL_RULES, calibrate_trust, out_of_fold_correct

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector

__all__ = ["fit_state", "recalibrated_state"]

log = logging.getLogger(__name__)


def fit_state(
    det: NoveltyDetector,
    embeddings: np.ndarray,
    labels: Sequence[Any] | None = None,
    *,
    groups: Sequence[Any] | None = None,
    ids: Sequence[str] | None = None,
    patches: np.ndarray | None = None,
    sha256: Sequence[str] | None = None,
) -> FittedState:
    """The fitted state of ``det`` (its parameters, fresh parts) from embeddings made by its backbone: the
    grouped calibration split, the index and scorers on the fitting part, the calibration, and with labels the
    head, its cross-fitted correctness and the trust decision. Nothing of ``det`` changes here; see
    :meth:`NoveltyDetector.fit_embeddings`."""
    parts = det.parts()
    x = as_embeddings(embeddings)
    n = x.shape[0]
    if ids is not None and len(ids) != n:
        raise InvalidInputError(f"ids has {len(ids)} entries for {n} embeddings")
    trained_sha256 = None if sha256 is None else sorted_sha256(sha256, n, "sha256")
    patch_scorer = det.patch_scorer(parts.scorers)
    if patch_scorer is not None and patches is None:
        raise InvalidInputError(
            f"scorer {patch_scorer.name!r} needs the images' patch features: call fit(images), or pass "
            "patches=detector.patch_features(images).features"
        )
    if patches is not None and (np.ndim(patches) != 4 or np.shape(patches)[0] != n):
        raise InvalidInputError(
            f"patches must be (n, h, w, c) with one row per embedding ({n}), got shape {np.shape(patches)}"
        )
    y = None if labels is None else check_labels(labels, n)
    with_head = y is not None and parts.head is not None
    need_fit, reasons = parts.min_fit(with_head)
    need = min_training_images(need_fit, det.calibration_fraction)
    if n < need:
        n_cal = n_calibration(need, det.calibration_fraction)
        raise InvalidInputError(
            f"need at least {need} training images, got {n}: with calibration_fraction="
            f"{det.calibration_fraction:g}, {need} images leave {n_cal} to calibrate (≥ {MIN_CALIBRATION} "
            f"needed) and {need - n_cal} to fit ({'; '.join(reasons)})"
        )
    fit_idx, cal_idx = calibration_split(n, det.calibration_fraction, groups=groups, seed=det.seed)
    if cal_idx.shape[0] < MIN_CALIBRATION or fit_idx.shape[0] < need_fit:
        raise InvalidInputError(
            f"the grouped split left {fit_idx.shape[0]} images to fit and {cal_idx.shape[0]} to calibrate; "
            f"need ≥ {need_fit} to fit ({'; '.join(reasons)}) and ≥ {MIN_CALIBRATION} to calibrate: "
            "use more (or smaller) groups"
        )
    check_alpha(det.alpha, cal_idx.shape[0])
    if groups is not None:
        check_groups(det.alpha, int(np.unique(np.asarray(groups)[cal_idx]).shape[0]))
    x_fit, x_cal = x[fit_idx], x[cal_idx]
    y_fit = None if y is None else y[fit_idx]
    index = parts.index.add(x_fit)
    for s in parts.scorers:
        log.info("fitting scorer %s on %d embeddings", s.name, x_fit.shape[0])
        if s.input_kind == "patches":
            s.fit(np.asarray(patches)[fit_idx], y_fit)
        else:
            s.fit(x_fit, y_fit, index=index if s.uses_index else None)
    calibrator = MultiScorerCalibrator().fit(
        {
            s.name: s.score(np.asarray(patches)[cal_idx] if s.input_kind == "patches" else x_cal)
            for s in parts.scorers
        }
    )
    head = trust = train_correct = None
    if with_head and parts.head is not None and y is not None:
        g_fit = None if groups is None else np.asarray(groups)[fit_idx]
        log.info("fitting condition head on %d labelled embeddings", x_fit.shape[0])
        head = parts.head.fit(x_fit, y_fit, groups=g_fit)
        if det.trust != LEGACY_RULE:
            if det.trust in LOCAL_RULES:
                log.info("cross-fitting %d heads for the local accuracy of the head", FOLDS)
                train_correct = out_of_fold_correct(parts.head, x_fit, y[fit_idx], g_fit, seed=det.seed)
            trust = calibrate_trust(
                rule=det.trust,
                risk=det.risk,
                delta=det.trust_delta,
                alpha=det.alpha,
                head=head,
                index=index,
                calibrator=calibrator,
                x_cal=x_cal,
                y_cal=y[cal_idx],
                train_correct=train_correct,
                x_fit=x_fit,
                groups_fit=g_fit,
                factor=det.trust_support,
                margin=det.trust_margin,
                y_fit=y[fit_idx],
            )
            log.info(
                "trust: rule %s, threshold %s at risk %g (%.1f%% of the calibration split trusted)",
                trust.rule,
                trust.threshold,
                trust.risk,
                100 * trust.coverage(),
            )
    all_ids = [str(i) for i in ids] if ids is not None else [f"#{i}" for i in range(n)]
    return FittedState(
        index=index,
        scorers=tuple(parts.scorers),
        calibrator=calibrator,
        head=head,
        train_ids=[all_ids[i] for i in fit_idx],
        calibration_ids=[all_ids[i] for i in cal_idx],
        dim=int(x.shape[1]),
        split="groups" if groups is not None else "random",
        trust=trust,
        train_correct=train_correct,
        trained_sha256=trained_sha256,
    )


def recalibrated_state(
    det: NoveltyDetector, images: Any, *, groups: Sequence[Any] | None = None, progress: bool | None = None
) -> FittedState:
    """``det``'s fitted state with its calibration redone on ``images`` (held-out in-distribution images, never
    its training images) embedded by its current runtime; see :meth:`NoveltyDetector.recalibrate`."""
    st = det.state_
    if any(s.input_kind == "patches" for s in st.scorers):
        raise InvalidInputError("recalibrate does not support patch scorers yet; refit the detector")
    sources = as_source_list(images)
    ids = [
        describe_source(s) if isinstance(s, (str, os.PathLike)) else f"#{i}" for i, s in enumerate(sources)
    ]
    overlap = sorted(set(ids) & set(st.train_ids))
    if overlap:
        raise InvalidInputError(
            f"recalibrate: {len(overlap)} of the images are training images of this detector (e.g. "
            f"{overlap[:2]}); calibrate on held-out in-distribution images"
        )
    emb = det.embedder.embed(sources, progress=progress)
    check_alpha(det.alpha, emb.shape[0])
    if groups is not None:
        check_groups(det.alpha, int(np.unique(np.asarray(groups)).shape[0]))
    calibrator = MultiScorerCalibrator().fit({s.name: s.score(emb) for s in st.scorers})
    new = source_sha256(sources)
    seen = None if new is None or st.trained_sha256 is None else tuple(sorted({*st.trained_sha256, *new}))
    return replace(st, calibrator=calibrator, calibration_ids=ids, artifact_id=None, trained_sha256=seen)
