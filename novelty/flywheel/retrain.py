"""Retrain a champion on a labelled dataset with exactly its parameters: only the data changes.

    det, rec = retrain("REGISTRY/champion", Dataset.open("data/labels"))          # every entry, latest version
    det, rec = retrain(champion, ds, window_days=30)                                # labelled in the last 30 days
    det, rec = retrain(champion, ds, new_only=True)                                 # added after the champion's data
    rec = save_retrained(det, rec, "runs/v4")                                       # runs/v4/detector + record.json

A new detector is built from the champion's parameters (:func:`novelty.flywheel.record.build_detector`;
their :func:`~novelty.flywheel.record.config_hash` must be equal, or :class:`ConfigMismatchError`), sharing
the champion's embedder so the backbone loads once. The dataset's entries are embedded through its cache
(:func:`~novelty.flywheel.dataset.embed_entries`), and everything is fitted again from them: index, scorers
(the autoencoder too), calibration and the head, with the entries' labels and their groups (``entry.group``;
an entry without a group is a group of its own) so near-duplicates stay on one side of the calibration split.
``seed`` replaces every seed (see :func:`~novelty.flywheel.record.with_seed`); it does not change the hash.

Refused with :class:`RetrainError` before any embedding: an empty training window, labels the champion's head
does not know (unless ``allow_new_classes``: the new head then learns every class of the data), a window with
fewer than two classes for a head, too few images for the champion's scorers and calibration.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from novelty.artifact import registry_root
from novelty.clock import iso, utc_now
from novelty.errors import InvalidInputError, NoveltyError
from novelty.flywheel.dataset import Dataset, Entry, embed_entries, now_iso
from novelty.flywheel.record import (
    DETECTOR_DIR,
    RECORD_NAME,
    ConfigMismatchError,
    DatasetRef,
    TrainingRecord,
    build_detector,
    config_hash,
    detector_params,
    load_champion,
    param_diff,
    with_seed,
)

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector
    from novelty.embedder import Embedder

__all__ = ["RetrainError", "parse_window", "retrain", "save_retrained", "select_entries"]

log = logging.getLogger(__name__)

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(d|days?|h|hours?|w|weeks?)\s*$", re.IGNORECASE)


class RetrainError(NoveltyError, ValueError):
    """A retrain that cannot give a comparable detector (empty window, unknown classes, too few images…)."""


def parse_window(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"2w"`` → days (a float > 0)."""
    m = _WINDOW.match(str(text))
    if not m:
        raise InvalidInputError(f"a training window is a duration such as 30d, 12h or 2w; got {text!r}")
    value = float(m.group(1))
    unit = m.group(2)[0].lower()
    days = value * {"d": 1.0, "h": 1 / 24, "w": 7.0}[unit]
    if days <= 0:
        raise InvalidInputError(f"the training window must be longer than 0, got {text!r}")
    return days


def _fmt_days(days: float) -> str:
    """Days as the window was most likely written: ``30d``, ``12h``, ``2.5d``."""
    hours = days * 24.0
    if days < 1.0 and abs(hours - round(hours)) < 1e-9:
        return f"{round(hours)}h"
    return f"{days:g}d"


def select_entries(
    dataset: Dataset,
    *,
    version: int | None = None,
    window_days: float | None = None,
    versions: Iterable[int] | None = None,
    new_only: bool = False,
    champion_record: TrainingRecord | None = None,
    now: datetime | None = None,
) -> tuple[list[Entry], str | None, int]:
    """The entries a retrain uses, a description of the window (``None``: all up to ``version``) and the
    dataset version they are taken from."""
    if dataset.latest_version == 0:
        raise RetrainError(f"{dataset.path}: the dataset has no entries yet; add labelled images first")
    v = dataset.latest_version if version is None else version
    parts: list[str] = []
    chosen: set[int] | None = None if versions is None else {int(x) for x in versions}
    if versions is not None:
        if not chosen:
            raise RetrainError("versions=[] selects nothing; give at least one dataset version")
        parts.append("versions " + ",".join(str(x) for x in sorted(chosen)))
    if new_only:
        ref = None if champion_record is None else champion_record.dataset
        if ref is None:
            raise RetrainError(
                "new_only needs the champion's training record (record.json beside its detector, with its "
                "dataset version) to tell which entries are new; pass versions=… instead"
            )
        if Path(ref.path).resolve() != Path(dataset.path).resolve():
            log.warning("the champion was trained on %s, not on %s", ref.path, dataset.path)
        if ref.version > dataset.latest_version or dataset.identity(ref.version) != ref.identity:
            raise RetrainError(
                f"new_only: the champion was trained on version {ref.version} of dataset {ref.path} "
                f"(identity {ref.identity[:12]}…), which {dataset.path} does not hold; it is another dataset"
            )
        newer = set(range(ref.version + 1, v + 1))
        chosen = newer if chosen is None else chosen & newer
        parts.append(f"new after version {ref.version}")
        if not chosen:
            raise RetrainError(
                f"new_only: no version of {dataset.path} was added after the champion's version {ref.version} "
                f"(up to version {v}); there is nothing new to train on"
            )
    since = None
    if window_days is not None:
        if isinstance(window_days, bool) or not isinstance(window_days, (int, float)) or not window_days > 0:
            raise InvalidInputError(f"window_days must be a number > 0, got {window_days!r}")
        t_now = now or utc_now()
        if t_now.tzinfo is None:
            t_now = t_now.replace(tzinfo=timezone.utc)
        since = t_now - timedelta(days=float(window_days))
        parts.insert(0, _fmt_days(float(window_days)))
    entries = dataset.entries(v, since=since, versions=None if chosen is None else sorted(chosen))
    window = "; ".join(parts) or None
    if not entries:
        raise RetrainError(
            f"the training window ({window or f'version {v}'}) of {dataset.path} holds no entries"
            + (f" labelled since {iso(since)}" if since is not None else "")
        )
    return entries, window, v


def retrain(
    champion: NoveltyDetector | str | os.PathLike[str],
    dataset: Dataset | str | os.PathLike[str],
    *,
    version: int | None = None,
    window_days: float | None = None,
    versions: Sequence[int] | None = None,
    new_only: bool = False,
    seed: int | None = None,
    allow_new_classes: bool = False,
    champion_record: TrainingRecord | None = None,
    cache: bool = True,
    embedder: Embedder | None = None,
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[NoveltyDetector, TrainingRecord]:
    """A new detector with the champion's parameters, fitted on the dataset's entries, and its record.

    ``champion``: a fitted detector, or a path (a detector directory, or ``DIR`` holding ``detector/`` and
    ``record.json``; see :func:`~novelty.flywheel.record.locate`), or an *unfitted* detector as a template
    (the first model of a flywheel: no parent, no class check). ``version``: the dataset version to read
    (default the latest). The training window: ``window_days`` (only entries labelled in the last N days),
    ``versions`` (only entries added by those versions), ``new_only`` (only entries added after the
    champion's dataset version; needs its record). ``seed``: every seed of the new detector (default the
    champion's). ``embedder``: a loaded backbone to use when ``champion`` is a path (checked to be the
    champion's). The record's ``artifact_id`` is set by :func:`save_retrained`. ``progress`` gets one line
    per step.
    """
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    if isinstance(champion, (str, os.PathLike)):
        champ, rec = load_champion(champion, embedder=embedder)
        champion_record = champion_record or rec
    else:
        champ = champion
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    params = detector_params(champ)
    if champion_record is not None and champion_record.config_hash != config_hash(params):
        raise ConfigMismatchError(
            "the champion's record was made for other parameters: "
            + param_diff(champion_record.params, params)
        )
    new_params = params if seed is None else with_seed(params, seed)

    entries, window, v = select_entries(
        ds,
        version=version,
        window_days=window_days,
        versions=versions,
        new_only=new_only,
        champion_record=champion_record,
        now=now,
    )
    labels = [e.label for e in entries]
    labelled = new_params["head"] is not None  # the champion has (or, as a template, would fit) a head
    head_classes = (
        [str(c) for c in champ.head_.classes_] if champ.is_fitted and champ.head_ is not None else None
    )
    if head_classes is not None:
        unknown = sorted(set(labels) - set(head_classes))
        if unknown and not allow_new_classes:
            counts = {c: labels.count(c) for c in unknown}
            raise RetrainError(
                "the training window has labels the champion's head does not know: "
                + ", ".join(f"{c!r} ({n} images)" for c, n in counts.items())
                + f" (its classes: {', '.join(map(repr, head_classes))}). A head with new classes is not the "
                "same model: pass allow_new_classes=True (--allow-new-classes) to train one anyway"
            )
    if labelled and len(set(labels)) < 2:
        raise RetrainError(
            f"the training window holds only the class {labels[0]!r} ({len(labels)} images); the head "
            "needs at least two classes"
        )

    det = build_detector(new_params, embedder=champ.embedder, device=None)
    if config_hash(detector_params(det)) != config_hash(params):  # the proof, checked, never assumed
        raise ConfigMismatchError(
            "the retrained detector's parameters differ from the champion's: "
            + param_diff(params, detector_params(det))
        )
    need = det.min_training_images(labelled=labelled)
    if len(entries) < need:
        raise RetrainError(
            f"the training window ({window or f'version {v}'}) holds {len(entries)} images; the champion's "
            f"parameters need at least {need} (scorers, head and {det.calibration_fraction:g} held out to "
            "calibrate)"
        )

    say(f"embedding {len(entries)} images of {ds.path} (version {v}) with {det.backbone}")
    emb = embed_entries(entries, det.embedder, ds.embeddings_dir if cache else None)
    groups = [e.group if e.group is not None else f"entry:{e.id}" for e in entries]
    say(f"fitting on {len(entries)} images ({len(set(groups))} groups)")
    det.fit_embeddings(
        emb,
        labels if labelled else None,
        groups=groups,
        ids=[e.path for e in entries],
        sha256=[e.sha256 for e in entries],
    )
    compute_s = time.perf_counter() - t0
    parent = champ.artifact_id_ if champ.is_fitted else None
    record = TrainingRecord(
        params=new_params,
        config_hash=config_hash(new_params),
        dataset=DatasetRef(
            path=str(Path(ds.path).resolve()),
            version=v,
            identity=ds.identity(v),
            n=len(entries),
            window=window,
            new_only=bool(new_only),
        ),
        created=now_iso(),
        compute_s=round(compute_s, 3),
        parent=parent,
        artifact_id=None,
    )
    say(f"retrained in {compute_s:.1f} s: {det!r}")
    return det, record


def save_retrained(
    detector: NoveltyDetector, record: TrainingRecord, out: str | os.PathLike[str]
) -> TrainingRecord:
    """Save ``detector`` as ``out/detector/`` and its record (with the artifact id) as ``out/record.json``."""
    root = Path(out)
    reg = registry_root(root)
    if reg is not None:
        raise InvalidInputError(
            f"{root} lies inside the model registry {reg}: registered versions never change; save elsewhere and "
            "register the result as a new version"
        )
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"{root} is a file; give a directory for the detector and its record")
    if (root / "manifest.json").exists():
        raise InvalidInputError(
            f"{root} is a detector directory; give a new directory (it will hold {DETECTOR_DIR}/ and {RECORD_NAME})"
        )
    if config_hash(detector_params(detector)) != record.config_hash:
        raise ConfigMismatchError("the record was made for another detector's parameters")
    root.mkdir(parents=True, exist_ok=True)
    detector.save(root / DETECTOR_DIR)
    rec = record.with_artifact(str(detector.artifact_id_))
    rec.save(root / RECORD_NAME)
    return rec
