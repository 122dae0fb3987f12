"""``NoveltyDetector``: embedder + FAISS index + scorers + conformal calibration, saved as one artifact.

    det = NoveltyDetector().fit(train_images)       # default backbone, kNN scorer, 20 % held out to calibrate
    v = det.score("frame.jpg")                      # Verdict(novelty, p_value, is_novel, scores, neighbors…)
    batch = det.score_batch(paths)                  # one record per input, unreadable ones with an error
    det.save("detectors/windshield"); det = novelty.load("detectors/windshield")

Scores: **higher = more novel**. ``p_value`` is the conformal p-value against held-out in-distribution
calibration scores; ``novelty = 1 − p_value``; ``is_novel = p_value < alpha``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from novelty import __version__
from novelty.artifact import read_arrays, read_artifact, write_arrays, write_artifact
from novelty.calibration import MultiScorerCalibrator, check_alpha, check_groups
from novelty.embedder import Embedder, as_source_list
from novelty.errors import ArtifactError, ArtifactVersionError, InvalidInputError, NotFittedError
from novelty.head import ConditionHead
from novelty.images import ImageSource, describe_source
from novelty.index import EmbeddingIndex, as_embeddings
from novelty.scorers import REGISTRY as SCORERS
from novelty.scorers import Scorer, create_scorer
from novelty.weights import DEFAULT_BACKBONE

log = logging.getLogger(__name__)

__all__ = ["BatchVerdicts", "Neighbor", "NoveltyDetector", "Verdict", "load"]


@dataclass(frozen=True)
class Neighbor:
    """A training item close to the scored image: its id (path or ``#index``) and Euclidean distance."""

    id: str
    distance: float


@dataclass(frozen=True)
class Verdict:
    """The answer for one image. ``novelty = 1 − p_value``; ``is_novel = p_value < alpha``.

    ``scores`` are the raw per-scorer scores (higher = more novel), ``p_values`` their conformal p-values.
    For an unreadable input (in batch results) ``error`` says why and the numbers are NaN.
    With a condition head: ``prediction``, its calibrated ``probability``, and ``trusted`` — a prediction on a
    novel image is reported but not trusted (the classifier never saw anything like it).
    """

    source: str
    novelty: float
    p_value: float
    is_novel: bool
    score: float  # the raw score behind p_value: the scorer's own, or the combination of several
    scores: dict[str, float]
    p_values: dict[str, float]
    neighbors: tuple[Neighbor, ...]
    error: str | None = None
    prediction: Any = None  # the condition head's class, when the detector has a head
    probability: float | None = None  # its temperature-calibrated probability
    trusted: bool | None = None  # the prediction is trusted only when the image is readable and not novel


@dataclass
class BatchVerdicts:
    """Vectorised results: arrays with one row per input, in input order (nothing dropped)."""

    sources: list[str]
    novelty: np.ndarray
    p_value: np.ndarray
    is_novel: np.ndarray
    score: np.ndarray  # the raw score behind p_value (combined when there are several scorers)
    scores: dict[str, np.ndarray]
    p_values: dict[str, np.ndarray]
    neighbor_ids: np.ndarray  # (n, k) positions in the training set, -1 for unreadable inputs
    neighbor_distances: np.ndarray  # (n, k)
    errors: list[str | None]
    train_ids: Sequence[str] = field(repr=False, default=())
    predictions: list[Any] | None = None  # per input (None where unreadable), when the detector has a head
    probabilities: np.ndarray | None = None  # (n, n_classes) calibrated, NaN rows where unreadable
    classes: list[Any] | None = None

    @property
    def probability(self) -> np.ndarray | None:
        """Calibrated probability of each predicted class (NaN where unreadable)."""
        return None if self.probabilities is None else self.probabilities.max(axis=1)

    @property
    def trusted(self) -> np.ndarray:
        """Predictions to act on: readable, not novel (and a head exists)."""
        if self.predictions is None:
            return np.zeros(len(self), dtype=bool)
        return self.ok & ~self.is_novel

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Verdict:
        ok = self.errors[i] is None
        return Verdict(
            source=self.sources[i],
            novelty=float(self.novelty[i]),
            p_value=float(self.p_value[i]),
            is_novel=bool(self.is_novel[i]),
            score=float(self.score[i]),
            scores={k: float(v[i]) for k, v in self.scores.items()},
            p_values={k: float(v[i]) for k, v in self.p_values.items()},
            neighbors=tuple(
                Neighbor(self.train_ids[j], float(d))
                for j, d in zip(self.neighbor_ids[i], self.neighbor_distances[i], strict=True)
                if ok and j >= 0
            ),
            error=self.errors[i],
            prediction=None if self.predictions is None else self.predictions[i],
            probability=(
                None if self.probabilities is None or not ok else float(self.probabilities[i].max())
            ),
            trusted=None if self.predictions is None else bool(ok and not self.is_novel[i]),
        )

    def __iter__(self) -> Iterator[Verdict]:
        return (self[i] for i in range(len(self)))

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per input (JSON-friendly), e.g. for ``pandas.DataFrame(batch.to_records())``."""
        out = []
        for v in self:
            rec: dict[str, Any] = {
                "source": v.source,
                "novelty": v.novelty,
                "p_value": v.p_value,
                "is_novel": v.is_novel,
                "score": v.score,
            }
            rec.update({f"score_{k}": s for k, s in v.scores.items()})
            rec.update({f"p_value_{k}": p for k, p in v.p_values.items()})
            rec["neighbors"] = [n.id for n in v.neighbors]
            rec["neighbor_distances"] = [n.distance for n in v.neighbors]
            if self.predictions is not None:
                rec["prediction"] = v.prediction
                rec["probability"] = v.probability
                rec["trusted"] = v.trusted
            rec["error"] = v.error or ""
            out.append(rec)
        return out


def _scorer_specs(scorers: Any) -> list[Scorer]:
    if isinstance(scorers, (str, Scorer)):
        scorers = (scorers,)
    if isinstance(scorers, Mapping):
        built = [create_scorer(name, **(params or {})) for name, params in scorers.items()]
    else:
        built = [create_scorer(s) for s in scorers]
    if not built:
        raise InvalidInputError("at least one scorer is needed, e.g. scorers=('knn',)")
    names = [s.name for s in built]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"each scorer may appear once; got {names}")
    return built


def calibration_split(
    n: int, fraction: float, *, groups: Sequence[Any] | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit, calibration)``. With ``groups``, all items of a group land in the same part
    (use it for near-duplicates: video frames in blocks, several photos of one object)."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInputError(f"calibration_fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_cal = max(1, int(round(fraction * n)))
        return np.sort(perm[n_cal:]), np.sort(perm[:n_cal])
    g = np.asarray(groups)
    if g.shape[0] != n:
        raise InvalidInputError(f"groups has {g.shape[0]} entries for {n} images")
    uniq = np.unique(g)
    if uniq.shape[0] < 2:
        raise InvalidInputError("groups must contain at least two distinct groups")
    order = rng.permutation(uniq.shape[0])
    cal_groups: list[Any] = []
    count = 0
    for j in order:
        if count >= fraction * n:
            break
        cal_groups.append(uniq[j])
        count += int((g == uniq[j]).sum())
    is_cal = np.isin(g, np.array(cal_groups))
    return np.flatnonzero(~is_cal), np.flatnonzero(is_cal)


class NoveltyDetector:
    """Detects images that lie outside the training distribution.

    Parameters
    ----------
    backbone: timm model name (default ``tf_efficientnet_lite0``, weights shipped offline).
    scorers: registry names, ``Scorer`` instances, or ``{name: params}``; default kNN.
    weights: backbone weights (see :class:`~novelty.embedder.Embedder`).
    alpha: flag an image when its p-value < alpha (the false-alarm rate on in-distribution data).
    calibration_fraction: share of the fitting images held out to calibrate (never used to fit scorers).
    n_neighbors: training neighbours reported with each verdict.
    draft: JPEG draft decoding (see :class:`~novelty.embedder.Embedder`); saved with the detector.
    head: the condition classifier fitted when ``fit`` gets ``labels``: ``None`` → a default
        :class:`~novelty.head.ConditionHead`, a ``ConditionHead`` or a dict of its parameters, ``False`` → none.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        scorers: Any = ("knn",),
        *,
        weights: str | os.PathLike[str] | None = None,
        alpha: float = 0.05,
        calibration_fraction: float = 0.2,
        n_neighbors: int = 5,
        device: str | None = "auto",
        batch_size: int = 32,
        num_workers: int | None = None,
        seed: int = 0,
        head: Any = None,
        draft: bool = True,
    ):
        self.backbone = backbone
        self.scorers = scorers
        self.weights = weights
        self.alpha = alpha
        self.calibration_fraction = calibration_fraction
        self.n_neighbors = n_neighbors
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.head = head
        self.draft = draft
        self._embedder: Embedder | None = None

    # --- the backbone ---------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The image → embedding part (built on first use)."""
        if self._embedder is None:
            self._embedder = Embedder(
                self.backbone,
                weights=self.weights,
                device=self.device,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                draft=self.draft,
            )
        return self._embedder

    # --- fitting --------------------------------------------------------------------------------------
    def fit(
        self,
        images: Any,
        labels: Sequence[Any] | None = None,
        *,
        groups: Sequence[Any] | None = None,
        ids: Sequence[str] | None = None,
        progress: bool | None = None,
    ) -> NoveltyDetector:
        """Embed ``images`` (paths, a directory, PIL images, arrays or an ``(image, label)`` dataset), hold out
        ``calibration_fraction`` of them (by ``groups`` when given), fit the index and scorers on the rest and
        calibrate on the held-out part. Any unreadable training image raises its specific error."""
        sources = as_source_list(images)
        if ids is None:
            ids = [
                describe_source(s) if isinstance(s, (str, os.PathLike)) else f"#{i}"
                for i, s in enumerate(sources)
            ]
        log.info("embedding %d training images with %s", len(sources), self.backbone)
        emb = self.embedder.embed(sources, progress=progress)
        return self.fit_embeddings(emb, labels, groups=groups, ids=ids)

    def fit_embeddings(
        self,
        embeddings: np.ndarray,
        labels: Sequence[Any] | None = None,
        *,
        groups: Sequence[Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> NoveltyDetector:
        """Fit from embeddings already made by this detector's backbone (skips the image pass)."""
        x = as_embeddings(embeddings)
        n = x.shape[0]
        if ids is not None and len(ids) != n:
            raise InvalidInputError(f"ids has {len(ids)} entries for {n} embeddings")
        if labels is not None and len(labels) != n:
            raise InvalidInputError(f"labels has {len(labels)} entries for {n} embeddings")
        if n < 3:
            raise InvalidInputError(f"need at least 3 training images, got {n}")
        scorers = _scorer_specs(self.scorers)
        fit_idx, cal_idx = calibration_split(n, self.calibration_fraction, groups=groups, seed=self.seed)
        check_alpha(self.alpha, cal_idx.shape[0])
        if groups is not None:
            check_groups(self.alpha, int(np.unique(np.asarray(groups)[cal_idx]).shape[0]))
        x_fit, x_cal = x[fit_idx], x[cal_idx]
        y_fit = None if labels is None else np.asarray(labels)[fit_idx]
        index = EmbeddingIndex(metric="cosine").add(x_fit)
        for s in scorers:
            log.info("fitting scorer %s on %d embeddings", s.name, x_fit.shape[0])
            s.fit(x_fit, y_fit, index=index if s.uses_index else None)
        cal_scores = {s.name: s.score(x_cal) for s in scorers}
        self.calibrator_ = MultiScorerCalibrator().fit(cal_scores)
        self.head_ = None
        if labels is not None and self.head is not False:
            head = self._make_head()
            g_fit = None if groups is None else np.asarray(groups)[fit_idx]
            log.info("fitting condition head on %d labelled embeddings", x_fit.shape[0])
            self.head_ = head.fit(x_fit, y_fit, groups=g_fit)
        self.index_ = index
        self.scorers_ = scorers
        all_ids = list(ids) if ids is not None else [f"#{i}" for i in range(n)]
        self.train_ids_ = [all_ids[i] for i in fit_idx]
        self.calibration_ids_ = [all_ids[i] for i in cal_idx]
        self.dim_ = x.shape[1]
        self.split_ = "groups" if groups is not None else "random"
        return self

    def _make_head(self) -> ConditionHead:
        if isinstance(self.head, ConditionHead):
            return self.head
        if isinstance(self.head, Mapping):
            return ConditionHead(**{"seed": self.seed, **self.head})
        if self.head is None or self.head is True:
            return ConditionHead(seed=self.seed)
        raise InvalidInputError(
            f"head must be None, False, a ConditionHead or a dict of its parameters; got {self.head!r}"
        )

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "calibrator_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("NoveltyDetector is not fitted: call fit(images) or novelty.load(dir)")

    # --- scoring --------------------------------------------------------------------------------------
    def score(self, image: ImageSource) -> Verdict:
        """Score one image; an unreadable one raises its specific :class:`~novelty.errors.ImageError`."""
        self._check_fitted()
        emb = self.embedder.embed_one(image)
        return self.score_embeddings(emb[None, :], sources=[describe_source(image)])[0]

    def score_batch(self, images: Any, *, progress: bool | None = None) -> BatchVerdicts:
        """Score many images; unreadable ones get a record with ``error`` set, the rest go on."""
        self._check_fitted()
        sources = as_source_list(images)
        res = self.embedder.embed_with_errors(sources, progress=progress)
        errors = [None if e is None else f"{e.reason_code}: {e.reason}" for e in res.errors]
        return self.score_embeddings(
            res.embeddings, sources=[describe_source(s) for s in sources], errors=errors
        )

    def score_embeddings(
        self,
        embeddings: np.ndarray,
        *,
        sources: Sequence[str] | None = None,
        errors: Sequence[str | None] | None = None,
    ) -> BatchVerdicts:
        """Score embeddings from this detector's backbone; rows listed in ``errors`` are reported, not scored."""
        self._check_fitted()
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise InvalidInputError(f"embeddings must be (n, d), got shape {emb.shape}")
        n = emb.shape[0]
        errs: list[str | None] = list(errors) if errors is not None else [None] * n
        ok = np.array([e is None for e in errs], dtype=bool)
        k = min(self.n_neighbors, self.index_.ntotal)
        nov = np.full(n, np.nan)
        pv = np.full(n, np.nan)
        comb = np.full(n, np.nan)
        raw = {s.name: np.full(n, np.nan) for s in self.scorers_}
        pvs = {s.name: np.full(n, np.nan) for s in self.scorers_}
        nb_ids = np.full((n, k), -1, dtype=np.int64)
        nb_d = np.full((n, k), np.nan, dtype=np.float32)
        if ok.any():
            x = as_embeddings(emb[ok], self.dim_)
            s_ok = {s.name: s.score(x) for s in self.scorers_}
            p_ok, per_ok = self.calibrator_.p_values(s_ok)
            for name in raw:
                raw[name][ok] = s_ok[name]
                pvs[name][ok] = per_ok[name]
            pv[ok] = p_ok
            comb[ok] = self.calibrator_.combined_scores(s_ok)
            nov[ok] = 1.0 - p_ok
            if k:
                d, i = self.index_.search(x, k)
                nb_ids[ok], nb_d[ok] = i, d
        predictions: list[Any] | None = None
        proba: np.ndarray | None = None
        classes: list[Any] | None = None
        if self.head_ is not None:
            classes = list(self.head_.classes_)
            proba = np.full((n, len(classes)), np.nan)
            predictions = [None] * n
            if ok.any():
                p_ok = self.head_.predict_proba(as_embeddings(emb[ok], self.dim_))
                proba[ok] = p_ok
                for j, c in zip(np.flatnonzero(ok), p_ok.argmax(axis=1), strict=True):
                    predictions[j] = classes[c]
        return BatchVerdicts(
            predictions=predictions,
            probabilities=proba,
            classes=classes,
            sources=list(sources) if sources is not None else [f"#{i}" for i in range(n)],
            novelty=nov,
            p_value=pv,
            is_novel=ok & (np.nan_to_num(pv, nan=1.0) < self.alpha),
            score=comb,
            scores=raw,
            p_values=pvs,
            neighbor_ids=nb_ids,
            neighbor_distances=nb_d,
            errors=errs,
            train_ids=self.train_ids_,
        )

    # --- persistence ----------------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "weights": None if self.weights is None else str(self.weights),
            "alpha": self.alpha,
            "calibration_fraction": self.calibration_fraction,
            "n_neighbors": self.n_neighbors,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "draft": self.draft,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the detector as a verified, pickle-free artifact directory (atomically)."""
        self._check_fitted()
        import faiss
        import timm
        import torch

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
            "params": self._params(),
            "backbone": self.embedder.config(),
            "index": {
                "file": "index.faiss",
                "metric": self.index_.metric,
                "factory": self.index_.factory,
                "n": self.index_.ntotal,
                "dim": self.dim_,
            },
            "scorers": [],
            "calibration": {
                "file": "calibration.safetensors",
                "n": self.calibrator_.n,
                "fraction": self.calibration_fraction,
                "split": self.split_,
                "seed": self.seed,
                "rule": "p = (1 + #{cal >= s}) / (n_cal + 1); several scorers: mean of robust z-scores, then p",
            },
            "train_ids": "train_ids.json",
            "head": None
            if self.head_ is None
            else {
                "file": "head.safetensors",
                "params": self.head_.get_params(),
                **self.head_.state_meta(),
            },
        }
        for s in self.scorers_:
            arrays = s.state_arrays()
            manifest["scorers"].append(
                {
                    "name": s.name,
                    "class": type(s).__name__,
                    "params": s.get_params(),
                    "file": f"scorer_{s.name}.safetensors" if arrays else None,
                }
            )

        def write(tmp: Path) -> None:
            self.index_.save(tmp / "index.faiss")
            write_arrays(tmp / "calibration.safetensors", self.calibrator_.state_arrays())
            (tmp / "train_ids.json").write_text(
                json.dumps({"train": self.train_ids_, "calibration": self.calibration_ids_})
            )
            for s in self.scorers_:
                arrays = s.state_arrays()
                if arrays:
                    write_arrays(tmp / f"scorer_{s.name}.safetensors", arrays)
            if self.head_ is not None:
                write_arrays(tmp / "head.safetensors", self.head_.state_arrays())

        return write_artifact(path, manifest, write)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | None = "auto",
        weights: str | os.PathLike[str] | None = None,
        num_workers: int | None = None,
    ) -> NoveltyDetector:
        """Load a saved detector, verifying every file's sha256 and the backbone's weights fingerprint.

        ``weights`` overrides the recorded weights location (e.g. a local file on another machine).
        """
        root, m = read_artifact(path)
        try:
            params = m["params"]
            bb = m["backbone"]
            idx = m["index"]
            cal = m["calibration"]
            scorer_entries = m["scorers"]
        except KeyError as e:
            raise ArtifactError(f"{root}/manifest.json lacks the {e} section") from None
        _warn_versions(m.get("versions", {}), root)
        det = cls(
            backbone=params["backbone"],
            scorers=tuple(e["name"] for e in scorer_entries),
            weights=weights if weights is not None else params.get("weights"),
            alpha=params["alpha"],
            calibration_fraction=params["calibration_fraction"],
            n_neighbors=params["n_neighbors"],
            device=device,
            batch_size=params.get("batch_size", 32),
            num_workers=num_workers,
            seed=params.get("seed", 0),
            draft=params.get("draft", True),
        )
        index = EmbeddingIndex.load(
            root / idx["file"], metric=idx["metric"], factory=idx.get("factory", "Flat")
        )
        if index.ntotal != idx["n"] or index.dim != idx["dim"]:
            raise ArtifactError(
                f"{root}: index holds {index.ntotal}×{index.dim}, manifest says {idx['n']}×{idx['dim']}"
            )
        scorers: list[Scorer] = []
        for entry in scorer_entries:
            if entry["name"] not in SCORERS:
                raise ArtifactVersionError(
                    f"{root}: scorer {entry['name']!r} is not known to this release; known: {sorted(SCORERS)}"
                )
            arrays = read_arrays(root / entry["file"]) if entry.get("file") else {}
            scorers.append(SCORERS[entry["name"]].from_state(entry["params"], arrays, index=index))
        det.index_ = index
        det.scorers_ = scorers
        det.calibrator_ = MultiScorerCalibrator.from_state(
            [s.name for s in scorers], read_arrays(root / cal["file"])
        )
        ids = json.loads((root / m.get("train_ids", "train_ids.json")).read_text())
        det.train_ids_ = list(ids["train"])
        det.calibration_ids_ = list(ids.get("calibration", []))
        det.dim_ = int(idx["dim"])
        det.split_ = cal.get("split", "random")
        head = m.get("head")
        det.head_ = (
            None
            if not head
            else ConditionHead.from_state(head["params"], head, read_arrays(root / head["file"]))
        )
        emb = det.embedder  # builds the backbone: its weights must be the ones the detector was fitted with
        if emb.fingerprint != bb["fingerprint"]:
            raise ArtifactVersionError(
                f"{root}: backbone {bb['backbone']!r} weights differ from those the detector was fitted with "
                f"(fingerprint {emb.fingerprint[:12]}… vs {bb['fingerprint'][:12]}…, source {emb.weights_source}); "
                "scores would be meaningless. Install the recorded weights or pass weights=PATH to them."
            )
        if emb.dim != det.dim_:
            raise ArtifactVersionError(
                f"{root}: backbone gives {emb.dim}-d embeddings, the index holds {det.dim_}-d"
            )
        return det

    def __repr__(self) -> str:
        state = (
            f"fitted on {self.index_.ntotal}, calibrated on {self.calibrator_.n}"
            if self.is_fitted
            else "not fitted"
        )
        names = [s.name for s in self.scorers_] if self.is_fitted else self.scorers
        if self.is_fitted and self.head_ is not None:
            state += f", head over {self.head_.classes_}"
        return f"NoveltyDetector(backbone={self.backbone!r}, scorers={names}, alpha={self.alpha}; {state})"


def _warn_versions(saved: Mapping[str, str], root: Path) -> None:
    import faiss
    import timm
    import torch

    now = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "faiss": getattr(faiss, "__version__", "unknown"),
    }
    diffs = [f"{k} {saved[k]} → {v}" for k, v in now.items() if k in saved and saved[k] != v]
    if diffs:
        warnings.warn(
            f"{root} was saved with other library versions ({', '.join(diffs)}); the backbone fingerprint still "
            "matches, but re-check the calibration if scores look off",
            stacklevel=3,
        )


def load(path: str | os.PathLike[str], **kwargs: Any) -> NoveltyDetector:
    """Load a detector saved with :meth:`NoveltyDetector.save` (see there for keyword arguments)."""
    return NoveltyDetector.load(path, **kwargs)
