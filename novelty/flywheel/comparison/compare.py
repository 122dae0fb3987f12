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

import json
import math
import os
import re
import textwrap
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import atomic_write_text, read_regular_file, sha256_bytes
from novelty.flywheel.comparison.gate import JUDGED, Check, GateRule, judge, trust_check
from novelty.flywheel.comparison.paired import (
    ECE_BINS,
    bootstrap_weights,
    expected_calibration_error,
    mcnemar_exact,
    weighted_auroc,
    weighted_ece,
    weighted_mean,
)
from novelty.flywheel.comparison.report import METRICS, fmt
from novelty.params import check_int, check_real

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

FORMAT = "novelty-comparison"
FORMAT_VERSION = 1
_MAX_FILE = 64 << 20  # a larger comparison file is not one of ours
UNSPECIFIED = "unspecified"
#: the trusted-but-wrong images a comparison keeps per side (their counts are of all of them)
TRUSTED_WRONG_SHOWN = 48


class ComparisonError(NoveltyError, ValueError):
    """Two detectors cannot be compared on this data (other parameters, unknown classes, no nominal images…)."""


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

    @classmethod
    def from_json(cls, doc: Any) -> MetricDiff:
        if not isinstance(doc, dict) or not isinstance(doc.get("ci"), list) or len(doc["ci"]) != 2:
            raise ValueError("a metric needs champion, challenger, diff and a two-number ci")
        return cls(
            *(_real(v) for v in (doc.get("champion"), doc.get("challenger"), doc.get("diff"), *doc["ci"]))
        )

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

    @classmethod
    def from_json(cls, doc: Any) -> Row:
        if not isinstance(doc, dict):
            raise ValueError(f"a row must be an object, got {type(doc).__name__}")
        name, kind, metrics, mc = doc.get("name"), doc.get("kind"), doc.get("metrics"), doc.get("mcnemar")
        if (
            not isinstance(name, str)
            or kind not in ("all", "slice", "condition")
            or not isinstance(metrics, dict)
        ):
            raise ValueError("a row needs a name, a kind (all, slice or condition) and its metrics")
        if mc is not None and not (
            isinstance(mc, dict)
            and all(isinstance(mc.get(k), int) and not isinstance(mc.get(k), bool) for k in ("b", "c"))
        ):
            raise ValueError(f"row {name!r}: mcnemar must hold the integers b and c, and p_value")
        if mc is not None:
            mc = {"b": mc["b"], "c": mc["c"], "p_value": _real(mc.get("p_value"))}
        n, n_units, nominal = doc.get("n"), doc.get("n_units"), doc.get("nominal")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (n, n_units)):
            raise ValueError(f"row {name!r}: n and n_units must be integers ≥ 0")
        if not isinstance(nominal, bool):
            raise ValueError(f"row {name!r}: nominal must be true or false")
        return cls(
            name=name,
            kind=kind,
            n=int(n),  # type: ignore[arg-type]  # checked above
            n_units=int(n_units),  # type: ignore[arg-type]
            nominal=nominal,
            metrics={str(k): MetricDiff.from_json(v) for k, v in metrics.items()},
            mcnemar=mc,
        )


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
    trusted_wrong: dict[str, Any] | None = None  # see trusted_wrong(); shown, never judged
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
            "trusted_wrong": self.trusted_wrong,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Comparison:
        """A comparison as :meth:`to_json` wrote it; :class:`ComparisonError` names what is missing or wrong."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ComparisonError(
                f'not a {FORMAT} file (no "format": "{FORMAT}"); write one with novelty compare'
            )
        if doc.get("format_version") != FORMAT_VERSION:
            raise ComparisonError(
                f"comparison format version {doc.get('format_version')!r} is not read by this release "
                f"(reads {FORMAT_VERSION})"
            )
        try:
            for key in ("champion", "challenger", "settings"):
                if not isinstance(doc.get(key), dict):
                    raise ValueError(f"'{key}' must be an object")
            for key in ("rows", "checks"):
                if not isinstance(doc.get(key), list) or not doc[key]:
                    raise ValueError(f"'{key}' must be a non-empty list")
            for key in ("test", "new_slice"):
                if doc.get(key) is not None and not isinstance(doc[key], dict):
                    raise ValueError(f"'{key}' must be an object or null")
            rows = [Row.from_json(r) for r in doc["rows"]]
            if rows[0].kind != "all":
                raise ValueError("the first row must be the row 'all'")
            return cls(
                rows=rows,
                checks=[Check.from_json(c) for c in doc["checks"]],
                champion=dict(doc["champion"]),
                challenger=dict(doc["challenger"]),
                settings=dict(doc["settings"]),
                test=doc.get("test"),
                new_slice=doc.get("new_slice"),
                embeddings=dict(doc.get("embeddings") or {}),
                trusted_wrong=_trusted_wrong_from_json(doc.get("trusted_wrong")),
                created=str(doc.get("created") or ""),
            )
        except (ValueError, TypeError, KeyError) as e:
            raise ComparisonError(f"not a comparison written by novelty compare: {e}") from None

    def rejudge(self) -> list[str]:
        """Judge the recorded numbers again with the recorded rule and alphas. Returns what disagrees with the
        recorded checks (empty when every gate check, as recorded, is what its numbers give)."""
        try:
            rule = GateRule.from_json(self.settings.get("gate"))
            alphas = [
                check_real(
                    side.get("alpha"), f"{who}.alpha", low=0.0, high=1.0, low_open=True, high_open=True
                )
                for who, side in (("champion", self.champion), ("challenger", self.challenger))
            ]
        except (ValueError, TypeError, NoveltyError) as e:
            return [f"the recorded gate settings cannot be judged ({e})"]
        n_nominal = sum(r.n for r in self.rows if r.kind == "condition" and r.nominal)
        judged = judge(self.rows, rule, self.has_head, alphas[0], alphas[1], n_nominal)
        recorded = {c.name: c.passed for c in self.checks if c.name in JUDGED}
        problems = []
        for c in judged:
            if c.name not in recorded:
                problems.append(f"the check {c.name!r} is missing")
            elif recorded[c.name] is not c.passed:
                tag = {True: "PASS", False: "FAIL", None: "INFO"}
                problems.append(
                    f"{c.name!r} is recorded as {tag[recorded[c.name]]} but its numbers give {tag[c.passed]}"
                )
        trust = next((c for c in self.checks if c.name == "trusted error rate"), None)
        if trust is not None:
            v = trust.values
            again = trust_check(
                self.rows, v.get("risk"), float(v.get("margin", rule.margin)), v.get("counts") or {}
            )
            if again.passed is not trust.passed:
                problems.append(
                    f"'trusted error rate' is recorded as {trust.passed} but its numbers give {again.passed}"
                )
        extra = sorted(set(recorded) - {c.name for c in judged})
        problems += [f"the check {name!r} does not follow from the numbers" for name in extra]
        return problems

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the comparison as JSON, atomically."""
        text = json.dumps(self.to_json(), indent=1, ensure_ascii=False, allow_nan=False)
        return atomic_write_text(Path(path), text + "\n")

    def write_report(self, path: str | os.PathLike[str]) -> Path:
        """Write the self-contained HTML report, atomically."""
        return atomic_write_text(Path(path), render_report(self))

    def table(self) -> str:
        """The rows as plain text within 100 columns: the metrics two at a time, one line per row, each cell
        ``champion→challenger difference [interval]``; then the trusted-but-wrong counts."""
        width, cell_w = 100, 34
        titles = {
            "accuracy": "accuracy",
            "ece": "calibration error (ECE)",
            "coverage": "trusted share (coverage)",
            "selective_risk": "errors among trusted",
            "auroc": "novelty AUROC",
            "false_alarm_rate": "false alarms at alpha",
        }

        def num(x: float, signed: bool = False) -> str:
            return f"{fmt(x, signed):>{6 if signed else 5}}"

        def cell(d: MetricDiff | None) -> str:
            if d is None:
                return "—".ljust(cell_w)
            return f"{num(d.champion)}→{num(d.challenger)} {num(d.diff, True)} [{num(d.ci_low, True)},{num(d.ci_high, True)}]"

        cols = [m for m in METRICS if any(m in r.metrics for r in self.rows)]
        level = self.settings.get("level", 0.95)
        pct = f"{float(level) * 100:g} % " if isinstance(level, (int, float)) else ""
        n_w = max(1, *(len(str(r.n)) for r in self.rows))
        name_w = max(3, min(max(len(r.name) for r in self.rows), width - n_w - 1 - 2 * (cell_w + 2)))
        lines = [f"each cell: champion→challenger, difference (challenger − champion) [{pct}interval]"]
        for k in range(0, len(cols), 2):
            group = cols[k : k + 2]
            head = f"{'row':<{name_w}} {'n':>{n_w}}  " + "  ".join(f"{titles[m]:<{cell_w}}" for m in group)
            lines += ["", head.rstrip(), "-" * (name_w + n_w + 1 + len(group) * (cell_w + 2))]
            for r in self.rows:
                name = r.name if len(r.name) <= name_w else r.name[: name_w - 1] + "…"
                cells = "  ".join(cell(r.metrics.get(m)) for m in group)
                lines.append(f"{name:<{name_w}} {r.n:>{n_w}}  {cells}".rstrip())
        if self.trusted_wrong is not None:
            lines.append("")
            for who in ("champion", "challenger"):
                side = self.trusted_wrong[who]
                per = ", ".join(f"{c}: {k}" for c, k in side["by_condition"].items())
                text = f"{who + ':':<12} trusted but wrong: {side['n']}" + (f" ({per})" if per else "")
                lines += textwrap.wrap(text, width, subsequent_indent=" " * 13, break_on_hyphens=False)
        return "\n".join(lines)


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
    if not (champion.has_head and challenger.has_head):
        return None
    if champion.trusted is None or challenger.trusted is None:
        return None
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
    for who, m in (("champion", champion), ("challenger", challenger)):
        assert m.predictions is not None and m.trusted is not None  # has_head and checked above
        if m.predictions.shape[0] != n or m.trusted.shape[0] != n:
            raise InvalidInputError(f"the {who}'s outputs do not have {n} entries, one per image")
        comp = (
            np.full(n, np.nan)
            if m.competence is None
            else np.asarray(m.competence, dtype=np.float64).reshape(-1)
        )
        if comp.shape[0] != n:
            raise InvalidInputError(f"the {who}'s competence has {comp.shape[0]} entries for {n} images")
        hit = np.flatnonzero(np.asarray(m.trusted, dtype=bool) & (m.predictions != y))
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
                    "prediction": str(m.predictions[i]),
                    "competence": _num(comp[i]),
                }
                for i in kept
            ],
        }
    return out


def _trusted_wrong_from_json(doc: Any) -> dict[str, Any] | None:
    """The ``trusted_wrong`` section as :func:`trusted_wrong` made it (absent or null: ``None``); else
    :class:`ValueError` naming what is wrong."""
    if doc is None:
        return None
    if not isinstance(doc, dict) or set(doc) != {"champion", "challenger"}:
        raise ValueError("'trusted_wrong' must be an object with exactly 'champion' and 'challenger'")
    out = {}
    for who in ("champion", "challenger"):
        side, where = doc[who], f"'trusted_wrong.{who}'"
        if not isinstance(side, dict):
            raise ValueError(f"{where} must be an object with n, by_condition and items")
        n, by, items = side.get("n"), side.get("by_condition"), side.get("items")
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            raise ValueError(f"{where}.n must be an integer ≥ 0, got {n!r}")
        if not (
            isinstance(by, dict)
            and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in by.values())
        ):
            raise ValueError(f"{where}.by_condition must map each condition to an integer ≥ 0")
        if sum(by.values()) != n:
            raise ValueError(f"{where}: the counts by condition add up to {sum(by.values())}, not n = {n}")
        if not isinstance(items, list) or len(items) > n:
            raise ValueError(f"{where}.items must be a list of at most n = {n} images")
        kept = []
        for k, it in enumerate(items):
            if not isinstance(it, dict):
                raise ValueError(f"{where}.items[{k}] must be an object")
            texts = ("id", "slice", "condition", "label", "prediction")
            bad = [f for f in texts if not isinstance(it.get(f), str)]
            if it.get("path") is not None and not isinstance(it.get("path"), str):
                bad.append("path")
            if bad:
                raise ValueError(f"{where}.items[{k}]: {', '.join(bad)} must be text")
            if it["condition"] not in by:
                raise ValueError(f"{where}.items[{k}]: condition {it['condition']!r} is not in by_condition")
            comp = None if it.get("competence") is None else _real(it["competence"])
            if comp is not None and not math.isfinite(comp):
                raise ValueError(f"{where}.items[{k}]: competence must be a finite number or null")
            kept.append(
                {
                    "id": it["id"],
                    "path": it.get("path"),
                    **{f: it[f] for f in texts[1:]},
                    "competence": comp,
                }
            )
        out[who] = {"n": n, "by_condition": {str(c): v for c, v in by.items()}, "items": kept}
    return out


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _real(x: Any) -> float:
    """A recorded number back (``null`` is NaN); anything else raises ``ValueError``."""
    if x is None:
        return math.nan
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"expected a number or null, got {type(x).__name__}")
    return float(x)


@dataclass(frozen=True)
class ComparisonFile:
    """A comparison read back from its file: the comparison, the file and the sha256 of its bytes."""

    comparison: Comparison
    path: Path
    sha256: str
    recorded_passed: bool  # the file's "passed"

    @property
    def passed(self) -> bool:
        """The verdict the recorded checks give (not the file's ``passed`` field: see :meth:`problems`)."""
        return self.comparison.passed

    def problems(self) -> list[str]:
        """Why this file cannot be taken at its word: its gate checks disagree with its numbers
        (:meth:`Comparison.rejudge`), or its ``passed`` with its checks. Empty when it holds together."""
        out = self.comparison.rejudge()
        if self.recorded_passed != self.comparison.passed:
            out.append(
                f"'passed' is recorded as {str(self.recorded_passed).lower()} but its checks give "
                f"{str(self.comparison.passed).lower()}"
            )
        return out

    @property
    def champion_id(self) -> str | None:
        return _artifact_id(self.comparison.champion, "champion", self.path)

    @property
    def challenger_id(self) -> str:
        aid = _artifact_id(self.comparison.challenger, "challenger", self.path)
        if aid is None:
            raise ComparisonError(f"comparison file {self.path} names no challenger.artifact_id")
        return aid


def _artifact_id(side: dict[str, Any], who: str, path: Path) -> str | None:
    aid = side.get("artifact_id")
    if aid is None:
        return None
    if not (isinstance(aid, str) and re.fullmatch(r"[0-9a-f]{64}", aid)):
        raise ComparisonError(f"comparison file {path}: '{who}.artifact_id' is not a sha256 hex string")
    return aid


def load_comparison(path: str | os.PathLike[str]) -> ComparisonFile:
    """Read a comparison file written by :meth:`Comparison.save` (the one reader of that format)."""
    p = Path(path)
    try:
        raw = read_regular_file(p, max_bytes=_MAX_FILE)
    except FileNotFoundError:
        raise ComparisonError(
            f"comparison file {p} does not exist (write one with novelty compare)"
        ) from None
    except (OSError, OverflowError) as e:
        raise ComparisonError(f"comparison file {p} cannot be read ({e})") from e
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ComparisonError(f"comparison file {p} is not valid JSON ({e})") from e
    try:
        comp = Comparison.from_json(doc)
    except ComparisonError as e:
        raise ComparisonError(f"comparison file {p}: {e}") from None
    recorded = doc.get("passed")
    if not isinstance(recorded, bool):
        raise ComparisonError(f"comparison file {p}: 'passed' must be true or false, got {recorded!r}")
    out = ComparisonFile(
        comparison=comp, path=p.resolve(), sha256=sha256_bytes(raw), recorded_passed=recorded
    )
    _ = out.challenger_id, out.champion_id  # both ids are checked when the file is read
    return out


# --- the comparison on outputs ----------------------------------------------------------------------
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
    if with_head and champion.trusted is not None and challenger.trusted is not None:
        t1, t2 = champion.trusted.astype(np.float64), challenger.trusted.astype(np.float64)
    if with_head:
        assert champion.predictions is not None and challenger.predictions is not None
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
        if with_head and c1 is not None and c2 is not None:
            assert champion.confidence is not None and challenger.confidence is not None
            metrics["accuracy"] = diff(weighted_mean(Wm, c1[mask]), weighted_mean(Wm, c2[mask]))
            metrics["ece"] = diff(
                weighted_ece(Wm, c1[mask], champion.confidence[mask]),
                weighted_ece(Wm, c2[mask], challenger.confidence[mask]),
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
    from novelty.flywheel.record import config_hash, detector_params

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


def _leakage(
    entries: Sequence[Entry],
    records: Sequence[tuple[str, TrainingRecord | None]],
    detectors: Sequence[NoveltyDetector | None] = (),
) -> Check:
    """Test images (by content hash) that are also in a detector's training data: from its record's dataset,
    else from the sha256 of its training images kept in the artifact (``trained_sha256_``)."""
    from novelty.flywheel.dataset import Dataset, DatasetError

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


def render_report(c: Comparison) -> str:
    """The comparison as one self-contained HTML page (see :mod:`novelty.flywheel.comparison.report`)."""
    from novelty.flywheel.comparison.report import render_report as render

    return render(c)
