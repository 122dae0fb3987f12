"""The promotion gate: when a challenger replaces the champion.

With a head on both detectors:

1. *gain*: the overall accuracy gain (point estimate) ≥ ``min_gain`` (default 0.01);
2. *significant*: the gain's bootstrap interval lies above 0 **and** McNemar's exact p < ``mcnemar_level``
   (0.05) — the interval is clustered by near-duplicate groups, McNemar treats images as independent, so
   both are asked for;
3. *no condition worse*: no condition's (nor slice's) accuracy difference below ``−margin`` (default 0.02),
   judged on the point estimate;
4. *false alarms*: the challenger's false-alarm rate on all nominal images ≤ max(alpha, the champion's rate)
   + tolerance; the tolerance defaults to the one-sided 95 % binomial margin ``1.645·√(α(1−α)/n_nominal)``,
   so a challenger keeps the promise of the champion at least as well, up to the noise of the test set;
5. *no leakage* (added by :func:`novelty.flywheel.comparison.compare.compare`): no test image in either detector's
   training data;
6. *trusted error rate* (with a head; :func:`trust_check`): on no condition does the challenger's error rate
   among its trusted predictions lie significantly above the ε its trust decision states, or above the
   champion's by more than ``margin``.

With a head, novelty AUROC is reported, not gated: teaching the head a condition is meant to make that
condition familiar. **When either detector has no head** the gate runs on novelty alone: 1–3 use the
overall novelty AUROC (nominal images against all others) and each non-nominal condition's AUROC instead of
accuracy (no McNemar); 4 and 5 as above. A challenger is promoted only when every check passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from novelty.flywheel.comparison.report import fmt
from novelty.params import check_real
from novelty.trust import binomial_cdf

if TYPE_CHECKING:
    from novelty.flywheel.comparison.result import Row

__all__ = ["JUDGED", "OPTIONS", "TRUST_LEVEL", "Check", "GateRule", "judge", "trust_check"]

#: the checks :func:`judge` computes from a comparison's numbers (the others are recorded facts)
JUDGED = ("gain", "significant", "no condition worse", "false alarms")

_Z_ONE_SIDED_95 = 1.6448536269514722

#: the option of ``novelty compare`` that sets the threshold of a check
OPTIONS = {"gain": "--min-gain", "no condition worse": "--margin", "false alarms": "--fa-tolerance"}


@dataclass(frozen=True)
class Check:
    """One check of the gate: ``passed`` is True / False, or None for information only."""

    name: str
    passed: bool | None
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "message": self.message, "values": self.values}

    @classmethod
    def from_json(cls, doc: Any) -> Check:
        """A check as :meth:`to_json` wrote it (:class:`ValueError` naming the bad field otherwise)."""
        if not isinstance(doc, dict):
            raise ValueError(f"a check must be an object, got {type(doc).__name__}")
        name, passed, message, values = (doc.get(k) for k in ("name", "passed", "message", "values"))
        if not isinstance(name, str) or not (passed is None or isinstance(passed, bool)):
            raise ValueError(f"a check needs a name and passed true, false or null; got {name!r}, {passed!r}")
        return cls(name, passed, str(message or ""), dict(values) if isinstance(values, dict) else {})

    def line(self) -> str:
        tag = {True: "PASS", False: "FAIL", None: "INFO"}[self.passed]
        return f"{tag} {self.name}: {self.message}"

    def failure(self) -> str:
        """The check as a reason not to promote: its :meth:`line` (a gain below the minimum said in words),
        followed by the ``novelty compare`` option that sets its threshold."""
        option = OPTIONS.get(self.name)
        if self.passed is not False:
            return self.line()
        v = self.values
        gain, min_gain, champion, challenger = (
            _number(v.get(k)) for k in ("gain", "min_gain", "champion", "challenger")
        )
        if (
            self.name == "gain"
            and gain is not None
            and min_gain is not None
            and champion is not None
            and challenger is not None
        ):
            what = "accuracy" if v.get("metric") == "accuracy" else "novelty AUROC"
            return (
                f"FAIL gain: the {what} gain {fmt(gain, True)} ({fmt(champion)} → {fmt(challenger)}) is below the "
                f"minimum gain {fmt(min_gain, True)} ({option})"
            )
        return self.line() + (f" ({option})" if option else "")


def _number(x: Any) -> float | None:
    """A recorded number (``None`` for anything else: a missing value, text, ``true``, NaN)."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


@dataclass(frozen=True)
class GateRule:
    """When a challenger is promoted (see the module docstring)."""

    min_gain: float = 0.01
    margin: float = 0.02
    fa_tolerance: float | None = None  # None: 1.645·√(α(1−α)/n_nominal)
    mcnemar_level: float = 0.05

    def __post_init__(self) -> None:
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

    @classmethod
    def from_json(cls, doc: Any) -> GateRule:
        """The rule as :meth:`to_json` wrote it; a missing or wrongly typed field raises ``ValueError``."""
        if not isinstance(doc, dict) or set(doc) != {"min_gain", "margin", "fa_tolerance", "mcnemar_level"}:
            raise ValueError(
                "the gate rule must hold exactly min_gain, margin, fa_tolerance and mcnemar_level"
            )
        return cls(**doc)  # __post_init__ checks every value


def judge(
    rows: list[Row],
    rule: GateRule,
    with_head: bool,
    champion_alpha: float,
    challenger_alpha: float,
    n_nominal: int,
) -> list[Check]:
    """The gate's checks 1–4 on a comparison's rows (``rows[0]`` is ``all``); see the module docstring."""
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
                f"{what} {fmt(d.champion)} → {fmt(d.challenger)} ({fmt(d.diff, True)}); needs ≥ "
                f"{fmt(rule.min_gain, True)}",
                {
                    "metric": metric,
                    "champion": d.champion,
                    "challenger": d.challenger,
                    "gain": d.diff,
                    "min_gain": rule.min_gain,
                },
            )
        )
        ci = f"interval [{fmt(d.ci_low, True)}, {fmt(d.ci_high, True)}]"
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
            f"{name} {fmt(dd, True)} [{fmt(lo, True)}, {fmt(hi, True)}]" for name, dd, lo, hi in worse
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
        detail = "" if lowest is None else f" (lowest: {lowest[0]} {fmt(lowest[1], True)})"
        checks.append(
            Check(
                "no condition worse",
                True,
                f"no condition's {what} falls by more than {rule.margin:g}{detail}",
                {"margin": rule.margin, "judged": judged},
            )
        )
    fa = overall.metrics["false_alarm_rate"]
    alpha = challenger_alpha
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
            f"challenger flags {fmt(fa.challenger)} of {n_nominal} nominal images at alpha {alpha:g} "
            f"(champion {fmt(fa.champion)}); allowed ≤ max(alpha, champion) + {tol:.3f} = {bound:.3f}",
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


TRUST_LEVEL = 0.05  # a condition fails when its trusted error rate is above ε at this significance


def trust_check(
    rows: list[Row],
    risk: float | None,
    margin: float,
    counts: dict[str, tuple[int, int]] | dict[str, list[int]],
) -> Check:
    """The trust check: on ``all`` and on every condition, the challenger's error rate among its trusted
    predictions must not lie significantly above its stated ε (one-sided exact binomial test at
    :data:`TRUST_LEVEL` on its ``counts`` = {row: (trusted, wrong)}), nor above the champion's by more than
    ``margin`` (point estimates). Information only for a challenger of the legacy rule (no ε stated)."""
    values: dict[str, Any] = {"risk": risk, "margin": margin, "level": TRUST_LEVEL, "counts": dict(counts)}
    if risk is None:
        return Check(
            "trusted error rate",
            None,
            "the challenger uses the legacy trust rule (trusted = not novel): it states no error rate; refit it "
            "with a trust rule (novelty.trust) to have the gate check one",
            values,
        )
    bad, judged = [], []
    for r in rows:
        if r.kind == "slice" or r.name not in counts:
            continue
        n, wrong = (int(v) for v in counts[r.name])
        if n == 0:
            continue
        judged.append(r.name)
        p_excess = 1.0 - binomial_cdf(wrong - 1, n, risk)  # P(Binomial(n, ε) ≥ wrong)
        sr = r.metrics.get("selective_risk")
        rise = sr.diff if sr is not None and math.isfinite(sr.diff) else None
        if p_excess < TRUST_LEVEL:
            bad.append(
                f"{r.name}: {wrong} wrong of {n} trusted ({wrong / n:.1%}; p = {p_excess:.2g} against ε {risk:g})"
            )
        elif rise is not None and rise > margin:
            bad.append(
                f"{r.name}: errors among trusted {fmt(rise, True)} against the champion (margin {margin:g})"
            )
    values["judged"] = judged
    if bad:
        return Check(
            "trusted error rate",
            False,
            "trusted predictions are wrong too often on " + "; ".join(bad),
            values,
        )
    return Check(
        "trusted error rate",
        True,
        f"no condition's trusted error rate lies above ε {risk:g} (p < {TRUST_LEVEL:g}) or rises by more than "
        f"{margin:g} ({len(judged)} rows judged)",
        values,
    )
