"""What each detector said about the comparison's images (:class:`ModelOutputs`), and the comparison made from
them (:func:`compare_outputs`): per row the metrics with their paired bootstrap intervals, McNemar's test, and
the gate's checks; and the images each side trusted and got wrong (:func:`trusted_wrong`). The metrics and
their statistics are described in :mod:`novelty.flywheel.comparison.compare`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.errors import InvalidInputError
from novelty.flywheel.comparison.gate import Check, GateRule, judge, trust_check
from novelty.flywheel.comparison.paired import (
    bootstrap_weights,
    mcnemar_exact,
    weighted_auroc,
    weighted_ece,
    weighted_mean,
)
from novelty.flywheel.comparison.result import ComparisonError, MetricDiff, Row, _num, _real
from novelty.params import check_int, check_real

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector

__all__ = ["TRUSTED_WRONG_SHOWN", "UNSPECIFIED", "ModelOutputs", "compare_outputs", "trusted_wrong"]

UNSPECIFIED = "unspecified"
#: the trusted-but-wrong images a comparison keeps per side (their counts are of all of them)
TRUSTED_WRONG_SHOWN = 48


@dataclass(frozen=True)
class ModelOutputs:
    """What one detector said about the comparison's images."""

    p_value: np.ndarray  # (n,) combined conformal p-values
    alpha: float
    predictions: np.ndarray | None = None  # (n,) str, the head's classes
    confidence: np.ndarray | None = None  # (n,) the head's top probability
    classes: list[str] | None = None
    trusted: np.ndarray | None = None  # (n,) bool, the trust decision (novelty.trust); None: no head
    risk: float | None = None  # the ε the trust decision states; None: the legacy rule (trusted = not novel)
    competence: np.ndarray | None = None  # (n,) the trust rule's score, higher = more likely right

    @classmethod
    def from_detector(
        cls, det: NoveltyDetector, embeddings: np.ndarray, alpha: float | None = None
    ) -> ModelOutputs:
        a = (
            det.alpha
            if alpha is None
            else check_real(alpha, "alpha", low=0.0, high=1.0, low_open=True, high_open=True)
        )
        res = det.score_embeddings(embeddings)
        if res.predictions is None or res.probabilities is None:
            return cls(p_value=np.asarray(res.p_value, dtype=np.float64), alpha=a)
        st_trust = det.trust_
        return cls(
            p_value=np.asarray(res.p_value, dtype=np.float64),
            alpha=a,
            predictions=np.array([str(p) for p in res.predictions]),
            confidence=np.asarray(res.probabilities, dtype=np.float64).max(axis=1),
            classes=[str(c) for c in (res.classes or [])],
            trusted=np.asarray(res.trusted, dtype=bool),
            risk=None if st_trust is None else float(st_trust.risk),
            competence=None if res.competence is None else np.asarray(res.competence, dtype=np.float64),
        )

    @property
    def has_head(self) -> bool:
        return self.predictions is not None


def _selective_risk(W: np.ndarray, trusted: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """The weighted share of wrong answers among trusted ones under each row of ``W`` (NaN: none trusted)."""
    num = W @ (trusted * (1.0 - correct))
    den = W @ trusted
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _trusted_counts(cond: np.ndarray, trusted: np.ndarray, correct: np.ndarray) -> dict[str, tuple[int, int]]:
    """``{condition (and "all"): (trusted images, wrong among them)}`` of one model."""
    t, wrong = trusted.astype(bool), correct == 0
    out = {"all": (int(t.sum()), int((t & wrong).sum()))}
    for c in np.unique(cond).tolist():
        m = (cond == c) & t
        out[str(c)] = (int(m.sum()), int((m & wrong).sum()))
    return out


def trusted_wrong(
    champion: ModelOutputs,
    challenger: ModelOutputs,
    labels: Sequence[str] | np.ndarray,
    conditions: Sequence[str | None] | np.ndarray,
    *,
    ids: Sequence[str] | None = None,
    paths: Sequence[str | None] | None = None,
    slices: Sequence[str] | np.ndarray | None = None,
    nominal: Sequence[str] = ("clean",),
    limit: int = TRUSTED_WRONG_SHOWN,
) -> dict[str, Any] | None:
    """Per side, the images its trust rule passed and its head got wrong: the answers a production caller
    would have acted on. ``None`` unless both detectors have a head and a trust decision.

    Each side is ``{"n": all of them, "by_condition": {condition: count}, "items": [...]}``; ``by_condition``
    holds every condition present (zeros too), nominal ones first as in the rows. An item is ``{"id", "path",
    "slice", "condition", "label", "prediction", "competence"}`` (``id`` defaults to the image's position,
    ``path`` to ``None``, ``competence`` is ``None`` where the detector has none). At most ``limit`` items are
    kept per side, shared fairly between the conditions (taken in turn, the most competent first: the errors
    the detector was surest of); they are sorted by condition, then competence descending."""
    limit = check_int(limit, "limit", minimum=0)
    if champion.predictions is None or challenger.predictions is None:  # a side without a head
        return None
    if champion.trusted is None or challenger.trusted is None:
        return None
    sides = (
        ("champion", champion, champion.predictions, champion.trusted),
        ("challenger", challenger, challenger.predictions, challenger.trusted),
    )
    y = np.array([str(v) for v in labels])
    n = y.shape[0]
    cond = np.array([UNSPECIFIED if c is None else str(c) for c in conditions])
    id_list = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    path_list: list[str | None] = (
        [None] * n if paths is None else [None if p is None else str(p) for p in paths]
    )
    sl = np.full(n, "test") if slices is None else np.array([str(s) for s in slices])
    for name, size in (("conditions", cond.shape[0]), ("ids", len(id_list)), ("paths", len(path_list))):
        if size != n:
            raise InvalidInputError(f"{name} has {size} entries for {n} images")
    if sl.shape[0] != n:
        raise InvalidInputError(f"slices has {sl.shape[0]} entries for {n} images")
    nominal = (nominal,) if isinstance(nominal, str) else tuple(str(c) for c in nominal)
    present = sorted(set(cond.tolist()))
    order = [c for c in nominal if c in present] + [c for c in present if c not in nominal]
    rank_of = {c: k for k, c in enumerate(order)}
    out = {}
    for who, m, predictions, trusted in sides:
        if predictions.shape[0] != n or trusted.shape[0] != n:
            raise InvalidInputError(f"the {who}'s outputs do not have {n} entries, one per image")
        comp = (
            np.full(n, np.nan)
            if m.competence is None
            else np.asarray(m.competence, dtype=np.float64).reshape(-1)
        )
        if comp.shape[0] != n:
            raise InvalidInputError(f"the {who}'s competence has {comp.shape[0]} entries for {n} images")
        hit = np.flatnonzero(np.asarray(trusted, dtype=bool) & (predictions != y))
        key = np.nan_to_num(comp, nan=-np.inf)
        turn: dict[int, int] = {}  # each image's place among its condition's, the most competent first
        for c in order:
            mine = hit[cond[hit] == c]
            mine = mine[np.argsort(-key[mine], kind="stable")]
            turn.update({int(i): k for k, i in enumerate(mine)})
        kept = sorted(hit.tolist(), key=lambda i: (turn[i], rank_of[cond[i]]))[:limit]
        kept.sort(key=lambda i: (rank_of[cond[i]], turn[i]))
        out[who] = {
            "n": int(hit.size),
            "by_condition": {c: int((cond[hit] == c).sum()) for c in order},
            "items": [
                {
                    "id": id_list[i],
                    "path": path_list[i],
                    "slice": str(sl[i]),
                    "condition": str(cond[i]),
                    "label": str(y[i]),
                    "prediction": str(predictions[i]),
                    "competence": _num(comp[i]),
                }
                for i in kept
            ],
        }
    return out


def compare_outputs(
    champion: ModelOutputs,
    challenger: ModelOutputs,
    labels: Sequence[str] | np.ndarray,
    conditions: Sequence[str | None] | np.ndarray,
    *,
    groups: Sequence[str | None] | np.ndarray | None = None,
    slices: Sequence[str] | np.ndarray | None = None,
    nominal: Sequence[str] = ("clean",),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    rule: GateRule | None = None,
    leakage: Check | None = None,
    config_check: Check | None = None,
) -> tuple[list[Row], list[Check]]:
    """Rows and gate checks from both models' outputs on the same images (see the module docstring).

    ``labels`` are the true classes; ``conditions`` each image's condition (``None``: unspecified);
    ``groups`` the resampling clusters (``None`` entries: the image alone); ``slices`` the part each image
    belongs to (``"test"`` / ``"new"``)."""
    rule = rule or GateRule()
    n_boot = check_int(n_boot, "n_boot", minimum=100)
    level = check_real(level, "level", low=0.5, high=1.0, high_open=True)
    y = np.array([str(v) for v in labels])
    n = y.shape[0]
    if n == 0:
        raise ComparisonError("the comparison has no images")
    cond = np.array([UNSPECIFIED if c is None else str(c) for c in conditions])
    sl = np.full(n, "test") if slices is None else np.array([str(s) for s in slices])
    for name, arr in (
        ("conditions", cond),
        ("slices", sl),
        ("champion p-values", champion.p_value),
        ("challenger p-values", challenger.p_value),
    ):
        if arr.shape[0] != n:
            raise InvalidInputError(f"{name} has {arr.shape[0]} entries for {n} images")
    if groups is None:
        units = np.array([f"#{i}" for i in range(n)])
    else:
        g = list(groups)
        if len(g) != n:
            raise InvalidInputError(f"groups has {len(g)} entries for {n} images")
        units = np.array([f"#{i}" if v is None else f"g:{v}" for i, v in enumerate(g)])
    for m, who in ((champion, "champion"), (challenger, "challenger")):
        if not np.isfinite(m.p_value).all():
            raise ComparisonError(f"the {who} gave no p-value for some images (unreadable?)")
    nominal = (nominal,) if isinstance(nominal, str) else tuple(str(c) for c in nominal)
    if not nominal:
        raise InvalidInputError("nominal must name at least one condition, e.g. ('clean',)")
    is_nom = np.isin(cond, nominal)
    present = sorted(set(cond.tolist()))
    if not is_nom.any():
        raise ComparisonError(
            f"no test image has a nominal condition ({', '.join(nominal)}): the false-alarm rate and the "
            f"novelty AUROC need them. Conditions present: {', '.join(present)}; pass nominal=… (--nominal)"
        )
    with_head = champion.has_head and challenger.has_head
    if with_head:
        for m, who in ((champion, "champion"), (challenger, "challenger")):
            if m.confidence is None:
                raise InvalidInputError(
                    f"the {who}'s outputs have the head's predictions but not its confidence (top probability)"
                )
            unknown = sorted(set(y.tolist()) - set(m.classes or []))
            if unknown:
                raise ComparisonError(
                    f"the test images have labels the {who}'s head does not know: {', '.join(map(repr, unknown))} "
                    f"(its classes: {', '.join(map(repr, m.classes or []))}); its accuracy on them would be 0 by "
                    "construction. Compare on data labelled with the heads' classes"
                )

    strata = np.array([f"{s}\0{c}" for s, c in zip(sl, cond, strict=True)])
    rng = np.random.default_rng(seed)
    W = np.vstack([np.ones((1, n)), bootstrap_weights(strata, units, n_boot, rng)])
    q = ((1.0 - level) / 2.0) * 100.0, (1.0 - (1.0 - level) / 2.0) * 100.0
    score1, score2 = 1.0 - champion.p_value, 1.0 - challenger.p_value
    flag1 = (champion.p_value < champion.alpha).astype(np.float64)
    flag2 = (challenger.p_value < challenger.alpha).astype(np.float64)
    c1 = c2 = t1 = t2 = None
    conf1, conf2 = champion.confidence, challenger.confidence  # both given with a head: checked above
    if with_head and champion.trusted is not None and challenger.trusted is not None:
        t1, t2 = champion.trusted.astype(np.float64), challenger.trusted.astype(np.float64)
    if champion.predictions is not None and challenger.predictions is not None:  # with_head
        c1 = (champion.predictions == y).astype(np.float64)
        c2 = (challenger.predictions == y).astype(np.float64)

    def diff(v1: np.ndarray, v2: np.ndarray) -> MetricDiff:
        d = v2[1:] - v1[1:]
        d = d[np.isfinite(d)]  # a replicate without a trusted image has no selective risk
        lo, hi = np.percentile(d, q) if d.size else (np.nan, np.nan)
        # rounded as the JSON records them, so that the gate judges exactly what the file holds
        return MetricDiff(*(_real(_num(x)) for x in (v1[0], v2[0], v2[0] - v1[0], lo, hi)))

    def make_row(name: str, kind: str, mask: np.ndarray) -> Row:
        metrics: dict[str, MetricDiff] = {}
        Wm = W[:, mask]
        mc = None
        if c1 is not None and c2 is not None and conf1 is not None and conf2 is not None:  # with_head
            metrics["accuracy"] = diff(weighted_mean(Wm, c1[mask]), weighted_mean(Wm, c2[mask]))
            metrics["ece"] = diff(
                weighted_ece(Wm, c1[mask], conf1[mask]),
                weighted_ece(Wm, c2[mask], conf2[mask]),
            )
            if t1 is not None and t2 is not None:
                metrics["coverage"] = diff(weighted_mean(Wm, t1[mask]), weighted_mean(Wm, t2[mask]))
                sr = diff(_selective_risk(Wm, t1[mask], c1[mask]), _selective_risk(Wm, t2[mask], c2[mask]))
                if math.isfinite(sr.champion) or math.isfinite(sr.challenger):  # else: neither trusts any
                    metrics["selective_risk"] = sr
            b = int(((c1 == 1) & (c2 == 0) & mask).sum())
            c = int(((c1 == 0) & (c2 == 1) & mask).sum())
            mc = {"b": b, "c": c, "p_value": mcnemar_exact(b, c)}
        pos = mask & ~is_nom
        if pos.any():
            Wn, Wp = W[:, is_nom], W[:, pos]
            metrics["auroc"] = diff(
                weighted_auroc(Wn, Wp, score1[is_nom], score1[pos]),
                weighted_auroc(Wn, Wp, score2[is_nom], score2[pos]),
            )
        nom = mask & is_nom
        if nom.any():
            metrics["false_alarm_rate"] = diff(
                weighted_mean(W[:, nom], flag1[nom]), weighted_mean(W[:, nom], flag2[nom])
            )
        return Row(
            name=name,
            kind=kind,
            n=int(mask.sum()),
            n_units=int(np.unique(units[mask]).size),
            nominal=bool(is_nom[mask].all()),
            metrics=metrics,
            mcnemar=mc,
        )

    rows = [make_row("all", "all", np.ones(n, dtype=bool))]
    slice_names = list(dict.fromkeys(sl.tolist()))
    if len(slice_names) > 1:
        rows += [make_row(f"{s} slice", "slice", sl == s) for s in slice_names]
    ordered = [c for c in nominal if c in present] + [c for c in present if c not in nominal]
    rows += [make_row(c, "condition", cond == c) for c in ordered]
    checks = judge(rows, rule, with_head, champion.alpha, challenger.alpha, int(is_nom.sum()))
    if with_head and t2 is not None and c2 is not None:
        checks.append(trust_check(rows, challenger.risk, rule.margin, _trusted_counts(cond, t2, c2)))
    if leakage is not None:
        checks.append(leakage)
    if config_check is not None:
        checks.insert(0, config_check)
    return rows, checks
