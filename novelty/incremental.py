"""Change a fitted detector's training set without refitting it: add embeddings, remove images by id, and
recalibrate.

    update_training_set(det, add=new_embeddings, add_ids=new_paths, remove_ids=["cam1/0001.jpg"],
                        calibration=held_out_embeddings)

The index gains or loses vectors (an approximate kind keeps what it trained: IVF centroids, PQ codebooks, the
OPQ rotation); every scorer that reads the index (``knn``, ``knn-local``…) is refitted on it; the calibration
is then redone on ``calibration`` — in-distribution embeddings held out from the training set, made by this
detector's backbone — so that p-values hold for the new training set (the old calibration scores measured
distances to the old one). Scorers that learned from the embeddings themselves (``autoencoder``,
``mahalanobis``…) keep what they learned from the old set: a warning names them; refit the detector for them
to learn the change. The update is built aside and swapped in at the end (peak memory ≈ twice the index): a
failure leaves the detector as it was.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from novelty.calibration import MultiScorerCalibrator, check_alpha
from novelty.errors import InvalidInputError
from novelty.index import as_embeddings
from novelty.params import clone

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector

__all__ = ["update_training_set"]

log = logging.getLogger(__name__)


def update_training_set(
    detector: NoveltyDetector,
    *,
    add: object | None = None,
    add_ids: Sequence[str] | None = None,
    remove_ids: Sequence[str] = (),
    calibration: object,
    calibration_ids: Sequence[str] | None = None,
) -> NoveltyDetector:
    """Add ``add`` (embeddings of new training images, ids ``add_ids``), remove the training images
    ``remove_ids`` (ids as in ``detector.train_ids_``), refit the index-based scorers and recalibrate on
    ``calibration`` (held-out in-distribution embeddings). Returns ``detector``, updated in place."""
    st = detector.state_
    if any(getattr(s, "input_kind", "embeddings") == "patches" for s in st.scorers):
        raise InvalidInputError("update_training_set does not support patch scorers; refit the detector")
    x_add = None if add is None else as_embeddings(add, st.dim, name="added embeddings")
    if x_add is not None:
        if add_ids is None:
            raise InvalidInputError(
                "add_ids must name each added embedding (the ids the verdicts' neighbours show)"
            )
        if len(add_ids) != x_add.shape[0]:
            raise InvalidInputError(f"add_ids has {len(add_ids)} ids for {x_add.shape[0]} embeddings")
    position = {tid: i for i, tid in enumerate(st.train_ids)}
    unknown = [r for r in remove_ids if r not in position]
    if unknown:
        raise InvalidInputError(
            f"{len(unknown)} id(s) to remove are not training images of this detector: {unknown[:3]}"
        )
    if len(set(remove_ids)) != len(remove_ids):
        raise InvalidInputError("remove_ids contain duplicates")
    new_ids = [str(i) for i in (add_ids or [])]
    clash = sorted(
        (set(new_ids) & (set(st.train_ids) - set(remove_ids))) | {i for i in new_ids if new_ids.count(i) > 1}
    )
    if clash:
        raise InvalidInputError(f"added ids must be new and unique; already present or repeated: {clash[:3]}")
    cal = as_embeddings(calibration, st.dim, name="calibration embeddings")
    check_alpha(detector.alpha, cal.shape[0])
    if calibration_ids is not None and len(calibration_ids) != cal.shape[0]:
        raise InvalidInputError(
            f"calibration_ids has {len(calibration_ids)} ids for {cal.shape[0]} embeddings"
        )

    index = st.index.copy()
    train_ids = list(st.train_ids)
    if remove_ids:
        kept = index.remove(np.array([position[r] for r in remove_ids], dtype=np.int64))
        train_ids = [train_ids[i] for i in kept]
    if x_add is not None:
        index.add(x_add)
        train_ids += new_ids
    in_training = sorted(set(train_ids) & set(calibration_ids or []))
    if in_training:
        raise InvalidInputError(
            f"calibration images must be held out; these are training images: {in_training[:3]}"
        )

    vectors = None
    scorers = []
    stale = []
    for s in st.scorers:
        if s.uses_index:
            if vectors is None:
                vectors = index.vectors()
            fresh = clone(s)
            fresh.fit(vectors, index=index)
            scorers.append(fresh)
        else:
            scorers.append(s)
            stale.append(s.name)
    if stale:
        warnings.warn(
            f"scorer(s) {stale} keep what they learned from the previous training set; refit the detector for "
            "them to learn the added or removed images",
            UserWarning,
            stacklevel=2,
        )
    calibrator = MultiScorerCalibrator().fit({s.name: s.score(cal) for s in scorers})
    detector.set_state(
        replace(
            st,
            index=index,
            scorers=tuple(scorers),
            calibrator=calibrator,
            train_ids=train_ids,
            calibration_ids=[str(i) for i in calibration_ids]
            if calibration_ids is not None
            else [f"#{i}" for i in range(cal.shape[0])],
            artifact_id=None,
            trained_sha256=None,  # embeddings bring no image hashes: what the detector saw is unknown now
        )
    )
    log.info(
        "training set updated: %d added, %d removed, %d now", len(new_ids), len(remove_ids), index.ntotal
    )
    return detector
