"""``NoveltyDetector``: embedder + FAISS index + scorers + conformal calibration, saved as one artifact.

    det = NoveltyDetector().fit(train_images)       # default backbone, kNN scorer, 20 % held out to calibrate
    v = det.score("frame.jpg")                      # Verdict(novelty, p_value, is_novel, scores, neighbors…)
    batch = det.score_batch(paths)                  # one record per input, unreadable ones with an error
    det.save("detectors/windshield"); det = novelty.load("detectors/windshield")

Scores: **higher = more novel**. ``p_value`` is the conformal p-value against held-out in-distribution
calibration scores; ``novelty = 1 − p_value``; ``is_novel = p_value < alpha``. The result types live in
:mod:`novelty.verdicts`, building the fitted state in :mod:`novelty.fitting`, saving and loading in
:mod:`novelty.persistence`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from novelty.calibration import (
    MultiScorerCalibrator,
    calibration_split,
    min_training_images,
)
from novelty.embedder import Embedder, as_source_list, parse_device
from novelty.embedding_layers import DEFAULT_LAYERS, check_embedding_layers
from novelty.errors import InvalidInputError, NotFittedError
from novelty.fileio import source_sha256
from novelty.fitting import fit_state, recalibrated_state
from novelty.head import ConditionHead
from novelty.images import ImageSource, describe_source
from novelty.index import EmbeddingIndex
from novelty.params import check_bool, check_choice, check_int, check_real
from novelty.parts import DetectorParts, FittedState, build_parts
from novelty.patches import PatchExtractor, PatchResult
from novelty.persistence import load_detector, save_detector
from novelty.runtimes import (
    DEFAULT_RUNTIME,
    check_runtime,
)
from novelty.scorers import PatchKNNScorer, Scorer
from novelty.trust import (
    DEFAULT_DELTA,
    DEFAULT_RISK,
    DEFAULT_RULE,
    LEGACY_RULE,
    MARGIN,
    SUPPORT_FACTOR,
    TrustCalibration,
    check_margin,
    check_support_factor,
)
from novelty.trust import RULES as TRUST_RULES
from novelty.verdicts import BatchVerdicts, Neighbor, ScoredBatch, Verdict, score_state
from novelty.weights import DEFAULT_BACKBONE

log = logging.getLogger(__name__)

__all__ = ["BatchVerdicts", "Neighbor", "NoveltyDetector", "Verdict", "calibration_split", "load"]

ScorerSpec = str | Scorer | Sequence[str | Scorer] | Mapping[str, Mapping[str, Any] | None]
HeadSpec = bool | ConditionHead | Mapping[str, Any] | None


class NoveltyDetector:
    """Detects images that lie outside the training distribution.

    Parameters
    ----------
    backbone: timm model name (default ``tf_efficientnet_lite0``, weights shipped offline; with ``embedder``:
        that embedder's).
    scorers: registry names, ``Scorer`` instances (cloned: yours stay unfitted), or ``{name: params}``;
        default kNN.
    weights: backbone weights (see :class:`~novelty.embedder.Embedder`).
    alpha: flag an image when its p-value < alpha (the false-alarm rate on in-distribution data).
    calibration_fraction: share of the fitting images held out to calibrate (never used to fit scorers).
    n_neighbors: training neighbours reported with each verdict (0: none).
    draft: JPEG draft decoding (see :class:`~novelty.embedder.Embedder`); saved with the detector.
    head: the condition classifier fitted when ``fit`` gets ``labels``: ``None`` → a default
        :class:`~novelty.head.ConditionHead`, a ``ConditionHead`` (cloned) or a dict of its parameters,
        ``False`` → none.
    embedder: an existing :class:`~novelty.embedder.Embedder` to use (and share between detectors: the
        backbone loads once). Its own settings (backbone, weights, device, batch size, workers, draft) apply;
        the artifact records them, and ``load(..., embedder=...)`` can share one again.
    runtime: where the backbone runs (:mod:`novelty.runtimes`; default ``"torch"``, fp32 PyTorch; ``"auto"``:
        the fastest registered runtime measured on this machine when the backbone loads, after which
        ``runtime`` names it). An int8 runtime is quantised on this detector's own training images during
        ``fit``. Saved with the
        detector: loading with another runtime warns, and is refused where that runtime's embeddings differ
        beyond the tolerance (:func:`novelty.runtimes.runtimes_agree`) unless calibration is redone
        (``load(..., runtime=..., recalibrate=images)`` or :meth:`recalibrate`).
    risk: ε, the error rate allowed among the head's *trusted* predictions (default 0.05). With labels, the
        threshold on the head's competence is chosen on the labelled calibration split so that, with
        probability ≥ 1 − ``trust_delta`` over that split, the error rate among trusted predictions on images
        exchangeable with it is at most ε; a novel image is never trusted (:mod:`novelty.trust`).
    trust: how competence is measured (:data:`novelty.trust.RULES`); ``"not-novel"`` is the rule of
        artifacts saved before the trust decision existed (trusted = not novel, no error rate stated).
    trust_delta: δ of that guarantee (default 0.1).
    trust_support: how far a labelled training image vouches for the head, in units of its own scale
        (:data:`novelty.trust.SUPPORT_FACTOR`, the default, suits ``layers="final"``; saved with the detector).
    trust_margin: the *class margin* a trusted prediction needs (:func:`novelty.trust.class_margin`: its distance
        to the nearest training image of another class over that to the nearest of its predicted class;
        default :data:`novelty.trust.MARGIN`), ``None`` for none (artifacts saved before it). Saved with the
        detector; it keeps near-duplicates of classes nobody labelled from being trusted.
    layers: what the embedding is made of (:mod:`novelty.embedding_layers`): ``"final"`` (default) or e.g.
        ``"final+s16"``; with ``embedder``: that embedder's. Saved with the detector.
    index: the kind of FAISS index fitted: ``None`` (exact, cosine), a FAISS factory string (``"HNSW32"``,
        cosine) or an :class:`~novelty.index.EmbeddingIndex` used as a prototype (its metric and factory;
        the prototype itself stays untouched). Scorers that use the index must share its metric.
    """

    def __init__(
        self,
        backbone: str | None = None,
        scorers: ScorerSpec = ("knn",),
        *,
        weights: str | os.PathLike[str] | None = None,
        alpha: float = 0.05,
        calibration_fraction: float = 0.2,
        n_neighbors: int = 5,
        device: str | None = "auto",
        batch_size: int = 32,
        num_workers: int | None = None,
        seed: int = 0,
        head: HeadSpec = None,
        draft: bool = True,
        embedder: Embedder | None = None,
        index: EmbeddingIndex | str | None = None,
        runtime: str = DEFAULT_RUNTIME,
        risk: float = DEFAULT_RISK,
        trust: str = DEFAULT_RULE,
        trust_delta: float = DEFAULT_DELTA,
        trust_support: float = SUPPORT_FACTOR,
        trust_margin: float | None = MARGIN,
        layers: str | Sequence[str] = DEFAULT_LAYERS,
    ):
        if embedder is not None and not isinstance(embedder, Embedder):
            raise InvalidInputError(f"embedder must be a novelty.Embedder, got {type(embedder).__name__}")
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise InvalidInputError(f"weights must be None, 'random' or a path, got {weights!r}")
        if backbone is not None and (not isinstance(backbone, str) or not backbone):
            raise InvalidInputError(f"backbone must be a timm model name, got {backbone!r}")
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.num_workers = None if num_workers is None else check_int(num_workers, "num_workers", minimum=0)
        self.draft = check_bool(draft, "draft")
        self.runtime = check_runtime(runtime, auto=True)
        self.layers = check_embedding_layers(layers)
        self.calibrated_runtime_: str | None = None  # the runtime the fitted calibration was made with
        parse_device(device)
        self.device = device
        if embedder is not None:
            backbone, weights = self._adopt(embedder, backbone, weights)
        self.backbone = backbone if backbone is not None else DEFAULT_BACKBONE
        self.weights = weights
        self.alpha = check_real(alpha, "alpha", low=0.0, high=1.0, low_open=True, high_open=True)
        self.calibration_fraction = check_real(
            calibration_fraction, "calibration_fraction", low=0.0, high=1.0, low_open=True, high_open=True
        )
        self.n_neighbors = check_int(n_neighbors, "n_neighbors", minimum=0)
        self.seed = check_int(seed, "seed", minimum=0)
        self.risk = check_real(risk, "risk", low=0.0, high=1.0, low_open=True, high_open=True)
        self.trust = check_choice(trust, "trust", (*TRUST_RULES, LEGACY_RULE))
        self.trust_delta = check_real(
            trust_delta, "trust_delta", low=0.0, high=1.0, low_open=True, high_open=True
        )
        self.trust_support = check_support_factor(trust_support)
        self.trust_margin = check_margin(trust_margin)
        self.scorers = scorers
        self.head = head
        self.index = index
        self._embedder: Embedder | None = embedder
        self._patch_extractor: PatchExtractor | None = None
        self._fitted: FittedState | None = None
        self.parts()  # every argument checked here, not at the end of a long fit

    def _adopt(
        self, emb: Embedder, backbone: str | None, weights: str | os.PathLike[str] | None
    ) -> tuple[str, str | None]:
        """Take the embedder's settings; an explicit different value is a contradiction, not a choice."""
        if backbone is not None and backbone != emb.backbone_name:
            raise InvalidInputError(
                f"backbone={backbone!r} contradicts the embedder's {emb.backbone_name!r}; pass one of them"
            )
        if weights is not None and str(weights) != emb.weights:
            raise InvalidInputError(f"weights={weights!r} contradicts the embedder's {emb.weights!r}")
        for name, default, theirs in (
            ("batch_size", 32, emb.batch_size),
            ("draft", True, emb.draft),
            ("runtime", DEFAULT_RUNTIME, emb.runtime),
            ("layers", DEFAULT_LAYERS, emb.layers),
        ):
            if getattr(self, name) not in (default, theirs):
                raise InvalidInputError(
                    f"{name}={getattr(self, name)!r} contradicts the embedder's {theirs!r}; with an embedder, "
                    "its own settings apply"
                )
        self.batch_size, self.draft, self.num_workers = emb.batch_size, emb.draft, emb.num_workers
        self.runtime = emb.runtime
        self.layers = emb.layers
        self.device = str(emb.device)
        return emb.backbone_name, emb.weights

    def parts(self) -> DetectorParts:
        """Fresh (unfitted) scorers, head and index prototype built from the parameters, checking them all: what
        a fit starts from and what the detector's configuration is made of (:func:`novelty.identity.detector_params`)."""
        return build_parts(self.scorers, self.head, self.index, self.seed)

    # --- the backbone ---------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The image → embedding part (built on first use unless one was given)."""
        if self._embedder is None:
            self._embedder = Embedder(
                self.backbone,
                weights=self.weights,
                device=self.device,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                draft=self.draft,
                runtime=self.runtime,
                layers=self.layers,
            )
            self.runtime = self._embedder.runtime  # "auto" resolved: the runtime chosen on this machine
        return self._embedder

    def patch_scorer(self, scorers: Sequence[Scorer] | None = None) -> Scorer | None:
        """The scorer of spatial patch features, if any (at most one: each scorer name appears once)."""
        if scorers is None:
            scorers = self._fitted.scorers if self._fitted is not None else self.parts().scorers
        return next((s for s in scorers if s.input_kind == "patches"), None)

    @property
    def needs_patches(self) -> bool:
        """Whether a scorer works on spatial patch features (then fit and score run a patch pass too)."""
        return self.patch_scorer() is not None

    def patch_extractor(self) -> PatchExtractor:
        """What turns images into this detector's patch features (its patch scorer's layers, size and padding);
        :class:`~novelty.errors.InvalidInputError` for a detector without a patch scorer."""
        s = self.patch_scorer()
        if not isinstance(s, PatchKNNScorer):
            raise InvalidInputError("this detector has no patch scorer; add one, e.g. scorers=('patch-knn',)")
        spec = (s.layers, s.image_size, s.pad)
        ex = self._patch_extractor
        if ex is None or ex.embedder is not self.embedder or (ex.layers, ex.image_size, ex.pad) != spec:
            ex = self._patch_extractor = PatchExtractor(self.embedder, *spec)
        return ex

    def patch_features(self, images: Any) -> PatchResult:
        """Spatial patch features of ``images`` for this detector's patch scorer (``(n, h, w, c)``, NaN rows and
        an error where unreadable): the same backbone's intermediate stages (:mod:`novelty.patches`)."""
        return self.patch_extractor().extract_with_errors(as_source_list(images))

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
        calibrate on the held-out part. Any unreadable training image raises its specific error. A failed fit
        leaves the detector as it was."""
        self.parts()
        sources = as_source_list(images)
        if ids is None:
            ids = [
                describe_source(s) if isinstance(s, (str, os.PathLike)) else f"#{i}"
                for i, s in enumerate(sources)
            ]
        log.info(
            "embedding %d training images with %s (runtime %s)", len(sources), self.backbone, self.runtime
        )
        embedder = self.embedder
        before = embedder.runtime_state()
        try:
            embedder.calibrate_runtime(sources)  # int8: quantised on these very images; else nothing
            return self._fit_sources(sources, labels, groups, ids, progress)
        except BaseException:
            if embedder.runtime_state() is not before:  # a failed fit leaves the detector as it was
                embedder.set_runtime_state(before)
            raise

    def _fit_sources(
        self,
        sources: list[Any],
        labels: Sequence[Any] | None,
        groups: Sequence[Any] | None,
        ids: Sequence[str] | None,
        progress: bool | None,
    ) -> NoveltyDetector:
        emb = self.embedder.embed(sources, progress=progress)
        patches = None
        if self.needs_patches:
            log.info("extracting patch features of %d training images", len(sources))
            res = self.patch_features(sources)
            for i, err in enumerate(res.errors):
                if err is not None:
                    raise type(err)(err.source, f"{err.reason} (input #{i})")
            patches = res.features
        return self.fit_embeddings(
            emb, labels, groups=groups, ids=ids, patches=patches, sha256=source_sha256(sources)
        )

    def min_training_images(self, *, labelled: bool = False) -> int:
        """The fewest training images ``fit`` accepts with these parameters (random split): enough for
        ``MIN_CALIBRATION`` calibration images after the split and for every scorer (and the head) to fit."""
        need, _ = self.parts().min_fit(labelled)
        return min_training_images(need, self.calibration_fraction)

    def fit_embeddings(
        self,
        embeddings: np.ndarray,
        labels: Sequence[Any] | None = None,
        *,
        groups: Sequence[Any] | None = None,
        ids: Sequence[str] | None = None,
        patches: np.ndarray | None = None,
        sha256: Sequence[str] | None = None,
    ) -> NoveltyDetector:
        """Fit from embeddings already made by this detector's backbone (skips the image pass).

        ``sha256``: the sha256 of each image's bytes, kept in the artifact (:attr:`trained_sha256_`) so that a
        comparison can check that no test image was trained on.

        ``patches``: the images' spatial patch features ``(n, h, w, c)`` (:meth:`patch_features`), needed
        only by a patch scorer such as ``patch-knn``. Everything is built aside and takes effect at the end: a
        failed fit (or refit) leaves the previous fitted state, consistent, in place."""
        self._fitted = fit_state(
            self, embeddings, labels, groups=groups, ids=ids, patches=patches, sha256=sha256
        )
        self.calibrated_runtime_ = self.runtime
        return self

    def recalibrate(
        self, images: Any, *, groups: Sequence[Any] | None = None, progress: bool | None = None
    ) -> NoveltyDetector:
        """Redo the calibration with this detector's current runtime on ``images``: in-distribution images
        held out from fitting (never its training images). The index and scorers stay; the calibration scores
        are replaced, so p-values hold again for the embeddings this runtime makes (calibration and new
        images then come from the same runtime)."""
        self._fitted = recalibrated_state(self, images, groups=groups, progress=progress)
        self.calibrated_runtime_ = self.runtime
        return self

    # --- fitted state ---------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self._fitted is not None

    def _require_fitted(self) -> FittedState:
        if self._fitted is None:
            raise NotFittedError("NoveltyDetector is not fitted: call fit(images) or novelty.load(dir)")
        return self._fitted

    def _set_fitted(self, state: FittedState) -> None:
        self._fitted = state

    @property
    def state_(self) -> FittedState:
        """The fitted state — index, scorers, calibration, head, trust decision, ids — as one immutable value:
        what saving and incremental updates read (raises :class:`NotFittedError` before a fit)."""
        return self._require_fitted()

    def set_state(self, state: FittedState) -> None:
        """Install a fitted state built elsewhere (loading an artifact, an incremental update): every part at
        once, as :meth:`fit` swaps them in."""
        if not isinstance(state, FittedState):
            raise InvalidInputError(f"state must be a novelty.parts.FittedState, got {type(state).__name__}")
        self._set_fitted(state)

    @property
    def index_(self) -> EmbeddingIndex:
        return self._require_fitted().index

    @property
    def scorers_(self) -> list[Scorer]:
        return list(self._require_fitted().scorers)

    @property
    def calibrator_(self) -> MultiScorerCalibrator:
        return self._require_fitted().calibrator

    @property
    def head_(self) -> ConditionHead | None:
        return self._require_fitted().head

    @property
    def trust_(self) -> TrustCalibration | None:
        """The trust decision made at fit time (:mod:`novelty.trust`); ``None`` without a head, or for a detector
        of the legacy rule (trusted = not novel)."""
        return self._require_fitted().trust

    @property
    def train_ids_(self) -> list[str]:
        return self._require_fitted().train_ids

    @property
    def trained_sha256_(self) -> tuple[str, ...] | None:
        """The sha256 of every image this detector was fitted or calibrated on (sorted), or ``None`` where
        that is unknown: fitted from embeddings without ``sha256=``, from PIL images or arrays, or saved by an
        older release."""
        return self._require_fitted().trained_sha256

    @property
    def calibration_ids_(self) -> list[str]:
        return self._require_fitted().calibration_ids

    @property
    def dim_(self) -> int:
        return self._require_fitted().dim

    @property
    def split_(self) -> str:
        return self._require_fitted().split

    @property
    def artifact_id_(self) -> str | None:
        """sha256 of the artifact's ``manifest.json`` this detector was loaded from or last saved to;
        ``None`` after a fit that was not saved."""
        return self._require_fitted().artifact_id

    # --- scoring --------------------------------------------------------------------------------------
    def score(self, image: ImageSource, *, anomaly_map: bool = False) -> Verdict:
        """Score one image; an unreadable one raises its specific :class:`~novelty.errors.ImageError`.

        ``anomaly_map=True`` (with a patch scorer): ``Verdict.anomaly_map`` holds where the image is novel."""
        self._require_fitted()
        emb = self.embedder.embed_one(image)
        patches = None
        if self.needs_patches:
            patches = self.patch_features([image])
            if patches.errors[0] is not None:
                raise patches.errors[0]
        return self.score_embeddings(
            emb[None, :],
            sources=[describe_source(image)],
            patches=None if patches is None else patches.features,
            anomaly_maps=anomaly_map,
        )[0]

    def score_batch(
        self, images: Any, *, progress: bool | None = None, anomaly_maps: bool = False
    ) -> BatchVerdicts:
        """Score many images; unreadable ones get a record with ``error`` set, the rest go on.

        ``anomaly_maps=True`` (with a patch scorer) fills ``BatchVerdicts.anomaly_maps``: large, on request."""
        self._require_fitted()
        parts = [
            b.verdicts
            for b in self.iter_score(as_source_list(images), progress=progress, anomaly_maps=anomaly_maps)
        ]
        if not parts:  # no images: the empty result, with this detector's columns
            return self.score_embeddings(
                np.empty((0, self.dim_), np.float32), sources=[], anomaly_maps=anomaly_maps
            )
        return BatchVerdicts.concat(parts)

    def iter_score(
        self,
        sources: Sequence[Any],
        *,
        names: Sequence[str] | None = None,
        progress: bool | None = None,
        anomaly_maps: bool = False,
    ) -> Iterator[ScoredBatch]:
        """The one scoring loop, batch by batch in input order: embed (unreadable images get an error row), run
        the patch scorer's own pass when there is one, score. :meth:`score_batch`, the batch engine (local and
        Ray) and so every results file go through here; the service batches requests that are decoded already
        and scores them with the same :meth:`score_embeddings`. ``names``: what each row's ``source`` says
        (default: :func:`~novelty.images.describe_source`)."""
        self._require_fitted()
        for b in self.embedder.iter_batches(sources, progress=progress):
            batch = [sources[i] for i in b.indices]
            errs = list(b.errors)
            patches = None
            if self.needs_patches:
                pres = self.patch_features(batch)
                errs = [e if e is not None else pe for e, pe in zip(errs, pres.errors, strict=True)]
                patches = pres.features
            v = self.score_embeddings(
                b.embeddings,
                sources=[describe_source(s) for s in batch]
                if names is None
                else [names[i] for i in b.indices],
                errors=[None if e is None else f"{e.reason_code}: {e.reason}" for e in errs],
                patches=patches,
                anomaly_maps=anomaly_maps,
            )
            yield ScoredBatch(b.indices, v, b.sizes, b.embeddings)

    def score_embeddings(
        self,
        embeddings: np.ndarray,
        *,
        sources: Sequence[str] | None = None,
        errors: Sequence[str | None] | None = None,
        patches: np.ndarray | None = None,
        anomaly_maps: bool = False,
    ) -> BatchVerdicts:
        """Score embeddings from this detector's backbone; rows listed in ``errors`` are reported, not scored.

        ``patches``: the images' patch features (:meth:`patch_features`), needed by a patch scorer;
        ``anomaly_maps``: also return its anomaly maps (``BatchVerdicts.anomaly_maps``)."""
        st = self._require_fitted()  # one snapshot: a concurrent refit cannot mix into this call
        return score_state(
            st,
            embeddings,
            alpha=self.alpha,
            n_neighbors=self.n_neighbors,
            sources=sources,
            errors=errors,
            patches=patches,
            anomaly_maps=anomaly_maps,
        )

    # --- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the detector as a verified, pickle-free artifact directory (atomically) and return its path.

        An existing ``path`` is replaced only when it is a detector artifact (or an empty folder); anything
        else raises :class:`~novelty.errors.ArtifactError` and is left untouched. ``artifact_id_`` becomes
        the id of what was written."""
        st = self._require_fitted()
        art = save_detector(self, path)
        if self._fitted is st:
            self._fitted = replace(st, artifact_id=art.artifact_id)
        return art.root

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | None = "auto",
        weights: str | os.PathLike[str] | None = None,
        num_workers: int | None = None,
        embedder: Embedder | None = None,
        runtime: str | None = None,
        recalibrate: Any = None,
    ) -> NoveltyDetector:
        """Load a saved detector, verifying every file's sha256 and the backbone's weights fingerprint.

        ``runtime``: score with another runtime than the recorded one (``None``: the recorded one). That
        warns, and is refused where the embeddings differ beyond the tolerance unless ``recalibrate`` gives
        held-out in-distribution images to redo the calibration with (see :meth:`recalibrate`).
        ``"auto"``: the fastest on this machine among the runtimes whose embeddings stand in for the recorded
        one (any registered runtime when ``recalibrate`` is given).

        ``weights`` overrides the recorded weights location (e.g. a local file on another machine);
        ``embedder`` uses an existing :class:`~novelty.embedder.Embedder` (checked to be the backbone the
        detector was fitted with) instead of loading the backbone again. A detector saved while being read
        raises :class:`~novelty.errors.ArtifactChangedError`: read it again.
        """
        if runtime is not None:
            check_runtime(runtime, auto=True)
        return load_detector(
            cls,
            path,
            device=device,
            weights=weights,
            num_workers=num_workers,
            embedder=embedder,
            runtime=runtime,
            recalibrate=recalibrate,
        )

    def __repr__(self) -> str:
        st = self._fitted
        if st is None:
            state = "not fitted"
            names: Any = self.scorers
        else:
            state = f"fitted on {st.index.ntotal}, calibrated on {st.calibrator.n}"
            names = [s.name for s in st.scorers]
            if st.head is not None:
                state += f", head over {st.head.classes_}"
        return f"NoveltyDetector(backbone={self.backbone!r}, scorers={names}, alpha={self.alpha}; {state})"


def load(path: str | os.PathLike[str], **kwargs: Any) -> NoveltyDetector:
    """Load a detector saved with :meth:`NoveltyDetector.save` (see there for keyword arguments)."""
    return NoveltyDetector.load(path, **kwargs)
