"""The strategies that choose what to label from a :class:`~novelty.flywheel.pools.Pool` under a budget
(:func:`select`), with the scoring orders and uncertainty measures behind them.

Strategies (every one deterministic in ``seed``):

``random``
    a uniform sample of the pool (the baseline every other strategy must beat).
``novelty``
    lowest p-value first; ties (the most novel images share the smallest p-value a calibration set can give)
    broken by the raw score (higher = more novel), then by ``seed``.
``uncertainty``
    the images the model can least vouch for first; refused for a detector without a head. How uncertainty is
    measured (``measure``, :data:`UNCERTAINTY_MEASURES`): ``"competence"``, ``1 − competence``, the trust
    decision's score (:mod:`novelty.trust`: higher = the head more likely right here, from its calibrated
    probability and how often it was right on the nearest labelled images), so the images the trust rule cannot
    vouch for rank first (an image without a competence, unreadable for the rule, counts as competence 0);
    ``"least-confidence"``, ``1 − max p`` of the head; ``"margin"``, ``1 − (p₁ − p₂)``. The default is
    ``"competence"`` when the pool carries the trust decision's competence (``pool.competence``), else
    least confidence (detectors saved before the trust decision). The head's own probability is a weak
    measure: on novel images a head is often wrong *and* sure, which is why least confidence alone misses
    them; competence also asks the labelled neighbourhood, but it is no novelty test either.
``diversity``
    greedy k-center on the L2-normalised embeddings (cosine distance ``1 − cos``): each step takes the candidate
    farthest from everything already covered. Coverage starts from the training data: each candidate's
    distance to its nearest training embedding (the detector's FAISS index, ``pool.train_distance``) counts as
    a centre already chosen, so the first picks are what the training data lacks most. Near-duplicates are
    removed by ``radius``: a candidate within ``radius`` of an image already chosen is skipped (so a budget
    may end unspent when the pool holds fewer distinct images; a warning says so).
``hybrid``
    novel (and uncertain), then diversified: ``h = w_n · r_novelty + w_u · r_uncertainty`` with ``r`` the rank
    of each image in the pool scaled to [0, 1] (1 = most novel / most uncertain; ties share their mean rank;
    novelty ranks as in ``novelty``, uncertainty by ``measure`` as in ``uncertainty``); the top
    ``oversample × budget`` images by ``h`` are kept, and greedy k-center (with the training coverage and
    ``radius`` as above) picks ``budget`` of them. Defaults:
    :data:`DEFAULT_WEIGHTS` (``w_n`` = 1, ``w_u`` = 0) and :data:`DEFAULT_OVERSAMPLE` (8), the best of a grid
    of weights (1/0, 0.75/0.25, 0.5/0.5) and oversamples (4, 8, 16, 32) on the windshield flywheel benchmark
    (``benchmarks/flywheel.py``), tuned on seeds apart from the reported ones. Why no weight on uncertainty by
    default: on images of conditions it never saw, the head is wrong *and* sure (a tunnel or snow frame gets
    ``p(dry) ≈ 1``), so its uncertainty ranks them low; the weight stays for heads whose doubt means
    something (in-distribution images near the boundary). Why oversample: novelty alone fills a budget with
    the single most extreme condition (the darkest tunnel frames); the k-center step over 8 × budget
    candidates spreads the labels over conditions. Several cells of that grid lie within the seed-to-seed
    spread of the best, and on that benchmark ``diversity`` alone did as well as or better than ``hybrid``
    (``benchmarks/results/flywheel.md``): weigh in uncertainty, or use ``diversity``, where the benchmark of
    your own data says so. Without a head, ``hybrid`` ranks by novelty alone (with a warning).

Every :class:`SelectedItem` carries a human-readable ``reason`` ("p=0.001, novel; head uncertain
(p(wet)=0.52); farthest from the training data and the chosen set (d=0.31)") and the numbers behind it
(``scores``). A budget larger than the pool selects the whole pool, with a warning.

Images a labelled dataset already labels (``select(..., dataset=...)``, ``novelty select --dataset``; the
flywheel passes its training set, new slice and test set) are left out before choosing, by sha256: no label is
bought twice. ``pool.n_already_labelled`` counts them (``null``: no dataset was given), ``pool.labelled_in``
names the datasets.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from novelty.clock import utc_now_iso
from novelty.coreset import Cosine, farthest_points
from novelty.errors import InvalidInputError, UnknownNameError
from novelty.flywheel.dataset import labelled_hashes
from novelty.flywheel.pools import Pool
from novelty.flywheel.selectionfile import (
    STRATEGIES,
    UNCERTAINTY_MEASURES,
    SelectedItem,
    Selection,
    SelectionError,
)
from novelty.params import check_int, check_real

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_OVERSAMPLE",
    "DEFAULT_RADIUS",
    "DEFAULT_WEIGHTS",
    "default_measure",
    "k_center",
    "select",
    "uncertainty_scores",
]

#: hybrid: weights of the novelty rank and the uncertainty rank (see the module docstring)
DEFAULT_WEIGHTS: dict[str, float] = {"novelty": 1.0, "uncertainty": 0.0}
#: hybrid: k-center chooses among the top ``oversample × budget`` images by the weighted rank
DEFAULT_OVERSAMPLE = 8.0
#: diversity and hybrid: candidates within this cosine distance (1 − cos) of a chosen image are skipped; about
#: the distance between neighbouring frames of a video, so a labeller never sees the same moment twice
DEFAULT_RADIUS = 0.01
#: in reasons, the head is "uncertain" below this probability of its answer (the auto-accept threshold)
SURE = 0.9


# --- the strategies ---------------------------------------------------------------------------------------
def default_measure(pool: Pool) -> str:
    """The uncertainty measure used when none is given: ``"competence"`` when the pool carries the trust
    decision's competence for some image, else ``"least-confidence"`` (a detector saved before the trust
    decision, or one that keeps the legacy rule)."""
    comp = pool.competence
    return "competence" if comp is not None and bool(np.isfinite(comp).any()) else "least-confidence"


def _check_measure(measure: str | None, pool: Pool) -> str:
    if measure is None:
        return default_measure(pool)
    if not isinstance(measure, str) or measure not in UNCERTAINTY_MEASURES:
        raise UnknownNameError(
            f"unknown uncertainty measure {measure!r}; use one of {', '.join(UNCERTAINTY_MEASURES)}"
        )
    return measure


def uncertainty_scores(pool: Pool, measure: str | None = None) -> np.ndarray:
    """The head's uncertainty per image, higher = less certain: ``1 − competence`` (``"competence"``, the trust
    decision's score; an image without one counts as competence 0), ``1 − max p`` (``"least-confidence"``) or
    ``1 − (p₁ − p₂)`` (``"margin"``); ``None``: :func:`default_measure`. :class:`SelectionError` when the
    detector that scored the pool has no head, or, for ``"competence"``, no trust decision."""
    measure = _check_measure(measure, pool)
    if pool.probabilities is None:
        raise SelectionError(
            "uncertainty needs the detector's condition head, and this detector has none: fit it with labels "
            "(novelty fit --labels), or choose --strategy novelty, diversity or random"
        )
    if measure == "competence":
        comp = pool.competence
        if comp is None or not np.isfinite(comp).any():
            raise SelectionError(
                "the uncertainty measure 'competence' needs the trust decision's competence, and this "
                "detector has none (saved before the trust decision, or keeping the legacy rule): choose "
                "least-confidence or margin, or refit the detector with labels"
            )
        return 1.0 - np.clip(np.nan_to_num(comp, nan=0.0), 0.0, 1.0)
    p = np.sort(pool.probabilities, axis=1)
    if measure == "margin" and p.shape[1] >= 2:
        return 1.0 - (p[:, -1] - p[:, -2])
    return 1.0 - p[:, -1]


def _scaled_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of ``values`` scaled to [0, 1] (1 = largest), ties sharing their mean rank."""
    n = values.shape[0]
    if n == 1:
        return np.ones(1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean_rank = starts + (counts - 1) / 2.0  # 0-based, ascending
    return mean_rank[inverse] / (n - 1)


def _novelty_key(pool: Pool) -> np.ndarray:
    """A value per image that orders by novelty: lowest p-value first, then the highest raw score."""
    p = np.nan_to_num(pool.p_value, nan=1.0)
    s = np.nan_to_num(pool.score, nan=-np.inf)
    order = np.lexsort((-s, p))  # most novel first
    key = np.empty(len(pool))
    key[order] = np.arange(len(pool))[::-1]  # larger = more novel
    # equal (p, score) pairs share a key
    same = np.zeros(len(pool), dtype=bool)
    same[1:] = (p[order][1:] == p[order][:-1]) & (s[order][1:] == s[order][:-1])
    for j in np.flatnonzero(same):
        key[order[j]] = key[order[j - 1]]
    return key


def _order(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions by ``values``, largest first; ties in a random order drawn from ``rng``."""
    tiebreak = rng.permutation(values.shape[0])
    return np.lexsort((tiebreak, -values))


def k_center(
    embeddings: np.ndarray,
    budget: int,
    *,
    covered: np.ndarray | None = None,
    radius: float = 0.0,
    priority: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center on L2-normalised ``embeddings`` with cosine distance ``1 − cos``.

    ``covered``: each point's distance to centres chosen before (the training data); ``None`` → nothing is
    covered and the first pick is the best by ``priority``. Each step picks the point farthest from every
    centre (ties: lowest ``priority``, default a random order from ``seed``) and skips from then on every point
    within ``radius`` of a picked one. Returns ``(positions, distances)``: the picks in order and each one's
    distance to the nearest centre when it was picked (``inf`` for an uncovered first pick). Stops early when
    every point left lies within ``radius`` of a pick.
    """
    x = Cosine(embeddings)
    if priority is None:
        priority = np.random.default_rng(seed).permutation(x.shape[1]).astype(np.float64)
    cov = None if covered is None else np.asarray(covered, dtype=np.float64)
    picks, dists = farthest_points(x, budget, covered=cov, radius=radius, priority=priority)
    return picks[0], dists[0].astype(np.float64)


# --- select -----------------------------------------------------------------------------------------------
def _check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    if not isinstance(weights, Mapping):
        raise InvalidInputError(f"weights must be a mapping such as {DEFAULT_WEIGHTS}, got {weights!r}")
    unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
    if unknown:
        raise InvalidInputError(
            f"unknown weight(s) {', '.join(map(str, unknown))}; hybrid weighs {', '.join(DEFAULT_WEIGHTS)}"
        )
    out = {k: check_real(weights.get(k, 0.0), f"weight {k!r}", low=0.0) for k in DEFAULT_WEIGHTS}
    if sum(out.values()) <= 0:
        raise InvalidInputError(f"at least one hybrid weight must be positive, got {out}")
    return out


def select(
    pool: Pool,
    budget: int,
    strategy: str,
    *,
    seed: int = 0,
    radius: float = DEFAULT_RADIUS,
    weights: Mapping[str, float] | None = None,
    oversample: float = DEFAULT_OVERSAMPLE,
    measure: str | None = None,
    model_version: str | None = None,
    dataset: Any = None,
) -> Selection:
    """Choose ``budget`` images of ``pool`` with ``strategy`` (see the module docstring). ``measure``: how
    ``uncertainty`` and ``hybrid`` measure the head's doubt (:data:`UNCERTAINTY_MEASURES`); ``None``,
    :func:`default_measure` (``"competence"`` when the pool carries it, else ``"least-confidence"``).

    ``dataset``: a labelled dataset (a :class:`~novelty.flywheel.dataset.Dataset` or its directory), or a
    sequence of them; the pool's images these already label (same sha256) are left out before choosing, so the
    budget buys labels only for images without one. How many were left out: ``n_already_labelled``
    (``selection.json`` ``pool.n_already_labelled``); :class:`SelectionError` when that leaves nothing."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise UnknownNameError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    budget = check_int(budget, "budget", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    radius = check_real(radius, "radius", low=0.0, high=2.0)
    oversample = check_real(oversample, "oversample", low=1.0)
    measure = _check_measure(measure, pool)
    w = _check_weights(weights) if strategy == "hybrid" else {}
    n_all = len(pool)
    if n_all == 0:
        raise SelectionError("the pool is empty: nothing to select")
    labelled, labelled_in = labelled_hashes(dataset)
    rows = np.arange(n_all)
    if labelled:
        rows = np.asarray([i for i, s in enumerate(pool.sha256) if s not in labelled], dtype=np.int64)
        if len(rows) == 0:
            raise SelectionError(
                f"every one of the {n_all} images of the pool is labelled already (in "
                f"{', '.join(labelled_in)}): nothing to select"
            )
        if len(rows) < n_all:
            log.info("%d image(s) of the pool are labelled already and left out", n_all - len(rows))
            pool = pool.subset(rows)
    n = len(pool)
    if budget > n:
        warnings.warn(
            f"budget {budget} exceeds the pool ({n} images): every image is selected",
            UserWarning,
            stacklevel=2,
        )
    take = min(budget, n)
    rng = np.random.default_rng(seed)
    # refused here without a head for "uncertainty"; for the others only reported when there is one
    unc = uncertainty_scores(pool, measure) if strategy == "uncertainty" or pool.has_head else None
    nov_key = _novelty_key(pool)
    per_item: dict[str, np.ndarray] = {}
    what: list[str] = []
    distances: np.ndarray | None = None

    if strategy == "random":
        picks = rng.permutation(n)[:take]
        what = [f"drawn at random (seed {seed})"] * take
    elif strategy == "novelty":
        picks = _order(nov_key, rng)[:take]
        what = [f"novelty rank {r + 1} of {n}" for r in range(take)]
    elif strategy == "uncertainty" and unc is not None:
        picks = _order(unc, rng)[:take]
        what = [f"uncertainty rank {r + 1} of {n} ({_MEASURE_WORDS[measure]})" for r in range(take)]
    elif strategy == "diversity":
        picks, distances = k_center(
            pool.embeddings, take, covered=pool.train_distance, radius=radius, seed=seed
        )
        what = [_farthest(d, pool.train_distance is not None) for d in distances]
    else:  # hybrid
        r_n = _scaled_ranks(nov_key)
        if unc is None:
            warnings.warn(
                "the detector has no condition head: hybrid ranks by novelty alone", UserWarning, stacklevel=2
            )
            h = r_n
            r_u = None
        else:
            r_u = _scaled_ranks(unc)
            total = w["novelty"] + w["uncertainty"]
            h = (w["novelty"] * r_n + w["uncertainty"] * r_u) / total
        m = min(n, max(take, math.ceil(oversample * take)))
        top = _order(h, rng)[:m]
        prio = np.arange(m, dtype=np.float64)  # the best by h first on ties
        cov = None if pool.train_distance is None else pool.train_distance[top]
        local, distances = k_center(pool.embeddings[top], take, covered=cov, radius=radius, priority=prio)
        picks = top[local]
        per_item["hybrid"] = h
        per_item["novelty_rank"] = r_n
        if r_u is not None:
            per_item["uncertainty_rank"] = r_u
        what = [
            f"hybrid score {h[i]:.2f} (top {m} of {n} by novelty and uncertainty); "
            + _farthest(d, pool.train_distance is not None)
            for i, d in zip(picks.tolist(), distances, strict=True)
        ]
    if len(picks) < take:
        warnings.warn(
            f"only {len(picks)} of the {take} images asked for were selected: the rest of the pool lies within "
            f"radius={radius:g} of an image already chosen (near-duplicates); lower --radius to take them",
            UserWarning,
            stacklevel=2,
        )
    items = []
    proba = pool.probability
    for rank, (i, why) in enumerate(zip(picks.tolist(), what, strict=True), start=1):
        scores: dict[str, float | None] = {k: float(v[i]) for k, v in per_item.items()}
        if pool.train_distance is not None:
            scores["train_distance"] = float(pool.train_distance[i])
        if distances is not None:
            d = float(distances[rank - 1])
            scores["distance"] = d if math.isfinite(d) else None
        scores["score"] = float(pool.score[i]) if math.isfinite(pool.score[i]) else None
        pred = None if pool.predictions is None else pool.predictions[i]
        prob = None if proba is None else float(proba[i])
        comp = None if pool.competence is None else float(pool.competence[i])
        items.append(
            SelectedItem(
                id=pool.ids[i],
                path=pool.paths[i],
                sha256=pool.sha256[i],
                source=pool.source[i],
                rank=rank,
                reason=_reason(pool, i, why, pred, prob),
                p_value=float(pool.p_value[i]),
                novelty=float(pool.novelty[i]),
                is_novel=bool(pool.is_novel[i]),
                prediction=None if pred is None else str(pred),
                probability=prob,
                uncertainty=None if unc is None else float(unc[i]),
                timestamp=pool.timestamps[i],
                sources=tuple(pool.sources[i]),
                scores=scores,
                trusted=None if pool.trusted is None else bool(pool.trusted[i]),
                competence=comp if comp is not None and math.isfinite(comp) else None,
                nearest=None if pool.nearest is None else pool.nearest[i] or None,
                group=None if pool.groups is None else pool.groups[i],
                condition=None if pool.conditions is None else pool.conditions[i],
            )
        )
    if strategy == "hybrid":
        w = {**w, "oversample": float(oversample)}
    return Selection(
        strategy=strategy,
        budget=budget,
        seed=seed,
        weights=w,
        detector_id=pool.detector_id,
        model_version=model_version or pool.detector_id,
        classes=[str(c) for c in pool.classes],
        alpha=float(pool.alpha),
        items=items,
        created=utc_now_iso(),
        radius=radius if strategy in ("diversity", "hybrid") else None,
        pool_size=n_all,
        n_skipped=pool.n_skipped,
        trust=None if pool.trust is None else dict(pool.trust),
        measure=None if unc is None else measure,
        n_already_labelled=None if dataset is None else n_all - n,
        labelled_in=labelled_in,
        positions=[int(rows[i]) for i in picks],
    )


_MEASURE_WORDS = {
    "competence": "1 − competence",
    "least-confidence": "least confidence",
    "margin": "margin",
}


def _farthest(d: float, covered: bool) -> str:
    if not math.isfinite(d):
        return "first centre (nothing covered yet)"
    where = "the training data and the chosen set" if covered else "the chosen set"
    return f"farthest from {where} (d={d:.2f})"


def _reason(pool: Pool, i: int, why: str, pred: Any, prob: float | None) -> str:
    p = float(pool.p_value[i])
    parts = [f"p={p:.2g}, {'novel' if pool.is_novel[i] else 'not novel'}"]
    if pred is not None and prob is not None:
        trust = "" if pool.trusted is None else (", trusted" if pool.trusted[i] else ", not trusted")
        parts.append(f"head {'sure' if prob >= SURE else 'uncertain'} (p({pred})={prob:.2f}){trust}")
    parts.append(why)
    return "; ".join(parts)
