"""What a detector answers: :class:`Verdict` for one image, :class:`BatchVerdicts` for many, and
:func:`score_state`, which computes them from a detector's fitted parts.

Scores: **higher = more novel**. ``p_value`` is the conformal p-value against held-out in-distribution
calibration scores; ``novelty = 1 − p_value``; ``is_novel = p_value < alpha``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.errors import InvalidInputError
from novelty.index import as_embeddings
from novelty.trust import LEGACY_RULE

if TYPE_CHECKING:
    from novelty.parts import FittedState

__all__ = ["BatchVerdicts", "Neighbor", "Verdict", "score_state"]


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
    With a condition head: ``prediction``, its calibrated ``probability``, and ``trusted``: the prediction may be
    acted on — the image is not novel **and** the head is competent there (``competence`` ≥ the threshold chosen
    so that at most ``risk`` of trusted predictions are wrong, :mod:`novelty.trust`). ``trust_rule`` names the
    rule; detectors saved before the trust decision existed use ``"not-novel"`` (trusted = not novel).
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
    trusted: bool | None = None  # readable, not novel, and competence ≥ the trust threshold
    competence: float | None = (
        None  # the head's competence here (higher = more likely right), the rule's score
    )
    trust_rule: str | None = (
        None  # how trust was decided (novelty.trust.RULES, or "not-novel" for old artifacts)
    )
    # where the image is novel (patch scorer, on request): (S, S) float32 over the whole image resized to S × S,
    # higher = more novel; resize it to the image's own size to overlay (novelty.batch.maps)
    anomaly_map: np.ndarray | None = field(default=None, repr=False, compare=False)


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
    anomaly_maps: np.ndarray | None = field(
        default=None, repr=False
    )  # (n, S, S) on request; NaN where unreadable
    competence: np.ndarray | None = None  # (n,) the trust rule's score; NaN where unreadable or no rule
    trust_threshold: float | None = None  # trusted = not novel and competence ≥ this (None: the legacy rule)
    trust_rule: str | None = None  # None without a head

    @property
    def probability(self) -> np.ndarray | None:
        """Calibrated probability of each predicted class (NaN where unreadable)."""
        return None if self.probabilities is None else self.probabilities.max(axis=1)

    @property
    def trusted(self) -> np.ndarray:
        """Predictions to act on: readable, not novel, and (with a trust decision) competent; never without a
        head."""
        if self.predictions is None:
            return np.zeros(len(self), dtype=bool)
        out = self.ok & ~self.is_novel
        if self.trust_threshold is not None and self.competence is not None:
            out &= np.nan_to_num(self.competence, nan=-np.inf) >= self.trust_threshold
        return out

    @classmethod
    def concat(cls, parts: Sequence[BatchVerdicts]) -> BatchVerdicts:
        """One result of consecutive ``parts`` scored by the same detector (the batches of
        :meth:`~novelty.detector.NoveltyDetector.iter_score`), rows in the parts' order."""
        if not parts:
            raise InvalidInputError("no verdicts to join")
        first = parts[0]
        if len(parts) == 1:
            return first
        joined: dict[str, Any] = {}
        for name in _ROW_ARRAYS:
            values = [getattr(p, name) for p in parts]
            joined[name] = None if values[0] is None else np.concatenate(values)
        for name in _ROW_LISTS:
            values = [getattr(p, name) for p in parts]
            joined[name] = None if values[0] is None else [x for value in values for x in value]
        for name in _ROW_DICTS:
            joined[name] = {
                k: np.concatenate([getattr(p, name)[k] for p in parts]) for k in getattr(first, name)
            }
        joined.update({name: getattr(first, name) for name in _SHARED})
        return cls(**joined)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Verdict:
        ok = self.errors[i] is None
        comp = None if self.competence is None or not ok else float(self.competence[i])
        trusted = (
            None
            if self.predictions is None
            else bool(
                ok
                and not self.is_novel[i]
                and (self.trust_threshold is None or (comp is not None and comp >= self.trust_threshold))
            )
        )
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
            trusted=trusted,
            competence=comp,
            trust_rule=self.trust_rule,
            anomaly_map=None if self.anomaly_maps is None or not ok else self.anomaly_maps[i],
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
                rec["competence"] = v.competence
            rec["error"] = v.error or ""
            out.append(rec)
        return out


def score_state(
    st: FittedState,
    embeddings: np.ndarray,
    *,
    alpha: float,
    n_neighbors: int,
    sources: Sequence[str] | None = None,
    errors: Sequence[str | None] | None = None,
    patches: np.ndarray | None = None,
    anomaly_maps: bool = False,
) -> BatchVerdicts:
    """Score embeddings with one fitted state; rows listed in ``errors`` are reported, not scored.

    ``patches`` ``(n, h, w, c)``: patch features for a patch scorer (``input_kind == "patches"``);
    ``anomaly_maps``: also compute that scorer's anomaly maps."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise InvalidInputError(f"embeddings must be (n, d), got shape {emb.shape}")
    n = emb.shape[0]
    errs: list[str | None] = list(errors) if errors is not None else [None] * n
    if len(errs) != n:
        raise InvalidInputError(f"errors has {len(errs)} entries for {n} embeddings")
    ok = np.array([e is None for e in errs], dtype=bool)
    k = min(n_neighbors, st.index.ntotal)
    # one search serves the neighbours reported and the trust rule's local evidence
    k_search = min(
        max(k, st.trust.neighbors_needed if st.trust is not None and st.head is not None else 0),
        st.index.ntotal,
    )
    found: tuple[np.ndarray, np.ndarray] | None = None
    nov, pv, comb = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    raw = {s.name: np.full(n, np.nan) for s in st.scorers}
    pvs = {s.name: np.full(n, np.nan) for s in st.scorers}
    nb_ids = np.full((n, k), -1, dtype=np.int64)
    nb_d = np.full((n, k), np.nan, dtype=np.float32)
    patch_scorer = next((s for s in st.scorers if s.input_kind == "patches"), None)
    if patch_scorer is None and anomaly_maps:
        raise InvalidInputError(
            "anomaly maps come from a patch scorer; this detector has none (e.g. 'patch-knn')"
        )
    if patch_scorer is not None and ok.any() and (patches is None or np.shape(patches)[0] != n):
        raise InvalidInputError(
            f"scorer {patch_scorer.name!r} needs patch features, one row per embedding ({n}); "
            "score images with score/score_batch, or pass patches=detector.patch_features(images).features"
        )
    maps: np.ndarray | None = None
    if ok.any():
        x = as_embeddings(emb[ok], st.dim)
        s_ok = {}
        for s in st.scorers:
            if s is patch_scorer and anomaly_maps:
                s_ok[s.name], m_ok = s.score_maps(np.asarray(patches)[ok])  # type: ignore[attr-defined]
                maps = np.full((n, *m_ok.shape[1:]), np.nan, dtype=np.float32)
                maps[ok] = m_ok
            elif s is patch_scorer:
                s_ok[s.name] = s.score(np.asarray(patches)[ok])
            else:
                s_ok[s.name] = s.score(x)
        p_ok, per_ok = st.calibrator.p_values(s_ok)
        for name in raw:
            raw[name][ok] = s_ok[name]
            pvs[name][ok] = per_ok[name]
        pv[ok] = p_ok
        comb[ok] = st.calibrator.combined_scores(s_ok)
        nov[ok] = 1.0 - p_ok
        if k_search:
            found = st.index.search(x, k_search)
            nb_ids[ok], nb_d[ok] = found[1][:, :k], found[0][:, :k]
    predictions: list[Any] | None = None
    proba: np.ndarray | None = None
    classes: list[Any] | None = None
    comp: np.ndarray | None = None
    rule: str | None = None
    if st.head is not None:
        classes = list(st.head.classes_)
        proba = np.full((n, len(classes)), np.nan)
        predictions = [None] * n
        rule = st.trust.rule if st.trust is not None else LEGACY_RULE
        comp = None if st.trust is None else np.full(n, np.nan)
        if ok.any():
            x_ok = as_embeddings(emb[ok], st.dim)
            p_head = st.head.predict_proba(x_ok)
            proba[ok] = p_head
            for j, c in zip(np.flatnonzero(ok), p_head.argmax(axis=1), strict=True):
                predictions[j] = classes[c]
            if st.trust is not None and comp is not None:
                comp[ok] = st.trust.competence_for(p_head, found, st.train_correct)
    return BatchVerdicts(
        predictions=predictions,
        probabilities=proba,
        classes=classes,
        sources=list(sources) if sources is not None else [f"#{i}" for i in range(n)],
        novelty=nov,
        p_value=pv,
        is_novel=ok & (np.nan_to_num(pv, nan=1.0) < alpha),
        score=comb,
        scores=raw,
        p_values=pvs,
        neighbor_ids=nb_ids,
        neighbor_distances=nb_d,
        errors=errs,
        train_ids=st.train_ids,
        anomaly_maps=maps,
        competence=comp,
        trust_threshold=None if st.trust is None else st.trust.threshold,
        trust_rule=rule,
    )


#: how :meth:`BatchVerdicts.concat` joins each field: one row per input (arrays, lists, dicts of arrays), or
#: the same for every part (tests/core/test_detector.py checks that every field is named here)
_ROW_ARRAYS = (
    "novelty",
    "p_value",
    "is_novel",
    "score",
    "neighbor_ids",
    "neighbor_distances",
    "probabilities",
    "anomaly_maps",
    "competence",
)
_ROW_LISTS = ("sources", "errors", "predictions")
_ROW_DICTS = ("scores", "p_values")
_SHARED = ("train_ids", "classes", "trust_threshold", "trust_rule")


@dataclass
class ScoredBatch:
    """One batch of :meth:`~novelty.detector.NoveltyDetector.iter_score`: the positions of its images in the
    input, their verdicts, full-size ``(width, height)`` (``-1`` where unreadable) and embeddings (NaN rows)."""

    indices: np.ndarray
    verdicts: BatchVerdicts
    sizes: np.ndarray
    embeddings: np.ndarray
