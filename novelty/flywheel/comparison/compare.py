"""Compare a champion and a challenger on the same frozen test data, and decide whether to promote.

    c = compare("REGISTRY/champion", "runs/v4", Dataset.open("data/test"), new_slice=Dataset.open("data/new"))
    c.passed, c.reasons                   # the gate's verdict, each check with its numbers
    c.save("comparison.json"); c.write_report("comparison.html")

**Same data, same backbone pass.** Both detectors score the same images: the frozen test manifest (a dataset
version, named by its identity) plus, optionally, the *new slice* (newly labelled images held out from
training). When both detectors have the same backbone (name, weights fingerprint, preprocessing) the images
are embedded once and both score those embeddings — ceteris paribus. The two must have been trained with the
same parameters (equal :func:`~novelty.flywheel.record.config_hash`) unless ``allow_config_change``.

**Per condition** (``entry.condition``; the rows are ``all``, each slice when there is a new slice, and each
condition): head accuracy; expected calibration error (ECE: 15 equal-width bins of the head's top
probability, ``Σ_bins |Σ (correct − confidence)| / n``); novelty AUROC (the nominal images against the
row's other images, scored by ``1 − p`` of the detector's combined p-value); the false-alarm rate at alpha
(share of the row's nominal images with ``p < alpha``). Nominal conditions are ``nominal`` (default
``("clean",)``); images without a condition are the condition ``"unspecified"``.

**Uncertainty.** Every difference (challenger − champion) gets a paired bootstrap interval: the same
resampled images for both models, ``n_boot`` replicates, percentile interval at ``level``. The resampling is
stratified by slice and condition (each keeps its size) and clustered by ``entry.group`` — near-duplicate
video frames move together, so the interval is not narrowed by counting one scene many times; an image
without a group is a cluster of its own. McNemar's exact test (two-sided binomial on the discordant pairs)
tests the head's correctness; it treats images as independent, which near-duplicates are not, so the gate
asks for it *and* the clustered interval.

**The gate** (:mod:`novelty.flywheel.comparison.gate`): promote only when the overall gain (accuracy; the novelty
AUROC for detectors without a head) reaches ``min_gain`` with its interval above 0 (and McNemar's p < 0.05
with a head), no condition is worse by more than ``margin``, the false-alarm rate stays within its bound and
no test image was trained on. ``passed`` and ``reasons`` say which check decided.

**Trusted but wrong.** With a head on both detectors the comparison also keeps, per side, the images its trust
rule passed and its head got wrong (:func:`trusted_wrong`): the answers auto-accept and a production caller
would have acted on. Their count per condition is kept in full, the images themselves up to
:data:`TRUSTED_WRONG_SHOWN` per side, for the report's gallery. They are shown to a reviewer and never judged:
the gate and :meth:`Comparison.rejudge` ignore them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.errors import InvalidInputError
from novelty.flywheel.comparison.gate import Check, GateRule
from novelty.flywheel.comparison.outputs import (
    TRUSTED_WRONG_SHOWN,
    UNSPECIFIED,
    ModelOutputs,
    compare_outputs,
    trusted_wrong,
)
from novelty.flywheel.comparison.paired import (
    ECE_BINS,
    bootstrap_weights,
    expected_calibration_error,
    mcnemar_exact,
)
from novelty.flywheel.comparison.result import (
    FORMAT,
    FORMAT_VERSION,
    Comparison,
    ComparisonError,
    ComparisonFile,
    MetricDiff,
    Row,
    load_comparison,
    render_report,
)
from novelty.flywheel.dataset import Dataset, DatasetError, embed_entries, embedder_key
from novelty.identity import config_hash, detector_params, param_diff
from novelty.params import check_real

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector
    from novelty.embedder import Embedder
    from novelty.flywheel.dataset import Entry
    from novelty.flywheel.record import TrainingRecord

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TRUSTED_WRONG_SHOWN",
    "UNSPECIFIED",
    "Check",
    "Comparison",
    "ComparisonError",
    "ComparisonFile",
    "GateRule",
    "MetricDiff",
    "ModelOutputs",
    "Row",
    "bootstrap_weights",
    "compare",
    "compare_embeddings",
    "compare_outputs",
    "expected_calibration_error",
    "load_comparison",
    "mcnemar_exact",
    "parse_dataset_arg",
    "render_report",
    "trusted_wrong",
]


# --- the comparison on detectors --------------------------------------------------------------------
def compare_embeddings(
    champion: NoveltyDetector,
    challenger: NoveltyDetector,
    embeddings: np.ndarray | tuple[np.ndarray, np.ndarray],
    labels: Sequence[str] | np.ndarray,
    conditions: Sequence[str | None] | np.ndarray,
    *,
    groups: Sequence[str | None] | np.ndarray | None = None,
    slices: Sequence[str] | np.ndarray | None = None,
    alpha: float | None = None,
    nominal: Sequence[str] = ("clean",),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    rule: GateRule | None = None,
    allow_config_change: bool = False,
    ids: Sequence[str] | None = None,
    paths: Sequence[str | None] | None = None,
) -> Comparison:
    """:func:`compare` on embeddings already made: one array when both detectors share a backbone, else
    ``(champion's, challenger's)``. ``ids`` and ``paths`` name the images in the trusted-but-wrong section
    (default: their positions, no path)."""
    config_check = _config_check(champion, challenger, allow_config_change)
    x1, x2 = embeddings if isinstance(embeddings, tuple) else (embeddings, embeddings)
    o1 = ModelOutputs.from_detector(champion, x1, alpha)
    o2 = ModelOutputs.from_detector(challenger, x2, alpha)
    rule = rule or GateRule()
    rows, checks = compare_outputs(
        o1,
        o2,
        labels,
        conditions,
        groups=groups,
        slices=slices,
        nominal=nominal,
        n_boot=n_boot,
        seed=seed,
        level=level,
        rule=rule,
        config_check=config_check,
    )
    return Comparison(
        rows=rows,
        checks=checks,
        champion=_model_info(champion, o1),
        challenger=_model_info(challenger, o2),
        settings=_settings(nominal, n_boot, seed, level, alpha, rule),
        embeddings={"shared": not isinstance(embeddings, tuple)},
        trusted_wrong=trusted_wrong(
            o1, o2, labels, conditions, ids=ids, paths=paths, slices=slices, nominal=nominal
        ),
    )


def _model_info(det: NoveltyDetector, out: ModelOutputs, path: str | None = None) -> dict[str, Any]:
    return {
        "path": path,
        "artifact_id": det.artifact_id_,
        "config_hash": config_hash(detector_params(det)),
        "alpha": out.alpha,
        "classes": out.classes,
        "backbone": det.backbone,
        "trust": {"rule": det.trust if out.risk is not None else "not-novel", "risk": out.risk}
        if out.has_head
        else None,
    }


def _config_check(champion: NoveltyDetector, challenger: NoveltyDetector, allow: bool) -> Check:
    p1, p2 = detector_params(champion), detector_params(challenger)
    h1, h2 = config_hash(p1), config_hash(p2)
    if h1 == h2:
        return Check(
            "same parameters", None, f"ceteris paribus: config hash {h1[:12]}… on both", {"config_hash": h1}
        )
    diff = param_diff(p1, p2)
    if not allow:
        raise ComparisonError(
            f"the challenger was not trained with the champion's parameters ({diff}); only the data may change "
            "between them. Pass allow_config_change=True (--allow-config-change) to compare anyway"
        )
    return Check(
        "same parameters",
        None,
        f"parameters differ (allowed): {diff}",
        {"champion": h1, "challenger": h2},
    )


def _matching(path: str | os.PathLike[str], embedder: Embedder | None) -> Embedder | None:
    """``embedder`` when it is the backbone the detector at ``path`` was fitted with, else ``None``."""
    from novelty.flywheel.record import locate, params_from_artifact  # lazy: pulls in torch

    if embedder is None:
        return None
    p, _ = params_from_artifact(locate(path).detector_dir)
    mine = (embedder.backbone_name, embedder.fingerprint, embedder.draft)
    return embedder if (p["backbone"], p["weights_fingerprint"], p["draft"]) == mine else None


def _load_pair(
    champion: NoveltyDetector | str | os.PathLike[str],
    challenger: NoveltyDetector | str | os.PathLike[str],
    embedder: Embedder | None = None,
) -> tuple[
    NoveltyDetector, TrainingRecord | None, str | None, NoveltyDetector, TrainingRecord | None, str | None
]:
    """Both detectors and their records; a backbone is loaded once when they (or ``embedder``) share it."""
    from novelty.flywheel.record import load_champion  # lazy: pulls in torch

    if isinstance(champion, (str, os.PathLike)):
        d1, r1 = load_champion(champion, embedder=_matching(champion, embedder))
        path1: str | None = os.fspath(champion)
    else:
        d1, r1, path1 = champion, None, None
    if isinstance(challenger, (str, os.PathLike)):
        shared = _matching(challenger, d1.embedder) or _matching(challenger, embedder)
        d2, r2 = load_champion(challenger, embedder=shared)
        path2: str | None = os.fspath(challenger)
    else:
        d2, r2, path2 = challenger, None, None
    _ = d1.state_, d2.state_  # NotFittedError before any work
    return d1, r1, path1, d2, r2, path2


def _as_dataset(ds: Dataset | str | os.PathLike[str]) -> Dataset:
    return ds if isinstance(ds, Dataset) else Dataset.open(ds)


def parse_dataset_arg(text: str) -> tuple[str, int | None]:
    """``"DATASET"`` or ``"DATASET:VERSION"`` → (path, version or None)."""
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and head:
        return head, int(tail)
    return text, None


def _leakage(
    entries: Sequence[Entry],
    records: Sequence[tuple[str, TrainingRecord | None]],
    detectors: Sequence[NoveltyDetector | None] = (),
) -> Check:
    """Test images (by content hash) that are also in a detector's training data: from its record's dataset,
    else from the sha256 of its training images kept in the artifact (``trained_sha256_``)."""
    test = {e.sha256 for e in entries}
    found: dict[str, int] = {}
    unchecked = []
    dets = list(detectors) + [None] * (len(records) - len(detectors))
    for (who, rec), det in zip(records, dets, strict=True):
        if rec is None or rec.dataset is None:
            seen = None if det is None else det.trained_sha256_
            if seen is None:
                unchecked.append(f"{who} (no training record, and no image hashes in its artifact)")
            else:
                found[who] = len(test & set(seen))
            continue
        try:
            ds = Dataset.open(rec.dataset.path)
            trained = {e.sha256 for e in ds.entries(rec.dataset.version)}
        except (DatasetError, InvalidInputError) as e:
            unchecked.append(f"{who} (its dataset {rec.dataset.path} is not readable: {e})")
            continue
        found[who] = len(test & trained)
    if any(found.values()):
        msg = "; ".join(f"{v} test images are in the {who}'s training data" for who, v in found.items() if v)
        return Check("no leakage", False, msg + ": the test set must be held out", {"overlap": found})
    if not found:
        return Check("no leakage", None, "not checked: " + ", ".join(unchecked), {})
    msg = "no test image is in the training data of " + " or ".join(found)
    if unchecked:
        msg += "; not checked for " + ", ".join(unchecked)
    return Check("no leakage", True, msg, {"overlap": found})


def compare(
    champion: NoveltyDetector | str | os.PathLike[str],
    challenger: NoveltyDetector | str | os.PathLike[str],
    test_dataset: Dataset | str | os.PathLike[str],
    *,
    test_version: int | None = None,
    new_slice: Dataset | str | os.PathLike[str] | None = None,
    new_version: int | None = None,
    alpha: float | None = None,
    nominal: Sequence[str] = ("clean",),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    rule: GateRule | None = None,
    allow_config_change: bool = False,
    cache: bool = True,
    champion_record: TrainingRecord | None = None,
    challenger_record: TrainingRecord | None = None,
    embedder: Embedder | None = None,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Both detectors on the same frozen test manifest (``test_dataset`` at ``test_version``, default its
    latest) plus the new slice (every entry of ``new_slice``, or with ``new_version`` only the entries that
    version added); rows, intervals and the gate as in the module docstring.

    A detector given as a path may be a detector directory or ``DIR`` with ``detector/`` and ``record.json``;
    the records (also passable directly) let the gate check that no test image was trained on.
    ``embedder``: a loaded backbone for detectors given as paths (used where it is theirs)."""
    say = progress or (lambda _msg: None)
    if alpha is not None:  # bad arguments fail before any loading or embedding
        check_real(alpha, "alpha", low=0.0, high=1.0, low_open=True, high_open=True)
    d1, r1, path1, d2, r2, path2 = _load_pair(champion, challenger, embedder)
    r1, r2 = champion_record or r1, challenger_record or r2
    config_check = _config_check(d1, d2, allow_config_change)
    test_ds = _as_dataset(test_dataset)
    tv = test_ds.latest_version if test_version is None else test_version
    entries = list(test_ds.entries(tv))
    if not entries:
        raise ComparisonError(f"the test dataset {test_ds.path} (version {tv}) has no entries")
    slices = ["test"] * len(entries)
    caches: list[Path | None] = [test_ds.embeddings_dir if cache else None] * len(entries)
    test_ref = {
        "path": str(Path(test_ds.path).resolve()),
        "version": tv,
        "identity": test_ds.identity(tv),
        "n": len(entries),
    }
    new_ref = None
    if new_slice is not None:
        new_ds = _as_dataset(new_slice)
        if new_version is None:
            new_entries = new_ds.entries()
            nv = new_ds.latest_version
        else:
            new_entries = new_ds.entries(new_version, versions=[new_version])
            nv = new_version
        seen = {e.sha256 for e in entries}
        fresh = [e for e in new_entries if e.sha256 not in seen]
        if not fresh:
            raise ComparisonError(
                f"the new slice ({new_ds.path}, version {nv}) adds no image the test set does not already hold"
            )
        missing = sorted(
            {e.condition for e in fresh if e.condition} - {e.condition for e in entries if e.condition}
        )
        if missing:
            warnings.warn(
                f"the frozen test set {test_ds.path} holds no image of {', '.join(missing)}, which the new slice "
                "(production) has: the comparison sees those conditions only in the slice, and the gate's per-"
                "condition checks cannot catch a regression there on frozen data; add labelled images of them to "
                "the test set",
                UserWarning,
                stacklevel=2,
            )
        new_ref = {
            "path": str(Path(new_ds.path).resolve()),
            "version": nv,
            "only_that_version": new_version is not None,
            "identity": new_ds.identity(nv),
            "n": len(fresh),
            "duplicates_of_test": len(new_entries) - len(fresh),
        }
        entries += fresh
        slices += ["new"] * len(fresh)
        caches += [new_ds.embeddings_dir if cache else None] * len(fresh)

    shared = embedder_key(d1.embedder) == embedder_key(d2.embedder)
    say(
        f"embedding {len(entries)} images"
        + (" once for both (same backbone)" if shared else " with each backbone")
    )
    x1 = _embed(entries, caches, d1.embedder)
    x2 = x1 if shared else _embed(entries, caches, d2.embedder)
    rule = rule or GateRule()
    o1 = ModelOutputs.from_detector(d1, x1, alpha)
    o2 = ModelOutputs.from_detector(d2, x2, alpha)
    say(f"bootstrap: {n_boot} replicates")
    rows, checks = compare_outputs(
        o1,
        o2,
        [e.label for e in entries],
        [e.condition for e in entries],
        groups=[e.group for e in entries],
        slices=slices,
        nominal=nominal,
        n_boot=n_boot,
        seed=seed,
        level=level,
        rule=rule,
        leakage=_leakage(entries, [("champion", r1), ("challenger", r2)], [d1, d2]),
        config_check=config_check,
    )
    return Comparison(
        rows=rows,
        checks=checks,
        champion=_model_info(d1, o1, path1),
        challenger=_model_info(d2, o2, path2),
        settings=_settings(nominal, n_boot, seed, level, alpha, rule),
        test=test_ref,
        new_slice=new_ref,
        embeddings={"shared": shared, "backbones": sorted({d1.backbone, d2.backbone})},
        trusted_wrong=trusted_wrong(
            o1,
            o2,
            [e.label for e in entries],
            [e.condition for e in entries],
            ids=[e.id for e in entries],
            paths=[e.path for e in entries],
            slices=slices,
            nominal=nominal,
        ),
    )


def _settings(
    nominal: Sequence[str], n_boot: int, seed: int, level: float, alpha: float | None, rule: GateRule
) -> dict[str, Any]:
    """What a comparison was run with (its JSON's ``settings``)."""
    return {
        "nominal": list(nominal),
        "n_boot": n_boot,
        "seed": seed,
        "level": level,
        "alpha": alpha,
        "ece_bins": ECE_BINS,
        "gate": rule.to_json(),
    }


def _embed(entries: Sequence[Entry], caches: Sequence[Path | None], embedder: Any) -> np.ndarray:
    """Embeddings of ``entries`` in order, each through its own dataset's cache."""
    out: np.ndarray | None = None
    for cache_dir in dict.fromkeys(caches):
        idx = [i for i, c in enumerate(caches) if c == cache_dir]
        x = embed_entries([entries[i] for i in idx], embedder, cache_dir)
        if out is None:
            out = np.empty((len(entries), x.shape[1]), dtype=np.float32)
        out[idx] = x
    if out is None:  # compare() refuses an empty test set before it embeds
        raise ComparisonError("there are no images to embed")
    return out
