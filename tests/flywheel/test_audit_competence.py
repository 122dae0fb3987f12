"""The audit of auto-accepted answers is sized to vouch for the rule's ε (``audit="auto"``), and selection by
uncertainty ranks what the trust rule cannot vouch for first (``measure="competence"``)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from novelty.cli import main
from novelty.errors import InvalidInputError, UnknownNameError
from novelty.fileio import sha256_bytes
from novelty.flywheel.labels.labelling import AUDIT_AUTO_RULE, audit_size, export_selection
from novelty.flywheel.pools import Pool
from novelty.flywheel.selection import (
    UNCERTAINTY_MEASURES,
    Selection,
    SelectionError,
    default_measure,
    select,
    uncertainty_scores,
)
from novelty.flywheel.turn import FlywheelConfigError, load_config
from novelty.trust import DEFAULT_DELTA, binomial_cdf

TRUST = {"rule": "confidence", "risk": 0.05, "delta": 0.1, "thresholds": {"0.01": 0.97, "0.05": 0.9}}


# --- audit_size -----------------------------------------------------------------------------------------------
def _clean_upper_bound(n: int, delta: float) -> float:
    """The one-sided exact upper bound on an error rate at confidence 1 − δ after 0 errors in n: (1−p)ⁿ = δ."""
    return 1.0 - delta ** (1.0 / n)


@pytest.mark.parametrize(
    ("risk", "delta", "n"), [(0.05, 0.1, 45), (0.01, 0.1, 230), (0.05, 0.05, 59), (0.1, 0.1, 22)]
)
def test_audit_size_is_the_smallest_clean_audit_that_bounds_the_error_rate(risk, delta, n):
    assert audit_size(10_000, risk, delta) == n
    assert n == math.ceil(math.log(delta) / math.log(1 - risk))
    # n audited answers without an error bound the error rate by ε at 1 − δ; n − 1 do not
    assert _clean_upper_bound(n, delta) <= risk < _clean_upper_bound(n - 1, delta)
    assert binomial_cdf(0, n, risk) <= delta < binomial_cdf(0, n - 1, risk)


def test_one_error_widens_the_bound_past_epsilon():
    # the numbers the docstrings give: 1 wrong of 45 bounds the error rate by 8.4 % only; 77 are needed for 5 %
    def upper(k: int, n: int, delta: float = 0.1) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if binomial_cdf(k, n, mid) > delta else (lo, mid)
        return hi

    assert upper(1, 45) == pytest.approx(0.0837, abs=5e-4)
    assert upper(2, 45) == pytest.approx(0.1140, abs=5e-4)
    assert upper(1, 77) <= 0.05 < upper(1, 76)


def test_audit_size_is_capped_at_what_is_accepted_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="novelty.flywheel.labels.labelling"):
        assert audit_size(12, 0.05, 0.1) == 12
    assert "all 12 auto-accepted answer(s) are audited" in caplog.text and "needs 45" in caplog.text
    assert audit_size(45, 0.05, 0.1) == 45 and audit_size(46, 0.05, 0.1) == 45
    assert audit_size(0, 0.05, 0.1) == 0


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((100, 0.0, 0.1), r"error rate ε must lie in \(0, 1\), got 0.0"),
        ((100, 1.0, 0.1), r"error rate ε must lie in \(0, 1\), got 1.0"),
        ((100, 0.05, 0.0), r"δ must lie in \(0, 1\), got 0.0"),
        ((100, 0.05, 1.5), r"δ must lie in \(0, 1\), got 1.5"),
        ((-1, 0.05, 0.1), "n_accepted must be an integer ≥ 0, got -1"),
        ((2.5, 0.05, 0.1), "n_accepted must be an integer"),
    ],
)
def test_audit_size_refuses_bad_values(args, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        audit_size(*args)


# --- export with audit="auto" ---------------------------------------------------------------------------------
def _selection(tmp_path: Path, n: int, *, trust: dict | None = TRUST) -> Path:
    """selection.json of ``n`` confident, not novel, trusted items (competence 0.99: trusted at ε 0.01 too)."""
    items = []
    for i in range(n):
        items.append(
            {
                "id": f"item{i:03d}",
                "path": f"/data/item{i:03d}.jpg",
                "sha256": sha256_bytes(f"item{i}".encode()),
                "source": "folder:/data",
                "rank": i + 1,
                "reason": "test",
                "p_value": 0.5,
                "novelty": 0.5,
                "is_novel": False,
                "prediction": "dry",
                "probability": 0.97,
                "uncertainty": 0.03,
                "timestamp": None,
                "trusted": True if trust is not None else None,
                "competence": 0.99 if trust is not None else None,
            }
        )
    sel = {
        "format": "novelty-selection",
        "format_version": 1,
        "created": "2026-01-01T00:00:00Z",
        "strategy": "random",
        "budget": n,
        "seed": 0,
        "weights": {},
        "detector_id": "det-1",
        "model_version": "det-1",
        "classes": ["dry", "wet"],
        "alpha": 0.05,
        "trust": trust,
        "items": items,
    }
    path = tmp_path / "selection.json"
    path.write_text(json.dumps(sel))
    return path


def _manifest(out: Path) -> dict:
    return json.loads((out / "export.json").read_text())["auto_accept"]


def test_auto_audit_sends_the_sized_sample_to_people_and_records_it(tmp_path):
    sel = _selection(tmp_path, 100)
    res = export_selection(sel, tmp_path / "out", format="csv", auto_accept=True)  # audit="auto" by default
    assert res.audit_size == 45 and len(res.auto) == 55 and res.n_exported == 45
    m = _manifest(tmp_path / "out")
    assert m["audit_size"] == 45 and len(m["audit"]) == 45 and m["n"] == 55
    assert (m["audit_rule"], m["audit_risk"], m["audit_delta"], m["audit_share"]) == (
        AUDIT_AUTO_RULE,
        0.05,
        0.1,
        None,
    )
    # the audited ones are the ones people get, and none of them was accepted
    audited = {a["id"] for a in m["audit"]}
    labels_csv = (tmp_path / "out" / "labels.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in labels_csv} == audited
    assert audited.isdisjoint(e.id for e in res.auto)
    # ε of auto_risk sizes it: ε 0.01 needs 230, more than the 100 accepted → everything goes to people
    strict = export_selection(sel, tmp_path / "strict", format="csv", auto_accept=True, auto_risk=0.01)
    assert strict.audit_size == 100 and strict.auto == ()
    assert _manifest(tmp_path / "strict")["audit_risk"] == 0.01


def test_auto_audit_under_the_old_rule_uses_the_default_levels(tmp_path):
    sel = _selection(tmp_path, 60, trust=None)
    res = export_selection(sel, tmp_path / "out", format="csv", auto_accept=True, audit="auto")
    m = _manifest(tmp_path / "out")
    assert (m["audit_risk"], m["audit_delta"]) == (0.05, DEFAULT_DELTA)
    assert res.audit_size == 45 and len(res.auto) == 15


def test_a_share_keeps_its_meaning_and_zero_means_no_audit(tmp_path):
    sel = _selection(tmp_path, 100)
    res = export_selection(sel, tmp_path / "share", format="csv", auto_accept=True, audit=0.1)
    m = _manifest(tmp_path / "share")
    assert res.audit_size == 10 and len(res.auto) == 90
    assert (m["audit_rule"], m["audit_share"], m["audit_size"], m["audit_risk"]) == ("share", 0.1, 10, None)
    tiny = export_selection(sel, tmp_path / "tiny", format="csv", auto_accept=True, audit=0.001)
    assert tiny.audit_size == 1  # at least one
    none = export_selection(sel, tmp_path / "none", format="csv", auto_accept=True, audit=0)
    assert none.audit_size == 0 and len(none.auto) == 100 and _manifest(tmp_path / "none")["audit"] == []
    # without auto-accept the default audits nothing; a share asked for is refused
    plain = export_selection(sel, tmp_path / "plain", format="csv")
    assert plain.audit_size == 0 and plain.n_exported == 100
    with pytest.raises(InvalidInputError, match=r"audit=0\.1 applies to auto-accepted labels"):
        export_selection(sel, tmp_path / "x", format="csv", audit=0.1)


@pytest.mark.parametrize("bad", [1.5, -0.1, "half", "AUTO ", True, math.nan, None])
def test_a_bad_audit_is_refused_naming_the_value(tmp_path, bad):
    sel = _selection(tmp_path, 5)
    with pytest.raises(InvalidInputError, match=r"audit must be a share in \[0, 1\] or 'auto'.*got"):
        export_selection(sel, tmp_path / "x", format="csv", auto_accept=True, audit=bad)
    assert not (tmp_path / "x").exists()


# --- CLI and flywheel config accept "auto" ----------------------------------------------------------------------
def test_cli_audit_auto_share_and_default(tmp_path, capsys):
    sel = _selection(tmp_path, 50)
    base = ["export", str(sel), "--format", "csv"]
    assert main([*base, "--out", str(tmp_path / "d"), "--auto-accept"]) == 0  # default: auto
    assert _manifest(tmp_path / "d")["audit_size"] == 45
    assert "audit: 45 answer(s)" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "a"), "--auto-accept", "--audit", "auto"]) == 0
    assert _manifest(tmp_path / "a")["audit_rule"] == AUDIT_AUTO_RULE
    assert main([*base, "--out", str(tmp_path / "s"), "--auto-accept", "--audit", "0.2"]) == 0
    assert _manifest(tmp_path / "s")["audit_size"] == 10
    assert main([*base, "--out", str(tmp_path / "p")]) == 0  # no auto-accept: no audit
    assert _manifest(tmp_path / "p")["audit_size"] == 0
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "x"), "--auto-accept", "--audit", "lots"]) == 2
    assert "give auto or a share in [0, 1]" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "x"), "--audit", "auto"]) == 2
    assert "only apply with --auto-accept" in capsys.readouterr().err


_CONFIG = """registry = "reg"
dataset = "ds"
test = "test"
[select]
sources = ["in/"]
"""


@pytest.mark.parametrize(
    ("label", "want"), [("", "auto"), ('audit = "auto"\n', "auto"), ("audit = 0.25\n", 0.25)]
)
def test_config_audit_accepts_auto_or_a_share(tmp_path, label, want):
    p = tmp_path / "flywheel.toml"
    p.write_text(_CONFIG + "[label]\n" + label)
    assert load_config(p).audit == want


@pytest.mark.parametrize(
    ("value", "pattern"),
    [('"half"', r'audit must be "auto" or a share in \[0, 1\], got \'half\''), ("1.5", "audit must lie in")],
)
def test_config_audit_refuses_other_values(tmp_path, value, pattern):
    p = tmp_path / "flywheel.toml"
    p.write_text(_CONFIG + f"[label]\naudit = {value}\n")
    with pytest.raises(FlywheelConfigError, match=pattern):
        load_config(p)


# --- selection by competence ------------------------------------------------------------------------------------
def _pool(competence: np.ndarray | None, proba: np.ndarray) -> Pool:
    n = proba.shape[0]
    ids = [f"img{i:03d}" for i in range(n)]
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, 8))
    p = np.full(n, 0.5)
    return Pool(
        ids=ids,
        paths=[f"/data/{i}.jpg" for i in ids],
        sha256=[sha256_bytes(i.encode()) for i in ids],
        sources=[("folder:/data",)] * n,
        embeddings=(emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32),
        p_value=p,
        novelty=1 - p,
        score=-p,
        is_novel=p < 0.05,
        timestamps=[None] * n,
        alpha=0.05,
        detector_id="det-test",
        predictions=[["dry", "wet"][int(np.argmax(r))] for r in proba],
        probabilities=proba,
        classes=["dry", "wet"],
        trusted=None if competence is None else competence >= 0.9,
        competence=competence,
    )


# the head is surest where the trust rule vouches least (img001), and least sure where it vouches most (img003)
PROBA = np.array([[0.9, 0.1], [0.99, 0.01], [0.7, 0.3], [0.55, 0.45], [0.8, 0.2]])
COMPETENCE = np.array([0.95, 0.3, np.nan, 0.99, 0.6])


def test_competence_ranks_what_the_trust_rule_cannot_vouch_for_first():
    pool = _pool(COMPETENCE, PROBA)
    assert "competence" in UNCERTAINTY_MEASURES and default_measure(pool) == "competence"
    # an image without a competence (unreadable for the rule) counts as 0: first
    np.testing.assert_allclose(uncertainty_scores(pool), [0.05, 0.7, 1.0, 0.01, 0.4])
    sel = select(pool, 5, "uncertainty")
    assert [it.id for it in sel.items] == ["img002", "img001", "img004", "img000", "img003"]
    assert sel.measure == "competence" and "(1 − competence)" in sel.items[0].reason
    assert sel.items[1].uncertainty == pytest.approx(0.7)
    # the explicit measures still order by the head's probability
    lc = select(pool, 5, "uncertainty", measure="least-confidence")
    assert [it.id for it in lc.items] == ["img003", "img002", "img004", "img000", "img001"]
    assert lc.measure == "least-confidence"
    margin = select(pool, 5, "uncertainty", measure="margin")
    assert margin.items[0].id == "img003"
    # the measure travels with selection.json
    assert Selection.from_json(sel.to_json()).measure == "competence"


def test_hybrid_uncertainty_rank_uses_competence_by_default():
    pool = _pool(COMPETENCE, PROBA)
    w = {"novelty": 0.0, "uncertainty": 1.0}
    sel = select(pool, 2, "hybrid", weights=w, oversample=1, radius=0.0)
    assert {it.id for it in sel.items} == {"img002", "img001"}
    lc = select(pool, 2, "hybrid", weights=w, oversample=1, radius=0.0, measure="least-confidence")
    assert {it.id for it in lc.items} == {"img003", "img002"}


def test_without_competence_the_default_is_least_confidence():
    for comp in (None, np.full(5, np.nan)):  # an older detector; one keeping the legacy rule
        pool = _pool(comp, PROBA)
        assert default_measure(pool) == "least-confidence"
        sel = select(pool, 5, "uncertainty")
        assert sel.measure == "least-confidence"
        assert [it.id for it in sel.items] == ["img003", "img002", "img004", "img000", "img001"]
        with pytest.raises(SelectionError, match="'competence' needs the trust decision's competence"):
            select(pool, 2, "uncertainty", measure="competence")
    with pytest.raises(UnknownNameError, match="uncertainty measure 'entropy'"):
        select(_pool(COMPETENCE, PROBA), 2, "uncertainty", measure="entropy")


def test_cli_select_lists_the_competence_measure(capsys):
    assert main(["select", "--help"]) == 0
    out = capsys.readouterr().out
    assert "{competence,least-confidence,margin}" in out
