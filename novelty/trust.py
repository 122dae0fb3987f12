"""When a condition head's prediction may be acted on: *trusted* means "not novel **and** the head is competent
here", with a stated error rate among trusted predictions.

    det = NoveltyDetector(risk=0.05)            # at most 5 % wrong among trusted predictions (see below)
    v = det.score(image)
    v.trusted, v.competence                     # the decision and the score it thresholds

**The guarantee.** A detector fitted with labels holds out its calibration split from the head as well as from
the scorers. On that split every image gets a *competence* score ``c`` (higher = the head is more likely right,
see :data:`RULES`) and a leave-one-out conformal p-value. A prediction is trusted when ``p ≥ alpha`` (not novel)
and ``c ≥ λ``. The threshold ``λ`` is the smallest value of a fixed grid (:func:`grid`, fixed before any data is
seen) for which the exact binomial test rejects "the error rate among trusted predictions exceeds ε" at level
``δ / len(grid)`` (Bonferroni over the grid; Geifman & El-Yaniv 2017, *Selective classification with guaranteed
risk*; the multiple-testing view of Angelopoulos et al., *Learn then Test*). Hence:

    with probability ≥ 1 − δ over the draw of the calibration split, the head's error rate among the predictions
    marked trusted, on new images exchangeable with the calibration images, is at most ε.

``risk`` is ε (default 0.05) and ``delta`` is δ (default 0.1). When no grid value passes (too few labelled
calibration images for the ε asked: with no error at all a level needs ``n ≥ log(δ/G) / log(1 − ε)`` of them),
nothing is trusted: the detector says so rather than promise what it cannot hold.

**Beyond exchangeable data.** After a flywheel turn the calibration split is still mostly the conditions known
before; a condition with a handful of labels (five snow frames) no longer looks novel long before the head learns
it, and an error rate averaged over a clean-dominated split cannot vouch for it. The rule
``"local-accuracy"`` therefore asks the labelled neighbourhood of each image: the share of its
:data:`LOCAL_K` nearest labelled training images that a head which never saw them (a cross-fitted fold head)
got right. Its grid starts at ``1 − ε``: locally, too, the head must have been right at least ``1 − ε`` of the
time. A neighbour vouches only for images that lie as close to it as the training images of *other* groups
usually do: within :data:`SUPPORT_FACTOR` times its own *scale*, the distance from it to its :data:`LOCAL_K`-th
nearest training image of another group (:func:`neighbour_scales`). A faintly frosted frame sits 1.3–1.5 times
farther from its clean neighbours than a clean frame from another part of the video does; measured by one
global radius it was "near" them and inherited their perfect record, while the head was at chance on it. How
each rule fares per condition over five turns is measured in ``benchmarks/RESULTS.md`` ("Trust").

The factor is the detector's ``trust_support`` (default :data:`SUPPORT_FACTOR`), recorded with its trust
decision: it moves only how far the labelled neighbourhood vouches, never the guarantee above, which holds for
any factor because the threshold is chosen on competence measured with it. What suits a factor depends on the
embedding: with ``layers="final+s16"`` (:mod:`novelty.embedding_layers`) the inner stage separates faint
conditions from clean frames, and a wider factor keeps more clean frames trusted without trusting faint snow
(``benchmarks/RESULTS.md``, "Trust").

**Near-duplicates of classes nobody labelled.** A shirt among T-shirts, an ankle boot among sneakers: close to
one labelled class, with neighbours the heads got right, and the head confident. A trusted prediction therefore
also needs a *class margin* (:func:`class_margin`, the trust score of Jiang et al. 2018) of at least the
detector's ``trust_margin`` (default :data:`MARGIN`): its nearest training image of another class lies that many
times farther than its nearest one of the predicted class. The margin gates competence (below it, competence is
0) before the threshold is chosen, so the guarantee above holds with it; artifacts saved before it keep none.

Artifacts saved before the trust decision existed keep their old rule, :data:`LEGACY_RULE` (trusted = not
novel), named in every verdict (``trust_rule``) and in the manifest; nothing is silently reinterpreted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.errors import InvalidInputError
from novelty.params import check_choice, check_real, clone
from novelty.trust_margin import class_margin

if TYPE_CHECKING:
    from novelty.calibration import MultiScorerCalibrator
    from novelty.head import ConditionHead
    from novelty.index import EmbeddingIndex

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_RISK",
    "DEFAULT_RULE",
    "FOLDS",
    "LEGACY_RULE",
    "LOCAL_K",
    "LOCAL_RULES",
    "MARGIN",
    "MARGIN_K",
    "MARGIN_RANGE",
    "RULES",
    "SUPPORT_FACTOR",
    "SUPPORT_FACTOR_RANGE",
    "TrustCalibration",
    "apply_margin",
    "binomial_cdf",
    "calibrate_trust",
    "check_margin",
    "check_support_factor",
    "choose_threshold",
    "class_indices",
    "class_margin",
    "competence",
    "grid",
    "local_accuracy",
    "loo_p_values",
    "neighbour_scales",
    "neighbours_needed",
    "out_of_fold_correct",
    "search",
]

#: how competence is measured: the head's calibrated top probability; the share of the nearest labelled training
#: images that a head which never saw them got right; the smaller of the two
RULES = ("confidence", "local-accuracy", "confidence+local-accuracy")
DEFAULT_RULE = "confidence+local-accuracy"
#: the rules that need the cross-fitted correctness of the training images
LOCAL_RULES = ("local-accuracy", "confidence+local-accuracy")
#: the rule of artifacts saved before the trust decision: trusted = readable and not novel
LEGACY_RULE = "not-novel"
DEFAULT_RISK = 0.05
DEFAULT_DELTA = 0.1
#: labelled training neighbours asked by the local rules, and the folds of the cross-fitted heads
LOCAL_K = 10
FOLDS = 5
#: a training image vouches for an image at most this many times its own scale away (:func:`neighbour_scales`):
#: chosen on seed 0 of the five-turn windshield benchmark (1.2: 0.92 of clean frames trusted, no faint-condition
#: frame; 1.25: 0.95 and faint snow trusted at 70 % wrong) and fixed before the other seeds were run
SUPPORT_FACTOR = 1.2
#: the factors a detector accepts (``trust_support``): a neighbour never vouches nearer than its own scale
SUPPORT_FACTOR_RANGE = (1.0, 10.0)
#: a trusted prediction's *class margin* (:func:`class_margin`) is at least this by default (``trust_margin``):
#: tried at 1.1 and 1.2 on near-OOD Fashion-MNIST (benchmarks/trust_near.py) and fixed before the five-turn
#: windshield runs (benchmarks/RESULTS.md, "Trust")
MARGIN = 1.2
#: the margins a detector accepts: below 1 the predicted class would not even be the nearer one
MARGIN_RANGE = (1.0, 10.0)
#: the nearest training images the class margin reads
MARGIN_K = 100
#: the most neighbours searched to find ``LOCAL_K`` of another group; a scale not found among them is the
#: distance of the farthest one searched (smaller than the true one: fewer images vouched for, never more)
SCALE_SEARCH_MAX = 1024
_STEPS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0)


def check_support_factor(value: object, name: str = "trust_support") -> float:
    """``value`` when it is a support factor in :data:`SUPPORT_FACTOR_RANGE`; else InvalidInputError."""
    low, high = SUPPORT_FACTOR_RANGE
    return check_real(value, name, low=low, high=high)


def check_margin(value: object, name: str = "trust_margin") -> float | None:
    """``value`` when it is ``None`` (no margin asked) or a margin in :data:`MARGIN_RANGE`; else
    InvalidInputError."""
    if value is None:
        return None
    low, high = MARGIN_RANGE
    return check_real(value, name, low=low, high=high)


def neighbours_needed(rule: str, margin: float | None) -> int:
    """How many nearest training images the competence of ``rule`` (with a class ``margin``, or none) reads."""
    return max(LOCAL_K if rule in LOCAL_RULES else 0, MARGIN_K if margin is not None else 0)


def apply_margin(
    competence_scores: np.ndarray,
    probabilities: np.ndarray,
    neighbors: tuple[np.ndarray, np.ndarray],
    train_labels: np.ndarray,
    margin: float,
) -> np.ndarray:
    """``competence_scores`` where the class margin of the head's prediction is at least ``margin``, else 0."""
    pred = np.asarray(probabilities).argmax(axis=1)
    return np.where(class_margin(*neighbors, train_labels, pred) >= margin, competence_scores, 0.0)


def grid(rule: str, risk: float) -> np.ndarray:
    """The thresholds tested for ``rule`` at ε = ``risk``, fixed before any data is seen. None lies below 0.5 (a
    prediction is never trusted on less than half the evidence); for the local rules none lies below ``1 − ε``."""
    floor = 1.0 - risk if rule in LOCAL_RULES else 0.5
    return np.array([floor, *[s for s in _STEPS if s > floor]])


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(Binomial(n, p) ≤ k)``, exactly (a log-space sum)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1, dtype=np.float64)
    log_terms = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in range(k + 1)])
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
    )
    top = float(log_terms.max())
    return float(min(1.0, math.exp(top) * np.exp(log_terms - top).sum()))


def loo_p_values(calibration_scores: np.ndarray) -> np.ndarray:
    """The conformal p-value of each calibration score against the others (higher score = more novel):
    ``(1 + #{j ≠ i: s_j ≥ s_i}) / n`` — what a new exchangeable image would get, without self-match."""
    s = np.asarray(calibration_scores, dtype=np.float64)
    at_least = s.shape[0] - np.searchsorted(np.sort(s), s, side="left")  # counts i itself
    return at_least / float(s.shape[0])


def class_indices(labels: Sequence[Any] | np.ndarray, classes: list[Any]) -> np.ndarray:
    """Each label's position in the head's ``classes`` (``-1`` for a label the head does not know)."""
    where = {c: i for i, c in enumerate(classes)}
    return np.array([where.get(v, -1) for v in np.asarray(labels, dtype=object).tolist()], dtype=np.int64)


def out_of_fold_correct(
    head: ConditionHead,
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[Any] | np.ndarray | None,
    *,
    folds: int = FOLDS,
    seed: int = 0,
) -> np.ndarray:
    """Whether a head with ``head``'s parameters, fitted without each training image (``folds`` folds, whole
    groups together: near-duplicates never vouch for each other), predicts that image's label."""
    n = x.shape[0]
    g = np.arange(n) if groups is None else np.asarray(groups, dtype=object)
    uniq = list(dict.fromkeys(g.tolist()))
    rng = np.random.default_rng([seed, 17])
    fold_of = {u: i % folds for i, u in enumerate(rng.permutation(len(uniq)))}
    position = {u: i for i, u in enumerate(uniq)}
    fold = np.array([fold_of[position[v]] for v in g.tolist()], dtype=np.int64)
    y = np.asarray(y, dtype=object)
    correct = np.zeros(n, dtype=bool)
    for f in range(folds):
        test = fold == f
        train = ~test
        if not test.any():
            continue
        if np.unique(y[train]).shape[0] < 2 or train.sum() < head.min_fit_samples():
            continue  # a fold head cannot be fitted: its images count as not shown right
        h = clone(head).fit(x[train], y[train].tolist(), groups=None if groups is None else g[train].tolist())
        classes = list(h.classes_)
        pred = np.asarray([classes[j] for j in h.predict_proba(x[test]).argmax(axis=1)], dtype=object)
        correct[test] = pred == y[test]
    return correct


def neighbour_scales(
    index: EmbeddingIndex, x: np.ndarray, groups: Sequence[Any] | np.ndarray | None, k: int = LOCAL_K
) -> np.ndarray:
    """Each indexed training image's *scale*: the distance from it (row ``i`` of ``x``, the indexed vectors in
    order) to its ``k``-th nearest indexed image of another group (``groups`` ``None``: every image its own).
    Near-duplicates of one group never set each other's scale, as they never vouch for each other in
    :func:`out_of_fold_correct`: the scale is how far the nearest *independent* images lie."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    if n != index.ntotal:
        raise InvalidInputError(f"neighbour scales need the {index.ntotal} indexed vectors, got {n}")
    scales = np.full(n, np.inf)
    if n <= 1:
        return scales
    g = np.arange(n) if groups is None else np.asarray(groups, dtype=object)
    codes = np.unique(g.astype(str), return_inverse=True)[1] if groups is not None else g
    largest = int(np.bincount(codes).max())
    kk = min(n - 1, k + largest - 1, SCALE_SEARCH_MAX)
    d, pos = index.search(x, kk, exclude_self=True)
    other = (pos >= 0) & (codes[np.clip(pos, 0, None)] != codes[:, None])
    rank = np.cumsum(other, axis=1)
    found = rank[:, -1] >= k
    at = np.argmax(rank >= k, axis=1)
    scales[found] = d[found, at[found]]
    scales[~found] = d[~found, -1]  # fewer than k independent images within reach: the farthest searched
    return scales


def local_accuracy(
    distances: np.ndarray,
    positions: np.ndarray,
    train_correct: np.ndarray,
    radius: float = math.inf,
    k: int = LOCAL_K,
    scales: np.ndarray | None = None,
    factor: float = SUPPORT_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """``(accuracy, kth)`` from a search of the training index (``(n, ≥ k)`` distances and positions, ``-1``
    where missing): the share of each row's ``k`` nearest training images that lie within ``radius`` — and,
    with ``scales`` (:func:`neighbour_scales`), within ``factor`` times their own scale — and that the
    cross-fitted heads got right (a neighbour farther away, missing or got wrong counts against the head), and
    the distance to the ``k``-th of them (``inf`` when there is none)."""
    d, pos = np.asarray(distances)[:, :k], np.asarray(positions)[:, :k]
    n = pos.shape[0]
    if pos.shape[1] == 0:
        return np.zeros(n), np.full(n, np.inf)
    ok = np.asarray(train_correct, dtype=bool)
    at = np.clip(pos, 0, None)
    good = (pos >= 0) & ok[at] & (d <= radius)
    if scales is not None:
        good &= d <= factor * np.asarray(scales, dtype=np.float64)[at]
    kth = np.where(pos[:, -1] >= 0, d[:, -1], np.inf) if pos.shape[1] == k else np.full(n, np.inf)
    return good.sum(axis=1) / float(k), kth


def search(index: EmbeddingIndex, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, positions)`` of the ``k`` nearest indexed images (fewer columns when the index is smaller)."""
    kk = min(k, index.ntotal)
    if kk == 0 or x.shape[0] == 0:
        return np.zeros((x.shape[0], 0)), np.zeros((x.shape[0], 0), dtype=np.int64)
    return index.search(np.ascontiguousarray(x, dtype=np.float32), kk)


def competence(rule: str, probabilities: np.ndarray, local: np.ndarray | None = None) -> np.ndarray:
    """The competence score of each row (higher = the head more likely right) under ``rule``, from the head's
    probabilities and, for the local rules, :func:`local_accuracy`."""
    conf = np.asarray(probabilities, dtype=np.float64).max(axis=1)
    if rule == "confidence":
        return conf
    if rule not in LOCAL_RULES:
        raise InvalidInputError(f"unknown trust rule {rule!r}; rules: {', '.join(RULES)}")
    if local is None:
        raise InvalidInputError(f"trust rule {rule!r} needs the local accuracy of the head")
    loc = np.asarray(local, dtype=np.float64)
    return loc if rule == "local-accuracy" else np.minimum(conf, loc)


def choose_threshold(
    competence_scores: np.ndarray,
    correct: np.ndarray,
    novel: np.ndarray,
    risk: float,
    delta: float,
    thresholds: np.ndarray,
) -> float:
    """The smallest of ``thresholds`` whose trusted calibration images (not novel, competence ≥ it) reject
    "error rate > risk" by the exact binomial test at level ``delta / len(thresholds)``; ``inf`` when none does."""
    c = np.asarray(competence_scores, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    keep = ~np.asarray(novel, dtype=bool)
    level = delta / len(thresholds)
    for lam in np.sort(np.asarray(thresholds, dtype=np.float64)):
        sel = keep & (c >= lam)
        n = int(sel.sum())
        if n and binomial_cdf(int((~ok[sel]).sum()), n, risk) <= level:
            return float(lam)
    return math.inf


@dataclass(frozen=True)
class TrustCalibration:
    """The trust decision of a fitted detector: its rule, ε (``risk``), δ, the calibration split's competence,
    correctness and novelty, and the threshold chosen at ε (see the module docstring)."""

    rule: str
    risk: float
    delta: float
    competence: np.ndarray  # (n_cal,) float64
    correct: np.ndarray  # (n_cal,) bool
    novel: np.ndarray  # (n_cal,) bool, leave-one-out p < alpha
    threshold: float
    radius: float = (
        math.inf
    )  # artifacts before neighbour scales: training images farther are no local evidence
    scales: np.ndarray | None = None  # (n_index,) each training image's scale (:func:`neighbour_scales`)
    factor: float = SUPPORT_FACTOR  # a neighbour vouches within this many times its own scale
    # the class margin a trusted prediction needs (None: none, as in artifacts saved before it), and the class
    # (position in the head's classes) of every indexed training image it is read from
    margin: float | None = None
    labels: np.ndarray | None = None

    @classmethod
    def fit(
        cls,
        rule: str,
        risk: float,
        delta: float,
        competence_scores: np.ndarray,
        correct: np.ndarray,
        novel: np.ndarray,
        *,
        radius: float = math.inf,
        scales: np.ndarray | None = None,
        factor: float = SUPPORT_FACTOR,
        margin: float | None = None,
        labels: np.ndarray | None = None,
    ) -> TrustCalibration:
        """The threshold chosen on the calibration split's competence (already zero where a row's class margin
        falls below ``margin``)."""
        check_choice(rule, "trust rule", RULES)
        factor = check_support_factor(factor, "support factor")
        margin = check_margin(margin, "class margin")
        if (margin is None) != (labels is None):
            raise InvalidInputError("a class margin needs the classes of the indexed images, and only it")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.ndim != 1:
                raise InvalidInputError("the classes of the indexed images must be a 1-D array")
        risk = check_real(risk, "risk", low=0.0, high=1.0, low_open=True, high_open=True)
        delta = check_real(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
        c = np.asarray(competence_scores, dtype=np.float64)
        ok, nov = np.asarray(correct, dtype=bool), np.asarray(novel, dtype=bool)
        if not (c.shape == ok.shape == nov.shape) or c.ndim != 1:
            raise InvalidInputError("competence, correct and novel must be 1-D arrays of one length")
        radius = float(radius)
        if math.isnan(radius) or radius < 0:
            raise InvalidInputError(f"the support radius must be ≥ 0, got {radius}")
        if scales is not None:
            scales = np.asarray(scales, dtype=np.float64)
            if scales.ndim != 1 or np.isnan(scales).any() or (scales < 0).any():
                raise InvalidInputError("neighbour scales must be a 1-D array of distances ≥ 0")
        lam = choose_threshold(c, ok, nov, risk, delta, grid(rule, risk))
        return cls(rule, risk, delta, c, ok, nov, lam, radius, scales, factor, margin, labels)

    @property
    def n(self) -> int:
        return int(self.competence.shape[0])

    @property
    def neighbors_needed(self) -> int:
        """How many nearest training images :meth:`competence_for` reads (0: none)."""
        return neighbours_needed(self.rule, self.margin)

    def competence_for(
        self,
        probabilities: np.ndarray,
        neighbors: tuple[np.ndarray, np.ndarray] | None = None,
        train_correct: np.ndarray | None = None,
    ) -> np.ndarray:
        """The competence of new images under this rule, from their head probabilities and (local rules) a
        search of the training index for at least :attr:`neighbors_needed` neighbours, ``(distances,
        positions)``."""
        local = None
        if self.rule in LOCAL_RULES:
            if neighbors is None or train_correct is None:
                raise InvalidInputError(
                    f"trust rule {self.rule!r} needs the training neighbours and their correctness"
                )
            if self.scales is not None and self.scales.shape != np.shape(train_correct):
                raise InvalidInputError(
                    f"the trust decision holds {self.scales.shape[0]} neighbour scales for "
                    f"{np.shape(train_correct)[0]} training images"
                )
            local, _ = local_accuracy(
                *neighbors, train_correct, self.radius, scales=self.scales, factor=self.factor
            )
        c = competence(self.rule, probabilities, local)
        if self.margin is not None and self.labels is not None:
            if neighbors is None:
                raise InvalidInputError("a class margin needs the training neighbours")
            if train_correct is not None and self.labels.shape != np.shape(train_correct):
                raise InvalidInputError(
                    f"the trust decision holds {self.labels.shape[0]} classes of indexed images for "
                    f"{np.shape(train_correct)[0]} training images"
                )
            c = apply_margin(c, probabilities, neighbors, self.labels, self.margin)
        return c

    def threshold_for(self, risk: float) -> float:
        """The threshold at another ε (auto-accept uses its own), from the same calibration split."""
        risk = check_real(risk, "risk", low=0.0, high=1.0, low_open=True, high_open=True)
        if risk == self.risk:
            return self.threshold
        return choose_threshold(
            self.competence, self.correct, self.novel, risk, self.delta, grid(self.rule, risk)
        )

    def coverage(self) -> float:
        """The share of the calibration split trusted at ε."""
        return float((~self.novel & (self.competence >= self.threshold)).mean()) if self.n else 0.0

    def to_meta(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "risk": self.risk,
            "delta": self.delta,
            "threshold": None if math.isinf(self.threshold) else self.threshold,
            "grid": [float(g) for g in grid(self.rule, self.risk)],
            "local_k": LOCAL_K if self.rule in LOCAL_RULES else None,
            "radius": None if math.isinf(self.radius) else self.radius,
            # how a neighbour's support is bounded: its own scale (this release) or one radius (older artifacts)
            "support": "radius" if self.scales is None else "neighbour-scale",
            "support_factor": None if self.scales is None else self.factor,
            # absent or null: no class margin (artifacts saved before it)
            "margin": self.margin,
            "margin_k": None if self.margin is None else MARGIN_K,
            "n": self.n,
            "coverage": round(self.coverage(), 6),
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "trust.competence": self.competence.astype(np.float64),
            "trust.correct": self.correct.astype(np.uint8),
            "trust.novel": self.novel.astype(np.uint8),
        }
        if self.scales is not None:
            out["trust.scale"] = self.scales.astype(np.float64)
        if self.labels is not None:
            out["trust.label"] = self.labels.astype(np.int64)
        return out

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> TrustCalibration:
        try:
            t = cls.fit(
                str(meta["rule"]),
                float(meta["risk"]),
                float(meta["delta"]),
                arrays["trust.competence"],
                arrays["trust.correct"].astype(bool),
                arrays["trust.novel"].astype(bool),
                radius=math.inf if meta.get("radius") is None else float(meta["radius"]),
                scales=arrays.get("trust.scale"),
                factor=SUPPORT_FACTOR
                if meta.get("support_factor") is None
                else float(meta["support_factor"]),
                margin=None if meta.get("margin") is None else float(meta["margin"]),
                labels=arrays.get("trust.label"),
            )
        except KeyError as e:
            raise InvalidInputError(f"the trust decision lacks {e}") from None
        support = meta.get("support", "radius")
        if support not in ("radius", "neighbour-scale") or (support == "neighbour-scale") != (
            t.scales is not None
        ):
            raise InvalidInputError(
                f"the trust decision's support {support!r} does not match its arrays (neighbour scales "
                f"{'present' if t.scales is not None else 'absent'})"
            )
        if support == "neighbour-scale" and not isinstance(meta.get("support_factor"), (int, float)):
            raise InvalidInputError(
                "the trust decision bounds support by neighbour scales but records no factor"
            )
        recorded_grid = meta.get("grid")
        if recorded_grid is not None and [float(g) for g in recorded_grid] != list(grid(t.rule, t.risk)):
            raise InvalidInputError("the trust decision was made on another grid of thresholds; refit it")
        if t.margin is not None and meta.get("margin_k") != MARGIN_K:
            raise InvalidInputError(
                f"the class margin read {meta.get('margin_k')} neighbours; this release reads {MARGIN_K}"
            )
        if meta.get("local_k") not in (None, LOCAL_K):
            raise InvalidInputError(
                f"the trust decision asked {meta.get('local_k')} neighbours; this release asks {LOCAL_K}"
            )
        recorded = meta.get("threshold")
        if (math.inf if recorded is None else float(recorded)) != t.threshold:
            raise InvalidInputError(
                "the recorded trust threshold does not follow from the recorded calibration"
            )
        return t


def calibrate_trust(
    *,
    rule: str,
    risk: float,
    delta: float,
    alpha: float,
    head: ConditionHead,
    index: EmbeddingIndex,
    calibrator: MultiScorerCalibrator,
    x_cal: np.ndarray,
    y_cal: np.ndarray,
    train_correct: np.ndarray | None,
    x_fit: np.ndarray | None = None,
    groups_fit: Sequence[Any] | np.ndarray | None = None,
    factor: float = SUPPORT_FACTOR,
    margin: float | None = None,
    y_fit: Sequence[Any] | np.ndarray | None = None,
) -> TrustCalibration:
    """The trust decision of a detector, made on its labelled calibration split (held out from the head, the
    scorers and the cross-fitted heads): the competence, correctness and leave-one-out novelty of every
    calibration image. The local rules need ``x_fit`` (the indexed embeddings, in order) and ``groups_fit``
    for the neighbour scales; a class ``margin`` needs ``y_fit``, the labels of the indexed images."""
    proba = head.predict_proba(x_cal)
    classes = list(head.classes_)
    pred = np.asarray([classes[j] for j in proba.argmax(axis=1)], dtype=object)
    correct = pred == np.asarray(y_cal, dtype=object)
    novel = loo_p_values(calibrator.combined_scores(calibrator.raw_)) < alpha
    # one search serves the local accuracy and the margin (none at all when neither reads neighbours)
    neighbors = search(index, x_cal, neighbours_needed(rule, margin))
    local = scales = None
    if rule in LOCAL_RULES:
        if train_correct is None:
            raise InvalidInputError(
                f"trust rule {rule!r} needs the cross-fitted correctness of the training images"
            )
        if x_fit is None:
            raise InvalidInputError(
                f"trust rule {rule!r} needs the indexed embeddings for the neighbour scales"
            )
        scales = neighbour_scales(index, x_fit, groups_fit)
        local, _ = local_accuracy(*neighbors, train_correct, scales=scales, factor=factor)
    c = competence(rule, proba, local)
    labels = None
    if margin is not None:
        if y_fit is None:
            raise InvalidInputError("a class margin needs the labels of the indexed images")
        labels = class_indices(y_fit, classes)
        c = apply_margin(c, proba, neighbors, labels, margin)
    return TrustCalibration.fit(
        rule, risk, delta, c, correct, novel, scales=scales, factor=factor, margin=margin, labels=labels
    )
