"""One registry policy on both backends: the same calls on the local registry and on the MLflow registry
(SQLite, artifacts in a folder; no server) refuse the same promotions with the same messages, walk back through
the same champions, and recover an alias that was moved without its history event (a crash, a lost connection
between the alias update and the event) before the next change."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest
from comparison_support import write_comparison  # tests/comparison_support.py

import novelty
from novelty.flywheel.comparison.compare import ComparisonError
from novelty.flywheel.registry.store import (
    AliasError,
    PromotionRefusedError,
    Registry,
    RollbackError,
)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # MLflow's SQL


@pytest.fixture(scope="module")
def detectors(tmp_path_factory, embedder, textile_embeddings) -> list[Path]:
    """Three small detectors fitted on different slices of the nominal textile images: three artifacts."""
    x = textile_embeddings["nominal"]
    out = tmp_path_factory.mktemp("detectors")
    return [
        novelty.NoveltyDetector(embedder=embedder, calibration_fraction=0.3, seed=i)
        .fit_embeddings(x[lo : lo + 150])
        .save(out / f"det{i}")
        for i, lo in enumerate((0, 40, 80))
    ]


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> tuple[str, str]:
    """One tracking store for the module (creating its tables takes seconds); a model per test."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts")


@pytest.fixture(params=["local", pytest.param("mlflow", marks=pytest.mark.slow)])
def reg(request, tmp_path):
    if request.param == "local":
        return Registry.create(tmp_path / "reg")
    from novelty.flywheel.registry.mlflow_backend import MlflowRegistry

    uri, artifacts = request.getfixturevalue("mlflow_store")
    return MlflowRegistry(uri, f"policy-{secrets.token_hex(3)}", artifact_location=artifacts)


def register_all(reg, detectors) -> list[str]:
    return [reg.register(d, load=False) for d in detectors]


def move_alias_without_event(reg, name: str, version: str) -> None:
    """What a crash between the alias update and its history event leaves: the alias moved in the storage,
    the history not knowing."""
    if isinstance(reg, Registry):
        tmp = reg.root / f".novelty-tmp-{os.getpid()}-test-{name}"
        os.symlink(f"versions/{version}/detector", tmp)
        os.replace(tmp, reg.root / name)
    else:
        reg.client.set_registered_model_alias(reg.model_name, name, version)


def delete_version(reg, version: str) -> None:
    if isinstance(reg, Registry):
        shutil.rmtree(reg.root / "versions" / version)
    else:
        reg.client.delete_model_version(reg.model_name, version)


def champion_events(reg) -> list[tuple[str, str | None]]:
    return [(e.event, e.version) for e in reg.history() if e.alias == "champion"]


# --- promote and its refusals -------------------------------------------------------------------------------
def test_only_the_first_champion_goes_without_a_recorded_passing_comparison(reg, detectors, tmp_path):
    v1, v2, v3 = register_all(reg, detectors)
    first = reg.promote(v1)
    assert first.changed and first.previous is None and reg.alias("champion") == v1
    with pytest.raises(PromotionRefusedError, match=f"promoting version {v2} needs a comparison"):
        reg.promote(v2)
    failing = write_comparison(tmp_path / "f.json", detectors[0], detectors[1], passed=False, registry=reg)
    with pytest.raises(PromotionRefusedError, match="did not pass the gate"):
        reg.promote(v2, comparison=failing)
    flipped = tmp_path / "flipped.json"
    flipped.write_text(failing.read_text().replace('"passed": false', '"passed": true', 1))
    with pytest.raises(PromotionRefusedError, match="does not hold up when judged again"):
        reg.promote(v2, comparison=flipped)
    other = write_comparison(tmp_path / "o.json", detectors[0], detectors[2], registry=reg)
    with pytest.raises(PromotionRefusedError, match=f"not for version {v2}"):
        reg.promote(v2, comparison=other)
    stale = write_comparison(tmp_path / "s.json", detectors[2], detectors[1], registry=reg)
    with pytest.raises(PromotionRefusedError, match="not against the current champion"):
        reg.promote(v2, comparison=stale)
    unrecorded = write_comparison(tmp_path / "u.json", detectors[0], detectors[1])
    with pytest.raises(PromotionRefusedError, match="not recorded by this registry"):
        reg.promote(v2, comparison=unrecorded)
    ok = write_comparison(tmp_path / "ok.json", detectors[0], detectors[1], registry=reg)
    change = reg.promote(v2, comparison=ok)
    assert change.changed and not change.forced and change.previous == v1
    promoted = reg.history()[-1]
    assert promoted.event == "promote" and promoted.data["comparison"]["passed"] is True
    n = len(reg.history())
    assert not reg.promote(v2).changed and len(reg.history()) == n  # already the champion: nothing recorded
    assert reg.champions() == [v1, v2] and v3 not in reg.champions()


def test_a_forced_promotion_needs_a_reason_and_records_what_it_overrode(reg, detectors):
    v1, v2, _ = register_all(reg, detectors)
    reg.promote(v1)
    with pytest.raises(PromotionRefusedError, match="a forced promotion needs a reason"):
        reg.promote(v2, force=True)
    with pytest.raises(PromotionRefusedError, match="needs a reason"):
        reg.promote(v2, force=True, reason="  ")
    change = reg.promote(v2, force=True, reason="hotfix", note="by hand")
    assert change.forced and change.changed
    ev = reg.history()[-1]
    assert ev.event == "promote" and ev.data["forced"] is True and ev.data["reason"] == "hotfix"
    assert "needs a comparison" in ev.data["refusal"] and ev.data["note"] == "by hand"
    keys = {"alias", "version", "artifact_id", "previous", "forced", "refusal", "reason", "note", "user"}
    assert keys <= set(ev.data)


def test_a_comparison_that_does_not_hold_up_is_not_recorded(reg, detectors, tmp_path):
    register_all(reg, detectors[:2])
    failing = write_comparison(tmp_path / "f.json", detectors[0], detectors[1], passed=False)
    flipped = tmp_path / "flipped.json"
    flipped.write_text(failing.read_text().replace('"passed": false', '"passed": true', 1))
    with pytest.raises(ComparisonError, match="refusing to record"):
        reg.record_comparison(flipped)
    assert not [e for e in reg.history() if e.event == "compared"]


# --- aliases ------------------------------------------------------------------------------------------------
def test_the_champion_moves_only_by_promote_and_its_removal_empties_the_stack(reg, detectors):
    v1, v2, v3 = register_all(reg, detectors)
    with pytest.raises(AliasError, match="register cannot set the champion"):
        reg.register(detectors[0], load=False, alias="champion")
    reg.promote(v1)
    with pytest.raises(PromotionRefusedError, match="changes only by promote"):
        reg.set_alias("champion", v2)
    assert reg.set_alias("challenger", v2).changed and reg.alias("challenger") == v2
    assert not reg.set_alias("challenger", v2).changed
    reg.promote(v2, force=True, reason="test")
    assert reg.set_alias("champion", None).changed
    assert reg.champions() == [] and reg.alias("champion") is None
    with pytest.raises(RollbackError, match="has no champion"):
        reg.rollback()
    assert not reg.promote(v3).forced  # after a removal the next champion is a first champion again
    assert reg.champions() == [v3]


# --- rollback -----------------------------------------------------------------------------------------------
def test_rollback_walks_back_through_the_champions_and_stops_at_the_first(reg, detectors):
    v1, v2, v3 = register_all(reg, detectors)
    with pytest.raises(RollbackError, match="has no champion"):
        reg.rollback()
    reg.promote(v1)
    reg.promote(v2, force=True, reason="test")
    reg.promote(v3, force=True, reason="test")
    assert reg.rollback().version == v2
    change = reg.rollback()
    assert (change.version, change.previous) == (v1, v2)
    with pytest.raises(RollbackError, match=f"version {v1} is the first champion in the history"):
        reg.rollback()
    assert champion_events(reg) == [
        ("promote", v1),
        ("promote", v2),
        ("promote", v3),
        ("rollback", v2),
        ("rollback", v1),
    ]


def test_rollback_to_a_deleted_version_is_refused_as_a_rollback(reg, detectors):
    v1, v2, _ = register_all(reg, detectors)
    reg.promote(v1)
    reg.promote(v2, force=True, reason="test")
    delete_version(reg, v1)
    with pytest.raises(RollbackError, match=f"the previous champion, version {v1}, is missing"):
        reg.rollback()
    assert reg.alias("champion") == v2


# --- recovery of an alias moved without its event -------------------------------------------------------------
def test_a_promote_whose_event_was_lost_is_recovered_and_rolled_back_one_step(reg, detectors):
    """The champion moved to v3 but the history never heard of it: the next change records it (``recovered``),
    so a rollback returns to v2, the champion before it, not to v1."""
    v1, v2, v3 = register_all(reg, detectors)
    reg.promote(v1)
    reg.promote(v2, force=True, reason="test")
    move_alias_without_event(reg, "champion", v3)
    change = reg.rollback()
    assert (change.version, change.previous) == (v2, v3)
    assert reg.alias("champion") == v2
    recovered = [e for e in reg.history() if e.event == "recovered"]
    assert [(e.alias, e.version, e.previous) for e in recovered] == [("champion", v3, v2)]
    assert reg.champions() == [v1, v2]


def test_a_rollback_whose_event_was_lost_is_recovered_as_a_rollback(reg, detectors):
    """The champion went back from v3 to v2 without the event: the next rollback goes on to v1 (it does not
    'roll back' to v2, where the champion already is)."""
    v1, v2, v3 = register_all(reg, detectors)
    reg.promote(v1)
    reg.promote(v2, force=True, reason="test")
    reg.promote(v3, force=True, reason="test")
    move_alias_without_event(reg, "champion", v2)
    change = reg.rollback()
    assert (change.version, change.previous) == (v1, v2)
    recovered = [e for e in reg.history() if e.event == "recovered"]
    assert [(e.version, e.previous, e.data.get("as")) for e in recovered] == [(v2, v3, "rollback")]
    assert reg.champions() == [v1]


def test_any_change_records_a_lost_alias_event_first(reg, detectors):
    v1, v2, _ = register_all(reg, detectors)
    reg.promote(v1)
    move_alias_without_event(reg, "challenger", v2)
    assert reg.set_alias("challenger", v1).previous == v2  # the alias as it was in the storage
    assert [(e.event, e.version, e.previous) for e in reg.history() if e.alias == "challenger"] == [
        ("recovered", v2, None),
        ("alias", v1, v2),
    ]
