"""The record of a comparison: :class:`Comparison` (its rows of :class:`MetricDiff` per :class:`Row`, the
gate's checks, both models, the settings), written as ``comparison.json`` by :meth:`Comparison.save` and read
back, checked, by :func:`load_comparison`, the one reader of that file (:class:`ComparisonFile`, with
:meth:`Comparison.rejudge` to hold the recorded verdict to its numbers). How the numbers are made:
:mod:`novelty.flywheel.comparison.compare`."""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novelty.clock import utc_now_iso
from novelty.errors import NoveltyError
from novelty.fileio import atomic_write_text, read_regular_file, sha256_bytes
from novelty.flywheel.comparison.gate import JUDGED, Check, GateRule, judge, trust_check
from novelty.flywheel.comparison.report import METRICS, fmt
from novelty.flywheel.comparison.report import render_report as _render_report
from novelty.params import check_real

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Comparison",
    "ComparisonError",
    "ComparisonFile",
    "MetricDiff",
    "Row",
    "load_comparison",
    "render_report",
]

FORMAT = "novelty-comparison"
FORMAT_VERSION = 1
_MAX_FILE = 64 << 20  # a larger comparison file is not one of ours


class ComparisonError(NoveltyError, ValueError):
    """Two detectors cannot be compared on this data (other parameters, unknown classes, no nominal images…)."""


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
    created: str = field(default_factory=utc_now_iso)

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


def render_report(c: Comparison) -> str:
    """The comparison as one self-contained HTML page (see :mod:`novelty.flywheel.comparison.report`)."""
    return _render_report(c)
