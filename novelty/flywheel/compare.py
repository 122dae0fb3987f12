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

**The gate** (:class:`GateRule`), with a head on both detectors:

1. *gain*: overall accuracy gain (point estimate) ≥ ``min_gain`` (default 0.01);
2. *significant*: the gain's interval lies above 0 **and** McNemar's p < ``mcnemar_level`` (0.05);
3. *no condition worse*: no condition's (nor slice's) accuracy difference below ``−margin`` (default 0.02),
   judged on the point estimate;
4. *false alarms*: the challenger's false-alarm rate on all nominal images ≤ max(alpha, the champion's) +
   tolerance, the tolerance defaulting to the binomial one-sided 95 % margin ``1.645·√(α(1−α)/n_nominal)``;
5. *no leakage*: no test image is in either detector's training data (checked by content hash when the
   training records name their dataset; reported as not checked otherwise).

With a head, novelty AUROC is reported but not gated: teaching the head a condition is meant to make it
familiar. **When either detector has no head** the accuracy and ECE columns are absent and the gate runs on
novelty alone: 1–3 use the overall novelty AUROC (nominal vs everything else) and each non-nominal
condition's AUROC instead of accuracy (no McNemar), 4 and 5 as above. The promotion happens only when every
check passes; ``passed`` and ``reasons`` say so.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import atomic_write_text

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector
    from novelty.embedder import Embedder
    from novelty.flywheel.dataset import Dataset, Entry
    from novelty.flywheel.record import TrainingRecord

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Check",
    "Comparison",
    "ComparisonError",
    "GateRule",
    "MetricDiff",
    "ModelOutputs",
    "Row",
    "compare",
    "compare_embeddings",
    "compare_outputs",
    "expected_calibration_error",
    "mcnemar_exact",
]

FORMAT = "novelty-comparison"
FORMAT_VERSION = 1
ECE_BINS = 15
UNSPECIFIED = "unspecified"
METRICS = ("accuracy", "ece", "auroc", "false_alarm_rate")
_Z_ONE_SIDED_95 = 1.6448536269514722


class ComparisonError(NoveltyError, ValueError):
    """Two detectors cannot be compared on this data (other parameters, unknown classes, no nominal images…)."""


# --- statistics -------------------------------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` and ``c`` are the discordant pairs (only the first model right,
    only the second right); under the null each is Binomial(b + c, ½). ``p = min(1, 2·P(X ≤ min(b, c)))``."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise InvalidInputError(f"discordant counts must be ≥ 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # log-space sum: exact enough for any n a test set has
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(k + 1)
    ]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return float(min(1.0, 2.0 * tail))


def _bins(confidence: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Bin of each confidence among ``n_bins`` equal-width bins ``(lo, hi]`` of [0, 1] (0 falls in the first)."""
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def expected_calibration_error(
    correct: np.ndarray, confidence: np.ndarray, n_bins: int = ECE_BINS, weights: np.ndarray | None = None
) -> float:
    """ECE: ``Σ_b (n_b / n)·|accuracy_b − confidence_b|`` over ``n_bins`` equal-width confidence bins."""
    c = np.asarray(correct, dtype=np.float64)
    p = np.asarray(confidence, dtype=np.float64)
    w = np.ones_like(c) if weights is None else np.asarray(weights, dtype=np.float64)
    if c.size == 0:
        raise InvalidInputError("ECE of no predictions")
    return float(_ece(w[None, :], c, p, n_bins)[0])


def _ece(W: np.ndarray, correct: np.ndarray, conf: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """ECE under each row of weights ``W`` (m, n)."""
    bins = _bins(conf, n_bins)
    gap = correct - conf
    total = np.zeros(W.shape[0])
    for k in np.unique(bins):
        sel = bins == k
        total += np.abs(W[:, sel] @ gap[sel])
    return total / W.sum(axis=1)


def _mean(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (W @ x) / W.sum(axis=1)


def _auroc(W_neg: np.ndarray, W_pos: np.ndarray, neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Weighted AUROC (P(pos > neg) + ½ P(tie)) under each row of weights."""
    uniq, inv = np.unique(np.concatenate([neg, pos]), return_inverse=True)
    inv_n, inv_p = inv[: neg.size], inv[neg.size :]
    u = uniq.size
    out = np.empty(W_neg.shape[0])
    for r in range(W_neg.shape[0]):
        wn = np.bincount(inv_n, weights=W_neg[r], minlength=u)
        wp = np.bincount(inv_p, weights=W_pos[r], minlength=u)
        below = np.cumsum(wn) - wn
        out[r] = float(wp @ (below + 0.5 * wn)) / (wn.sum() * wp.sum())
    return out


def bootstrap_weights(
    strata: np.ndarray, units: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``(n_boot, n)`` resampling weights: within each stratum its clusters (``units``) are drawn with
    replacement, as many as it has; an image's weight is how often its cluster was drawn."""
    n = strata.shape[0]
    W = np.zeros((n_boot, n))
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        ids, inv = np.unique(units[members], return_inverse=True)
        m = ids.size
        draws = rng.integers(0, m, size=(n_boot, m))
        counts = np.zeros((n_boot, m))
        np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
        W[:, members] = counts[:, inv]
    return W


# --- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricDiff:
    """One metric of one row: both models' values, the difference (challenger − champion) and its interval."""

    champion: float
    challenger: float
    diff: float
    ci_low: float
    ci_high: float

    def to_json(self) -> dict[str, Any]:
        return {
            "champion": _num(self.champion),
            "challenger": _num(self.challenger),
            "diff": _num(self.diff),
            "ci": [_num(self.ci_low), _num(self.ci_high)],
        }

    @property
    def ci_contains_zero(self) -> bool:
        return self.ci_low <= 0.0 <= self.ci_high


@dataclass(frozen=True)
class Row:
    """One row of the comparison: ``all``, a slice or a condition."""

    name: str
    kind: str  # "all" | "slice" | "condition"
    n: int
    n_units: int  # resampling clusters
    nominal: bool  # a nominal condition (its flags are false alarms)
    metrics: dict[str, MetricDiff]  # absent metrics are not in the dict
    mcnemar: dict[str, Any] | None = None  # {"b", "c", "p_value"} when both have a head

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "n": self.n,
            "n_units": self.n_units,
            "nominal": self.nominal,
            "metrics": {k: v.to_json() for k, v in self.metrics.items()},
            "mcnemar": self.mcnemar,
        }


@dataclass(frozen=True)
class Check:
    """One check of the gate: ``passed`` is True / False, or None for information only."""

    name: str
    passed: bool | None
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "message": self.message, "values": self.values}

    def line(self) -> str:
        tag = {True: "PASS", False: "FAIL", None: "INFO"}[self.passed]
        return f"{tag} {self.name}: {self.message}"


@dataclass(frozen=True)
class GateRule:
    """When a challenger is promoted (see the module docstring)."""

    min_gain: float = 0.01
    margin: float = 0.02
    fa_tolerance: float | None = None  # None: 1.645·√(α(1−α)/n_nominal)
    mcnemar_level: float = 0.05

    def __post_init__(self) -> None:
        from novelty.params import check_real

        check_real(self.min_gain, "min_gain", low=-1.0, high=1.0)
        check_real(self.margin, "margin", low=0.0, high=1.0)
        if self.fa_tolerance is not None:
            check_real(self.fa_tolerance, "fa_tolerance", low=0.0, high=1.0)
        check_real(self.mcnemar_level, "mcnemar_level", low=0.0, high=1.0, low_open=True, high_open=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "min_gain": self.min_gain,
            "margin": self.margin,
            "fa_tolerance": self.fa_tolerance,
            "mcnemar_level": self.mcnemar_level,
        }


@dataclass(frozen=True)
class ModelOutputs:
    """What one detector said about the comparison's images."""

    p_value: np.ndarray  # (n,) combined conformal p-values
    alpha: float
    predictions: np.ndarray | None = None  # (n,) str, the head's classes
    confidence: np.ndarray | None = None  # (n,) the head's top probability
    classes: list[str] | None = None

    @classmethod
    def from_detector(
        cls, det: NoveltyDetector, embeddings: np.ndarray, alpha: float | None = None
    ) -> ModelOutputs:
        res = det.score_embeddings(embeddings)
        a = float(det.alpha if alpha is None else alpha)
        if res.predictions is None or res.probabilities is None:
            return cls(p_value=np.asarray(res.p_value, dtype=np.float64), alpha=a)
        return cls(
            p_value=np.asarray(res.p_value, dtype=np.float64),
            alpha=a,
            predictions=np.array([str(p) for p in res.predictions]),
            confidence=np.asarray(res.probabilities, dtype=np.float64).max(axis=1),
            classes=[str(c) for c in (res.classes or [])],
        )

    @property
    def has_head(self) -> bool:
        return self.predictions is not None


@dataclass
class Comparison:
    """The result of :func:`compare`: the rows, the gate's checks, ``passed`` and ``reasons``."""

    rows: list[Row]
    checks: list[Check]
    champion: dict[str, Any]
    challenger: dict[str, Any]
    settings: dict[str, Any]
    test: dict[str, Any] | None = None
    new_slice: dict[str, Any] | None = None
    embeddings: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        """True when every check of the gate passed (informational checks aside)."""
        return all(c.passed is not False for c in self.checks) and any(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        """Each check with its numbers, one line each (``PASS …`` / ``FAIL …`` / ``INFO …``)."""
        return [c.line() for c in self.checks]

    @property
    def has_head(self) -> bool:
        return any("accuracy" in r.metrics for r in self.rows)

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r}; rows: {', '.join(r.name for r in self.rows)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "passed": self.passed,
            "reasons": self.reasons,
            "champion": self.champion,
            "challenger": self.challenger,
            "test": self.test,
            "new_slice": self.new_slice,
            "settings": self.settings,
            "embeddings": self.embeddings,
            "rows": [r.to_json() for r in self.rows],
            "checks": [c.to_json() for c in self.checks],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the comparison as JSON, atomically."""
        text = json.dumps(self.to_json(), indent=1, ensure_ascii=False, allow_nan=False)
        return atomic_write_text(Path(path), text + "\n")

    def write_report(self, path: str | os.PathLike[str]) -> Path:
        """Write the self-contained HTML report, atomically."""
        return atomic_write_text(Path(path), render_report(self))

    def table(self) -> str:
        """The rows as a plain-text table."""
        cols = [m for m in METRICS if any(m in r.metrics for r in self.rows)]
        head = f"{'row':<22} {'n':>5}  " + "  ".join(f"{m:>34}" for m in cols)
        lines = [head, "-" * len(head)]
        for r in self.rows:
            cells = []
            for m in cols:
                d = r.metrics.get(m)
                cells.append(
                    f"{'—':>34}"
                    if d is None
                    else f"{d.champion:6.3f}→{d.challenger:6.3f} {d.diff:+.3f} [{d.ci_low:+.3f},{d.ci_high:+.3f}]"
                )
            lines.append(f"{r.name[:22]:<22} {r.n:>5}  " + "  ".join(f"{c:>34}" for c in cells))
        return "\n".join(lines)


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


# --- the comparison on outputs ----------------------------------------------------------------------
def _fmt(x: float, signed: bool = False) -> str:
    return "n/a" if not math.isfinite(x) else (f"{x:+.3f}" if signed else f"{x:.3f}")


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
    from novelty.params import check_int, check_real

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
    nominal = tuple(str(c) for c in nominal)
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
    c1 = c2 = None
    if with_head:
        assert champion.predictions is not None and challenger.predictions is not None
        c1 = (champion.predictions == y).astype(np.float64)
        c2 = (challenger.predictions == y).astype(np.float64)

    def diff(v1: np.ndarray, v2: np.ndarray) -> MetricDiff:
        d = v2[1:] - v1[1:]
        lo, hi = np.percentile(d, q)
        return MetricDiff(float(v1[0]), float(v2[0]), float(v2[0] - v1[0]), float(lo), float(hi))

    def make_row(name: str, kind: str, mask: np.ndarray) -> Row:
        metrics: dict[str, MetricDiff] = {}
        Wm = W[:, mask]
        mc = None
        if with_head and c1 is not None and c2 is not None:
            assert champion.confidence is not None and challenger.confidence is not None
            metrics["accuracy"] = diff(_mean(Wm, c1[mask]), _mean(Wm, c2[mask]))
            metrics["ece"] = diff(
                _ece(Wm, c1[mask], champion.confidence[mask]), _ece(Wm, c2[mask], challenger.confidence[mask])
            )
            b = int(((c1 == 1) & (c2 == 0) & mask).sum())
            c = int(((c1 == 0) & (c2 == 1) & mask).sum())
            mc = {"b": b, "c": c, "p_value": mcnemar_exact(b, c)}
        pos = mask & ~is_nom
        if pos.any():
            Wn, Wp = W[:, is_nom], W[:, pos]
            metrics["auroc"] = diff(
                _auroc(Wn, Wp, score1[is_nom], score1[pos]), _auroc(Wn, Wp, score2[is_nom], score2[pos])
            )
        nom = mask & is_nom
        if nom.any():
            metrics["false_alarm_rate"] = diff(_mean(W[:, nom], flag1[nom]), _mean(W[:, nom], flag2[nom]))
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
    checks = _gate(rows, rule, with_head, champion, challenger, int(is_nom.sum()))
    if leakage is not None:
        checks.append(leakage)
    if config_check is not None:
        checks.insert(0, config_check)
    return rows, checks


def _gate(
    rows: list[Row], rule: GateRule, with_head: bool, champ: ModelOutputs, chall: ModelOutputs, n_nominal: int
) -> list[Check]:
    checks: list[Check] = []
    overall = rows[0]
    metric = "accuracy" if with_head else "auroc"
    what = "accuracy" if with_head else "novelty AUROC (nominal vs the rest)"
    d = overall.metrics.get(metric)
    if d is None:
        checks.append(
            Check(
                "gain",
                False,
                f"no {what} to judge: the test data has no image outside the nominal conditions",
            )
        )
    else:
        checks.append(
            Check(
                "gain",
                d.diff >= rule.min_gain,
                f"{what} {_fmt(d.champion)} → {_fmt(d.challenger)} ({_fmt(d.diff, True)}); needs ≥ "
                f"{_fmt(rule.min_gain, True)}",
                {
                    "metric": metric,
                    "champion": d.champion,
                    "challenger": d.challenger,
                    "gain": d.diff,
                    "min_gain": rule.min_gain,
                },
            )
        )
        ci = f"interval [{_fmt(d.ci_low, True)}, {_fmt(d.ci_high, True)}]"
        if with_head and overall.mcnemar is not None:
            mc = overall.mcnemar
            ok = d.ci_low > 0.0 and mc["p_value"] < rule.mcnemar_level
            msg = (
                f"{ci} must lie above 0 and McNemar p < {rule.mcnemar_level:g}: p = {mc['p_value']:.3g} "
                f"({mc['c']} images only the challenger gets right, {mc['b']} only the champion)"
            )
            vals = {"ci": [d.ci_low, d.ci_high], "mcnemar_p": mc["p_value"], "b": mc["b"], "c": mc["c"]}
        else:
            ok = d.ci_low > 0.0
            msg = f"{ci} must lie above 0"
            vals = {"ci": [d.ci_low, d.ci_high]}
        checks.append(Check("significant", bool(ok), msg, vals))
    worse = []
    judged = []
    for r in rows[1:]:
        m = r.metrics.get(metric)
        if m is None or (not with_head and r.nominal):
            continue
        judged.append(r.name)
        if m.diff < -rule.margin:
            worse.append((r.name, m.diff, m.ci_low, m.ci_high))
    if worse:
        msg = "; ".join(
            f"{name} {_fmt(dd, True)} [{_fmt(lo, True)}, {_fmt(hi, True)}]" for name, dd, lo, hi in worse
        )
        checks.append(
            Check(
                "no condition worse",
                False,
                f"{what} falls by more than {rule.margin:g} on {msg}",
                {"margin": rule.margin, "worse": [w[0] for w in worse]},
            )
        )
    else:
        lowest = min(
            ((r.name, r.metrics[metric].diff) for r in rows[1:] if r.name in judged),
            key=lambda t: t[1],
            default=None,
        )
        detail = "" if lowest is None else f" (lowest: {lowest[0]} {_fmt(lowest[1], True)})"
        checks.append(
            Check(
                "no condition worse",
                True,
                f"no condition's {what} falls by more than {rule.margin:g}{detail}",
                {"margin": rule.margin, "judged": judged},
            )
        )
    fa = overall.metrics["false_alarm_rate"]
    alpha = chall.alpha
    tol = (
        rule.fa_tolerance
        if rule.fa_tolerance is not None
        else _Z_ONE_SIDED_95 * math.sqrt(alpha * (1.0 - alpha) / max(n_nominal, 1))
    )
    bound = max(alpha, fa.champion) + tol
    checks.append(
        Check(
            "false alarms",
            fa.challenger <= bound,
            f"challenger flags {_fmt(fa.challenger)} of {n_nominal} nominal images at alpha {alpha:g} "
            f"(champion {_fmt(fa.champion)}); allowed ≤ max(alpha, champion) + {tol:.3f} = {bound:.3f}",
            {
                "challenger": fa.challenger,
                "champion": fa.champion,
                "alpha": alpha,
                "tolerance": tol,
                "bound": bound,
            },
        )
    )
    return checks


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
) -> Comparison:
    """:func:`compare` on embeddings already made: one array when both detectors share a backbone, else
    ``(champion's, challenger's)``."""
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
        settings={
            "nominal": list(nominal),
            "n_boot": n_boot,
            "seed": seed,
            "level": level,
            "alpha": alpha,
            "ece_bins": ECE_BINS,
            "gate": rule.to_json(),
        },
        embeddings={"shared": not isinstance(embeddings, tuple)},
    )


def _model_info(det: NoveltyDetector, out: ModelOutputs, path: str | None = None) -> dict[str, Any]:
    from novelty.flywheel.record import config_hash, detector_params

    return {
        "path": path,
        "artifact_id": det.artifact_id_,
        "config_hash": config_hash(detector_params(det)),
        "alpha": out.alpha,
        "classes": out.classes,
        "backbone": det.backbone,
    }


def _config_check(champion: NoveltyDetector, challenger: NoveltyDetector, allow: bool) -> Check:
    from novelty.flywheel.record import config_hash, detector_params, param_diff

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
    from novelty.flywheel.record import locate, params_from_artifact

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
    from novelty.flywheel.record import load_champion

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
    d1._require_fitted()
    d2._require_fitted()
    return d1, r1, path1, d2, r2, path2


def _as_dataset(ds: Dataset | str | os.PathLike[str]) -> Dataset:
    from novelty.flywheel.dataset import Dataset

    return ds if isinstance(ds, Dataset) else Dataset.open(ds)


def parse_dataset_arg(text: str) -> tuple[str, int | None]:
    """``"DATASET"`` or ``"DATASET:VERSION"`` → (path, version or None)."""
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and head:
        return head, int(tail)
    return text, None


def _leakage(entries: Sequence[Entry], records: Sequence[tuple[str, TrainingRecord | None]]) -> Check:
    """Test images (by content hash) that are also in a detector's training data (from its record)."""
    from novelty.flywheel.dataset import Dataset, DatasetError

    test = {e.sha256 for e in entries}
    found: dict[str, int] = {}
    unchecked = []
    for who, rec in records:
        if rec is None or rec.dataset is None:
            unchecked.append(f"{who} (no training record)")
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

    from novelty.flywheel.dataset import embedder_key

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
        leakage=_leakage(entries, [("champion", r1), ("challenger", r2)]),
        config_check=config_check,
    )
    return Comparison(
        rows=rows,
        checks=checks,
        champion=_model_info(d1, o1, path1),
        challenger=_model_info(d2, o2, path2),
        settings={
            "nominal": list(nominal),
            "n_boot": n_boot,
            "seed": seed,
            "level": level,
            "alpha": alpha,
            "ece_bins": ECE_BINS,
            "gate": rule.to_json(),
        },
        test=test_ref,
        new_slice=new_ref,
        embeddings={"shared": shared, "backbones": sorted({d1.backbone, d2.backbone})},
    )


def _embed(entries: Sequence[Entry], caches: Sequence[Path | None], embedder: Any) -> np.ndarray:
    """Embeddings of ``entries`` in order, each through its own dataset's cache."""
    from novelty.flywheel.dataset import embed_entries

    out: np.ndarray | None = None
    for cache_dir in dict.fromkeys(caches):
        idx = [i for i, c in enumerate(caches) if c == cache_dir]
        x = embed_entries([entries[i] for i in idx], embedder, cache_dir)
        if out is None:
            out = np.empty((len(entries), x.shape[1]), dtype=np.float32)
        out[idx] = x
    assert out is not None
    return out


# --- the report -------------------------------------------------------------------------------------
@functools.cache
def _template() -> Any:
    """The report template, autoescaped; every value passes the batch report's ``clean_text`` first."""
    import html

    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    from novelty.batch.report import clean_text

    def finalize(value: Any) -> Any:  # html.escape also escapes quotes, as attribute values need
        return value if isinstance(value, Markup) else Markup(html.escape(clean_text(value), quote=True))

    env = Environment(
        loader=PackageLoader("novelty.flywheel", "templates"),
        autoescape=select_autoescape(["html", "html.j2"], default=True),
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template("compare.html.j2")


def render_report(c: Comparison) -> str:
    """The comparison as one self-contained HTML page (autoescaped template, inline CSS and SVG)."""
    cols = [m for m in METRICS if any(m in r.metrics for r in c.rows)]
    span = {
        m: max(
            (
                max(abs(d.ci_low), abs(d.ci_high), abs(d.diff))
                for r in c.rows
                if (d := r.metrics.get(m)) is not None and math.isfinite(d.ci_low)
            ),
            default=0.0,
        )
        for m in cols
    }
    rows = []
    for r in c.rows:
        cells: list[dict[str, Any] | None] = []
        for m in cols:
            d = r.metrics.get(m)
            if d is None:
                cells.append(None)
                continue
            cells.append(
                {
                    "champion": _fmt(d.champion),
                    "challenger": _fmt(d.challenger),
                    "diff": _fmt(d.diff, True),
                    "ci": f"[{_fmt(d.ci_low, True)}, {_fmt(d.ci_high, True)}]",
                    "bar": _ci_bar(d, span[m], better=_BETTER[m]),
                }
            )
        rows.append(
            {
                "row": r,
                "cells": cells,
                "mcnemar": None if r.mcnemar is None else f"{r.mcnemar['p_value']:.3g}",
            }
        )
    return _template().render(
        c=c,
        data=c.to_json(),
        cols=[(m, _TITLES[m], _BETTER[m]) for m in cols],
        rows=rows,
        checks=c.checks,
    )


_TITLES = {
    "accuracy": "head accuracy",
    "ece": "calibration error (ECE)",
    "auroc": "novelty AUROC",
    "false_alarm_rate": "false alarms at alpha",
}
_BETTER = {"accuracy": 1, "ece": -1, "auroc": 1, "false_alarm_rate": -1}


def _ci_bar(d: MetricDiff, span: float, *, better: int, width: int = 160, height: int = 18) -> Any:
    """An inline SVG: the interval of the difference as a bar around 0, the point estimate as a tick;
    green when the whole interval is on the better side of 0, red when on the worse side, grey otherwise."""
    from markupsafe import Markup

    if not (math.isfinite(d.ci_low) and math.isfinite(d.ci_high)):
        return ""
    s = span if span > 0 else 1.0
    s *= 1.1

    def x(v: float) -> float:
        return width / 2 + (v / s) * (width / 2 - 4)

    lo, hi, mid = x(d.ci_low), x(d.ci_high), x(d.diff)
    good = d.ci_low > 0 if better > 0 else d.ci_high < 0
    bad = d.ci_high < 0 if better > 0 else d.ci_low > 0
    color = "#2e7d32" if good else "#c62828" if bad else "#757575"
    title = f"{d.diff:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
    return Markup(
        f'<svg class="ci" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
        f"<title>{title}</title>"
        f'<line x1="{width / 2:.1f}" y1="1" x2="{width / 2:.1f}" y2="{height - 1}" stroke="#999" stroke-dasharray="2,2"/>'
        f'<rect x="{lo:.1f}" y="{height / 2 - 3:.1f}" width="{max(hi - lo, 1.0):.1f}" height="6" fill="{color}" opacity="0.55"/>'
        f'<line x1="{mid:.1f}" y1="2" x2="{mid:.1f}" y2="{height - 2}" stroke="{color}" stroke-width="2"/>'
        "</svg>"
    )
