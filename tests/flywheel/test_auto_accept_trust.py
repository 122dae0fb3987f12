"""Auto-accept takes only trusted answers, at their own error rate: the trust decision (novelty.trust) travels from
the detector through the pool and selection.json to the export, which accepts a head's answer only where it is
trusted — at the detector's ε, or at the ε asked for (``auto_risk``) by the threshold the selection records.

The detector is real (kNN scorer, condition head, trust rule ``confidence+local-accuracy`` at ε = 0.05), fitted on
structured synthetic embeddings: two clean classes and, inside class "a", a tight corner whose labels are 30 %
wrong. There the head still answers "a" with probability ≥ 0.9 and the images are not novel — the old rule
accepts them — but their labelled neighbourhood shows the head cannot be vouched for: they are not trusted."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import novelty
from novelty.cli import main
from novelty.errors import InvalidInputError
from novelty.flywheel.dataset import Dataset, Entry
from novelty.flywheel.labels.assisted import auto_accepted, measure_assistance
from novelty.flywheel.labels.labelling import export_selection
from novelty.flywheel.pools import TRUST_RISKS, Pool, score_pool
from novelty.flywheel.selection import Selection, SelectionError, read_selection, select
from novelty.flywheel.turn import FlywheelConfigError, Turn, _export, load_config

DIM = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _blob(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float) -> np.ndarray:
    return _unit(centre + spread * rng.normal(size=(n, DIM)))


@pytest.fixture(scope="module")
def scored(embedder) -> tuple[novelty.NoveltyDetector, np.ndarray, Pool]:
    """A detector at ε = 0.05, the pool's embeddings and the pool it scores (130 images)."""
    rng = np.random.default_rng(0)
    a, b, corner = np.eye(DIM)[0], np.eye(DIM)[1], np.eye(DIM)[0] + 0.35 * np.eye(DIM)[2]
    # enough clean images that ε = 0.05 is certified: a neighbour vouches only within its own scale, and in 32
    # isotropic dimensions some of a point's ten nearest lie beyond it
    x = np.concatenate([_blob(rng, a, 600, 0.085), _blob(rng, b, 400, 0.085), _blob(rng, corner, 60, 0.04)])
    y = ["a"] * 600 + ["b"] * 400 + ["b" if u < 0.3 else "a" for u in rng.uniform(size=60)]
    det = novelty.NoveltyDetector(
        embedder=embedder,
        scorers=("knn",),
        calibration_fraction=0.3,
        head={"max_epochs": 30, "lr": 0.05},
        risk=0.05,
    ).fit_embeddings(x, y)
    emb = np.concatenate([_blob(rng, a, 60, 0.085), _blob(rng, b, 40, 0.085), _blob(rng, corner, 30, 0.04)])
    ids = [f"img{i:03d}" for i in range(emb.shape[0])]
    pool = score_pool(
        det,
        emb,
        ids=ids,
        paths=[f"/pool/{i}.png" for i in ids],
        sha256=[hashlib.sha256(i.encode()).hexdigest() for i in ids],
        sources=[("folder:/pool",)] * len(ids),
    )
    return det, emb, pool


@pytest.fixture
def selection(scored, tmp_path) -> Path:
    """The whole pool as a saved selection.json (chosen at random: every image, in some order)."""
    _, _, pool = scored
    sel = select(pool, len(pool), "random", seed=0)
    return sel.save(tmp_path / "sel" / "selection.json")


def _old_rule(sel_path: Path) -> set[str]:
    """What auto-accept took before the trust decision: p ≥ alpha and probability ≥ 0.9, a known class."""
    sel = read_selection(sel_path)
    return {
        it.id
        for it in sel.items
        if it.prediction in sel.classes
        and it.p_value is not None
        and it.p_value >= sel.alpha
        and it.probability is not None
        and it.probability >= 0.9
    }


def _auto_ids(out: Path) -> set[str]:
    f = out / "auto_labels.csv"
    return {line.split(",")[0] for line in f.read_text().splitlines()[1:]} if f.is_file() else set()


def _manifest(out: Path) -> dict:
    return json.loads((out / "export.json").read_text())["auto_accept"]


def _legacy(sel_path: Path, to: Path) -> Path:
    """The selection as written before the trust decision: no trusted, competence or trust."""
    data = json.loads(sel_path.read_text())
    del data["trust"]
    for it in data["items"]:
        del it["trusted"], it["competence"]
    to.write_text(json.dumps(data))
    return to


# --- the pool and the selection carry the decision --------------------------------------------------------
def test_the_pool_and_the_selection_carry_the_trust_decision(scored, selection):
    det, emb, pool = scored
    v = det.score_embeddings(emb)
    np.testing.assert_array_equal(pool.trusted, v.trusted)
    np.testing.assert_allclose(pool.competence, v.competence)
    t = det.trust_
    assert t is not None
    expected = {}
    for eps in sorted({*TRUST_RISKS, t.risk}):
        lam = t.threshold_for(eps)
        expected[str(eps)] = None if math.isinf(lam) else lam
    assert pool.trust == {"rule": t.rule, "risk": 0.05, "delta": t.delta, "thresholds": expected}
    assert set(expected) == {"0.01", "0.02", "0.05", "0.1"} and expected["0.05"] == t.threshold
    # the data are built so that both a certified and an uncertifiable ε are recorded
    assert expected["0.01"] is None and expected["0.1"] is not None
    sub = pool.subset([5, 0, 110])
    np.testing.assert_array_equal(sub.trusted, pool.trusted[[5, 0, 110]])
    np.testing.assert_array_equal(sub.competence, pool.competence[[5, 0, 110]])
    assert sub.trust == pool.trust
    raw = json.loads(selection.read_text())
    assert raw["trust"] == pool.trust  # math.inf written as null
    pos = {i: k for k, i in enumerate(pool.ids)}
    for it in raw["items"]:
        k = pos[it["id"]]
        assert it["trusted"] is bool(pool.trusted[k])
        assert it["competence"] == pytest.approx(pool.competence[k])
        assert (", trusted" in it["reason"]) is it["trusted"]


def test_selection_json_round_trips_the_trust_fields_through_both_readers(scored, selection, tmp_path):
    _, _, pool = scored
    full = Selection.load(selection)
    lab = read_selection(selection)
    assert full.trust == lab.trust == pool.trust
    pos = {i: k for k, i in enumerate(pool.ids)}
    assert {it.id: (it.trusted, it.competence) for it in full.items} == {
        it.id: (it.trusted, it.competence) for it in lab.items
    }
    for it in full.items:
        assert it.trusted is bool(pool.trusted[pos[it.id]])
        assert it.competence == pytest.approx(pool.competence[pos[it.id]])
    assert full.to_json() == json.loads(selection.read_text())  # save → load → identical
    # a Selection object reads the same as its file
    assert read_selection(full).trust == lab.trust
    # a selection written before the trust decision still reads, with None
    old = _legacy(selection, tmp_path / "old.json")
    for sel in (Selection.load(old), read_selection(old)):
        assert sel.trust is None
        assert all(it.trusted is None and it.competence is None for it in sel.items)
    # and a wrong type is refused by both readers, naming the field
    bad = json.loads(selection.read_text())
    bad["items"][0]["trusted"] = "yes"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SelectionError, match="trusted"):
        Selection.load(tmp_path / "bad.json")
    with pytest.raises(InvalidInputError, match="trusted"):
        read_selection(tmp_path / "bad.json")
    bad = json.loads(selection.read_text())
    bad["trust"]["thresholds"] = {"often": 0.9}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SelectionError, match="often"):
        Selection.load(tmp_path / "bad.json")
    with pytest.raises(InvalidInputError, match="often"):
        read_selection(tmp_path / "bad.json")


# --- auto-accept ------------------------------------------------------------------------------------------
def test_a_sure_answer_that_is_not_trusted_is_not_auto_accepted(selection, tmp_path):
    sel = read_selection(selection)
    old = _old_rule(selection)
    trusted = {it.id for it in sel.items if it.trusted}
    sure_untrusted = [it for it in sel.items if it.id in old and not it.trusted]
    assert len(sure_untrusted) >= 5  # the noisy corner: not novel, p(a) ≥ 0.9, not trusted
    for it in sure_untrusted:
        assert it.p_value >= sel.alpha and it.probability >= 0.9 and not it.is_novel
        assert not auto_accepted(it, min_p=sel.alpha)
    res = export_selection(selection, tmp_path / "out", format="csv", auto_accept=True, audit=0)
    accepted = {e.id for e in res.auto}
    assert accepted == old & trusted and accepted  # only trusted answers, and some are
    assert _auto_ids(tmp_path / "out") == accepted
    to_people = (tmp_path / "out" / "labels.csv").read_text()
    assert all(it.id in to_people for it in sure_untrusted)
    m = _manifest(tmp_path / "out")
    assert m["auto_risk"] is None and m["risk"] == 0.05 and m["threshold"] == sel.trust["thresholds"]["0.05"]
    assert m["trust_rule"] == sel.trust["rule"] and res.auto_threshold == m["threshold"]
    # the measurement applies the same rule
    truth = {it.id: str(it.prediction) for it in sel.items}
    assert measure_assistance(selection, truth).n_auto == len(accepted)


def test_auto_risk_picks_the_recorded_threshold(selection, tmp_path, caplog):
    sel = read_selection(selection)
    old = _old_rule(selection)
    lam = sel.trust["thresholds"]["0.1"]
    expected = {
        it.id
        for it in sel.items
        if it.id in old and it.is_novel is False and it.competence is not None and it.competence >= lam
    }
    own_res = export_selection(selection, tmp_path / "own", format="csv", auto_accept=True, audit=0)
    own = {e.id for e in own_res.auto}
    res = export_selection(
        selection, tmp_path / "eps", format="csv", auto_accept=True, auto_risk=0.1, audit=0
    )
    assert {e.id for e in res.auto} == expected
    assert expected > own  # a looser ε accepts more, by its own threshold, not the detector's
    for it in sel.items:
        assert auto_accepted(it, min_p=sel.alpha, threshold=lam) is (it.id in expected)
    m = _manifest(tmp_path / "eps")
    assert (m["auto_risk"], m["risk"], m["threshold"]) == (0.1, 0.1, lam)
    assert res.auto_risk == 0.1 and res.auto_threshold == lam
    truth = {it.id: str(it.prediction) for it in sel.items}
    st = measure_assistance(selection, truth, auto_risk=0.1)
    assert st.n_auto == len(expected) and st.to_json()["auto_threshold"] == lam
    # an ε the calibration split cannot certify (recorded as null): nothing is accepted, and the log says so
    with caplog.at_level(logging.WARNING, logger="novelty.flywheel.labels.labelling"):
        none = export_selection(
            selection, tmp_path / "strict", format="csv", auto_accept=True, auto_risk=0.01
        )
    assert none.auto == () and none.n_exported == len(sel.items)
    assert "cannot certify an error rate of 0.01" in caplog.text
    m = _manifest(tmp_path / "strict")
    assert (m["auto_risk"], m["risk"], m["threshold"], m["n"]) == (0.01, 0.01, None, 0)


def test_an_error_rate_the_selection_does_not_record_is_refused(selection, tmp_path):
    with pytest.raises(InvalidInputError, match=r"auto_risk=0\.03 .* records 0\.01, 0\.02, 0\.05, 0\.1$"):
        export_selection(selection, tmp_path / "x", format="csv", auto_accept=True, auto_risk=0.03)
    with pytest.raises(InvalidInputError, match="auto_risk must lie in"):
        export_selection(selection, tmp_path / "x", format="csv", auto_accept=True, auto_risk=1.0)
    with pytest.raises(InvalidInputError, match="use it with auto_accept"):
        export_selection(selection, tmp_path / "x", format="csv", auto_risk=0.05)
    old = _legacy(selection, tmp_path / "old.json")
    with pytest.raises(InvalidInputError, match="needs the selection's trust decision"):
        export_selection(old, tmp_path / "x", format="csv", auto_accept=True, auto_risk=0.05)
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_a_legacy_selection_keeps_the_old_rule(selection, tmp_path):
    old_sel = _legacy(selection, tmp_path / "old.json")
    old = _old_rule(old_sel)
    res = export_selection(old_sel, tmp_path / "out", format="csv", auto_accept=True, audit=0)
    assert {e.id for e in res.auto} == old
    untrusted = {it.id for it in read_selection(selection).items if not it.trusted}
    assert old & untrusted  # what the trust decision would refuse, the old rule still takes
    m = _manifest(tmp_path / "out")
    assert (m["trust_rule"], m["auto_risk"], m["risk"], m["threshold"]) == (None, None, None, None)
    assert res.auto_threshold is None
    item = next(it for it in read_selection(selection).items if it.id in old & untrusted)
    assert not auto_accepted(item, min_p=0.05)
    assert auto_accepted(replace(item, trusted=None, competence=None), min_p=0.05)


# --- the CLI and the flywheel -----------------------------------------------------------------------------
def test_cli_auto_risk(selection, tmp_path, capsys):
    out = tmp_path / "cli"
    base = ["export", str(selection), "--format", "csv", "--out", str(out)]
    assert main([*base, "--auto-risk", "0.1"]) == 2  # only with --auto-accept
    assert "--auto-risk" in capsys.readouterr().err
    assert main([*base, "--auto-accept", "--auto-risk", "1.5"]) == 2
    assert main([*base, "--auto-accept", "--auto-risk", "0.03"]) == 1
    assert "0.01, 0.02, 0.05, 0.1" in capsys.readouterr().err
    assert main([*base, "--auto-accept", "--auto-risk", "0.1"]) == 0
    lam = read_selection(selection).trust["thresholds"]["0.1"]
    assert f"competence ≥ {lam:g}" in capsys.readouterr().out
    assert (_manifest(out)["auto_risk"], _manifest(out)["threshold"]) == (0.1, lam)


CONFIG = """
registry = "registry"
dataset = "train"
test = "test"
[select]
sources = ["incoming"]
[label]
format = "csv"
audit = 0
"""


def test_flywheel_config_auto_risk_reaches_the_export(selection, tmp_path):
    cfg_path = tmp_path / "flywheel.toml"
    cfg_path.write_text(CONFIG)
    assert load_config(cfg_path).auto_risk is None
    for bad in ("0", "1", "1.5", "'0.05'", "nan"):
        cfg_path.write_text(CONFIG + f"auto_risk = {bad}\n")
        with pytest.raises(FlywheelConfigError, match="auto_risk"):
            load_config(cfg_path)
    cfg_path.write_text(CONFIG + "auto_risk = 0.1\n")
    cfg = load_config(cfg_path)
    assert cfg.auto_risk == 0.1
    Dataset.create(tmp_path / "train", ["a", "b"])
    turn_dir = tmp_path / "turns" / "0001"
    turn_dir.mkdir(parents=True)
    (turn_dir / "selection.json").write_bytes(selection.read_bytes())
    turn = Turn(number=1, dir=turn_dir)
    _export(cfg, None, turn, lambda _: None)
    m = _manifest(turn_dir / "export")
    assert (m["auto_risk"], m["threshold"]) == (0.1, read_selection(selection).trust["thresholds"]["0.1"])
    assert turn.auto_accepted == m["n"] > 0


# --- a condition labelled for the first time is audited in full ---------------------------------------------
def _entry(i: int, label: str, condition: str | None, labeller: str = "human:ann") -> Entry:
    return Entry(
        id=f"e{i}",
        sha256=hashlib.sha256(f"e{i}".encode()).hexdigest(),
        path=f"#{i}",
        label=label,
        source="test",
        labeller=labeller,
        condition=condition,
    )


def test_first_labelled_conditions_are_those_of_the_last_turn_not_of_the_first_version(tmp_path):
    from novelty.flywheel.labels.assisted import first_labelled_conditions

    v1 = [_entry(i, "a", "clean") for i in range(3)]
    assert first_labelled_conditions(v1) == set()  # the initial training data is no turn
    turn = [replace(_entry(10, "b", "snow"), version=2), replace(_entry(11, "a", "clean"), version=2)]
    v1 = [replace(e, version=1) for e in v1]
    assert first_labelled_conditions(v1 + turn) == {"snow"}
    later = [replace(_entry(20, "a", "fog"), version=3)]
    assert first_labelled_conditions(v1 + turn + later) == {"fog"}  # snow is no longer new
    auto = [replace(_entry(30, "a", "ice", labeller="model:x"), version=4, auto=True)]
    assert first_labelled_conditions(v1 + turn + later + auto) == {"fog"}  # automatic labels are no turn


def test_images_near_a_condition_labelled_for_the_first_time_are_audited_in_full(scored, tmp_path):
    """The selection records each image's nearest training image; a trusted answer whose nearest training image
    is of a condition first labelled in the last turn goes to people (listed in the audit), not into the
    dataset. The training dataset here is a real one: version 1 labels every training image "clean", version 2
    gives the nearest training images of half of the accepted answers a new condition, "corner"."""
    det, _, pool = scored
    path = select(pool, len(pool), "random", seed=0).save(tmp_path / "sel" / "selection.json")
    items = read_selection(path).items
    assert all(it.nearest is not None and it.nearest in det.train_ids_ for it in items)
    accepted = {e.id for e in export_selection(path, tmp_path / "plain", auto_accept=True, audit=0).auto}
    assert accepted, "the fixture's detector trusts some answers"
    near = {it.id: it.nearest for it in items}
    new_near = sorted({near[i] for i in sorted(accepted)[::2]})
    ds = Dataset.create(tmp_path / "train", ["a", "b"])

    def entry(train_id: str, condition: str) -> Entry:
        return Entry(
            id=train_id,
            sha256=hashlib.sha256(train_id.encode()).hexdigest(),
            path=f"/train/{train_id[1:]}.png",
            label="a",
            source="test",
            labeller="human:ann",
            condition=condition,
        )

    ds.add([entry(t, "clean") for t in det.train_ids_ if t not in new_near], source="first")
    ds.add([entry(t, "corner") for t in new_near], source="turn 1")
    res = export_selection(path, tmp_path / "exp", auto_accept=True, audit=0, dataset=ds)
    held = {i for i in accepted if near[i] in set(new_near)}
    assert held and {e.id for e in res.auto} == accepted - held
    assert {a["id"] for a in _manifest(tmp_path / "exp")["audit"]} == held
    # one turn later "corner" is no longer new: the same answers are accepted
    later = Dataset.create(tmp_path / "later", ["a", "b"])
    later.add([entry(t, "clean") for t in det.train_ids_ if t not in new_near], source="first")
    later.add([entry(t, "corner") for t in new_near], source="turn 1")
    later.add([entry("#fresh", "clean")], source="turn 2")
    again = export_selection(path, tmp_path / "exp3", auto_accept=True, audit=0, dataset=later)
    assert {e.id for e in again.auto} == accepted
