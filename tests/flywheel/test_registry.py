"""The local model registry: versions copied from verified detectors, champion/challenger symlinks swapped
atomically, promotion gated by a comparison, rollback through the history, a lock around every change — and
a real service on REGISTRY/champion that follows promote and rollback without failing a request."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from comparison_support import artifact_id, write_comparison  # tests/comparison_support.py

import novelty
from novelty.cli import main
from novelty.flywheel.comparison.compare import load_comparison
from novelty.flywheel.registry.store import (
    AliasError,
    ComparisonError,
    NotARegistryError,
    PromotionRefusedError,
    Registry,
    RegistryError,
    RegistryNotFoundError,
    RollbackError,
    UnknownVersionError,
)

REPO = Path(__file__).resolve().parents[2]


# --- fixtures: real small detectors on real textile embeddings ---------------------------------------------
@pytest.fixture(scope="module")
def detectors(tmp_path_factory, embedder, textile_embeddings) -> list[Path]:
    """Three detectors (the pretrained default backbone) fitted on different slices of the nominal textile
    images: three distinct artifacts."""
    x = textile_embeddings["nominal"]
    out = tmp_path_factory.mktemp("detectors")
    paths = []
    for i, (lo, hi) in enumerate([(0, 150), (40, 190), (80, 230)]):
        det = novelty.NoveltyDetector(embedder=embedder, calibration_fraction=0.3, seed=i).fit_embeddings(
            x[lo:hi]
        )
        paths.append(det.save(out / f"det{i}"))
    return paths


def comparison(path: Path, champion: Path | None, challenger: Path, *, passed: bool = True, reg=None) -> Path:
    """A real comparison file (the gate run on seeded p-values), recorded in ``reg`` when given."""
    return write_comparison(path, champion, challenger, passed=passed, registry=reg)


@pytest.fixture
def reg(tmp_path, detectors, embedder) -> Registry:
    r = Registry.create(tmp_path / "reg")
    for d in detectors:
        r.register(d, embedder=embedder)
    return r


# --- opening ---------------------------------------------------------------------------------------------
def test_open_refuses_what_is_not_a_registry(tmp_path, detectors):
    with pytest.raises(RegistryNotFoundError, match="does not exist"):
        Registry.open(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARegistryError, match=r"no registry\.json"):
        Registry.open(tmp_path / "plain")
    with pytest.raises(NotARegistryError, match="detector artifact"):
        Registry.open(detectors[0])
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotARegistryError, match="not a directory"):
        Registry.open(tmp_path / "file")
    r = Registry.create(tmp_path / "reg")
    with pytest.raises(RegistryError, match="already a registry"):
        Registry.create(tmp_path / "reg")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RegistryError, match="not empty"):
        Registry.create(tmp_path / "full")
    (r.root / "registry.json").write_text('{"format": "something-else"}')
    with pytest.raises(NotARegistryError, match="not a novelty-registry"):
        Registry.open(r.root)
    (r.root / "registry.json").write_text("{not json")
    with pytest.raises(NotARegistryError, match="not valid JSON"):
        Registry.open(r.root)


# --- register --------------------------------------------------------------------------------------------
def test_register_copies_the_verified_detector(tmp_path, detectors, embedder, textile_embeddings):
    r = Registry.create(tmp_path / "reg")
    assert r.list_versions() == [] and r.alias("champion") is None
    v = r.register(detectors[0], note="first fit", embedder=embedder)
    assert v == "0001"
    info = r.get(1)
    assert info.artifact_id == artifact_id(detectors[0]) and info.note == "first fit" and info.record is None
    assert json.loads((r.root / "versions/0001/info.json").read_text())["version"] == "0001"
    copy = novelty.load(r.path("0001"), embedder=embedder)
    orig = novelty.load(detectors[0], embedder=embedder)
    x = textile_embeddings["global"][:20]
    np.testing.assert_array_equal(copy.score_embeddings(x).p_value, orig.score_embeddings(x).p_value)
    # the same artifact again: no new version
    assert r.register(detectors[0], embedder=embedder) == "0001"
    assert [e.event for e in r.history()] == ["register"]
    # the registered copy does not depend on the source
    src = shutil.copytree(detectors[1], tmp_path / "src")
    assert r.register(src, embedder=embedder) == "0002"
    shutil.rmtree(src)
    assert novelty.load(r.path(2), embedder=embedder).artifact_id_ == artifact_id(detectors[1])
    assert [i.version for i in r.list_versions()] == ["0001", "0002"]
    assert not [p for p in (r.root / "versions").iterdir() if p.name.startswith(".")]


def test_register_keeps_the_training_record_and_refuses_another_detectors(tmp_path, detectors, embedder):
    r = Registry.create(tmp_path / "reg")
    rec = {
        "format": "novelty-training-record",
        "config_hash": "ab" * 32,
        "artifact_id": artifact_id(detectors[0]),
    }
    (tmp_path / "record.json").write_text(json.dumps(rec))
    with pytest.raises(RegistryError, match="record is for detector"):
        r.register(detectors[1], record=tmp_path / "record.json", embedder=embedder)
    v = r.register(detectors[0], record=tmp_path / "record.json", embedder=embedder)
    assert r.get(v).record == rec and r.get(v).info["config_hash"] == "ab" * 32
    # the layout novelty retrain writes (DIR/detector + DIR/record.json): the record is picked up
    out = tmp_path / "run"
    shutil.copytree(detectors[1], out / "detector")
    rec1 = {"config_hash": "cd" * 32, "artifact_id": artifact_id(detectors[1])}
    (out / "record.json").write_text(json.dumps(rec1))
    v1 = r.register(out, embedder=embedder)
    assert r.get(v1).record == rec1
    # a record beside it for another artifact is ignored, never attached to the wrong detector
    shutil.copytree(detectors[2], tmp_path / "run2" / "detector")
    (tmp_path / "run2" / "record.json").write_text(json.dumps(rec1))
    assert r.get(r.register(tmp_path / "run2", embedder=embedder)).record is None
    with pytest.raises(RegistryError, match="JSON object"):
        r.register(detectors[2], record=[1, 2], embedder=embedder)  # type: ignore[arg-type]


def test_a_registered_version_never_changes(reg, detectors, embedder, tmp_path, capsys):
    """Hardening: ``novelty retrain REG/champion … --out REG/versions/0001`` exited 0 and REG/champion then
    loaded another artifact. Every write inside a registry is refused before any work, and a version whose
    bytes were replaced by hand (cp -r) no longer loads through the registry."""
    reg.promote(1)
    v1 = reg.root / "versions" / "0001"
    for out in (v1, v1 / "detector", reg.root / "versions" / "0009", reg.root):
        code = main(["retrain", str(reg.root / "champion"), "--dataset", "nowhere", "--out", str(out)])
        assert code == 2 and "inside the model registry" in capsys.readouterr().err
    code = main(["fit", str(tmp_path), "--out", str(v1 / "detector")])
    assert code == 2 and "inside the model registry" in capsys.readouterr().err
    other = novelty.load(detectors[2], embedder=embedder)
    with pytest.raises(novelty.errors.ArtifactError, match="inside the model registry"):
        other.save(v1 / "detector")
    assert novelty.load(reg.root / "champion", embedder=embedder).artifact_id_ == artifact_id(detectors[0])

    shutil.rmtree(v1 / "detector")  # replaced by hand, bypassing every check of the package
    shutil.copytree(detectors[2], v1 / "detector")
    with pytest.raises(
        novelty.errors.ArtifactIntegrityError, match="version 0001 was registered as detector"
    ):
        novelty.load(reg.root / "champion", embedder=embedder)
    with pytest.raises(RegistryError, match="registered as detector"):
        reg.promote(1)
    assert novelty.load(detectors[2], embedder=embedder).artifact_id_ == artifact_id(
        detectors[2]
    )  # elsewhere: fine


def test_register_refuses_a_broken_or_unloadable_detector(tmp_path, detectors, embedder):
    r = Registry.create(tmp_path / "reg")
    bad = shutil.copytree(detectors[0], tmp_path / "bad")
    with open(bad / "index.faiss", "r+b") as fh:  # one flipped byte
        b = fh.read(1)
        fh.seek(0)
        fh.write(bytes([b[0] ^ 1]))
    with pytest.raises(RegistryError, match=r"refusing to register.*sha256"):
        r.register(bad, embedder=embedder)
    with pytest.raises(RegistryError, match="not a directory"):
        r.register(tmp_path / "missing", embedder=embedder)
    # checksums fine, but the recorded backbone is not the one here: it would not load in the service
    other = shutil.copytree(detectors[0], tmp_path / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["backbone"]["fingerprint"] = "0" * 64
    data = json.dumps(manifest, indent=2).encode()
    (other / "manifest.json").write_bytes(data)
    import hashlib

    (other / "MANIFEST.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  manifest.json\n")
    with pytest.raises(RegistryError, match="does not load"):
        r.register(other, embedder=embedder)
    assert r.list_versions() == [] and r.history() == []
    assert list((r.root / "versions").iterdir()) == []  # nothing half-copied left behind
    assert r.register(other, load=False) == "0001"  # checksums only, when asked


# --- aliases ---------------------------------------------------------------------------------------------
def test_aliases_are_relative_symlinks_that_load(reg, detectors, embedder):
    change = reg.set_alias("challenger", 2)
    assert change.changed and change.version == "0002" and change.previous is None
    assert os.readlink(reg.root / "challenger") == "versions/0002/detector"
    assert reg.alias("challenger") == "0002" and reg.resolve("challenger") == "0002"
    det = novelty.load(reg.root / "challenger", embedder=embedder)  # loading through a symlink works
    assert det.artifact_id_ == artifact_id(detectors[1])
    assert reg.aliases() == {"challenger": "0002"} and reg.get(2).aliases == ("challenger",)
    assert not reg.set_alias("challenger", "0002").changed
    # the registry moves as a whole: links are relative
    moved = Registry.open(shutil.move(str(reg.root), str(reg.root.parent / "moved")))
    assert moved.alias("challenger") == "0002"
    assert moved.set_alias("challenger", None).changed and moved.alias("challenger") is None


def test_alias_errors(reg):
    with pytest.raises(UnknownVersionError, match="no version 7; registered: 0001, 0002, 0003"):
        reg.set_alias("challenger", 7)
    with pytest.raises(UnknownVersionError, match="no alias 'champion'"):
        reg.resolve("champion")
    for bad in ("Champion", "versions", "../x", "a/b", ""):
        with pytest.raises(AliasError, match="not a valid alias"):
            reg.alias(bad)
    os.symlink("versions/0009/detector", reg.root / "stale")
    with pytest.raises(AliasError, match="points nowhere"):
        reg.alias("stale")
    assert "stale" in reg.broken_aliases()
    os.symlink("/etc", reg.root / "outside")
    with pytest.raises(AliasError, match="not to a version of this registry"):
        reg.alias("outside")
    (reg.root / "champion").mkdir()  # something a user put there: never replaced
    with pytest.raises(AliasError, match="not a symlink"):
        reg.promote(1)
    assert (reg.root / "champion").is_dir()


# --- promote / rollback ----------------------------------------------------------------------------------
def test_promote_needs_a_passing_comparison_for_this_pair(reg, detectors, tmp_path):
    first = reg.promote(1)  # the first champion: nothing to compare with
    assert first.changed and first.version == "0001" and not first.forced
    with pytest.raises(PromotionRefusedError, match="needs a comparison"):
        reg.promote(2)
    failing = comparison(tmp_path / "fail.json", detectors[0], detectors[1], passed=False, reg=reg)
    with pytest.raises(PromotionRefusedError, match="did not pass the gate: FAIL gain"):
        reg.promote(2, comparison=failing)
    wrong_challenger = comparison(tmp_path / "c3.json", detectors[0], detectors[2], reg=reg)
    with pytest.raises(PromotionRefusedError, match="not for version 0002"):
        reg.promote(2, comparison=wrong_challenger)
    wrong_champion = comparison(tmp_path / "c32.json", detectors[2], detectors[1], reg=reg)
    with pytest.raises(PromotionRefusedError, match="not against the current champion"):
        reg.promote(2, comparison=wrong_champion)
    assert reg.alias("champion") == "0001" and [e.event for e in reg.history()][-1] == "compared"
    ok = comparison(tmp_path / "ok.json", detectors[0], detectors[1], reg=reg)
    change = reg.promote("0002", comparison=ok)
    assert change.changed and change.previous == "0001" and not change.forced
    assert reg.alias("champion") == "0002"
    ev = reg.history()[-1]
    assert ev.event == "promote" and ev.data["comparison"]["passed"] is True
    assert ev.data["comparison"]["sha256"] and ev.data["forced"] is False and ev.previous == "0001"
    assert not reg.promote(2, comparison=ok).changed  # already the champion


def _forge(src: Path, dst: Path, edit) -> Path:
    doc = json.loads(src.read_text())
    edit(doc)
    dst.write_text(json.dumps(doc))
    return dst


def test_forged_comparisons_never_promote(reg, detectors, tmp_path):
    """Each forgery of the hardening probe (a flipped verdict, a hand-written file of three fields, a file whose
    every check says FAIL) and an edit of the numbers themselves: refused, and nothing is recorded."""
    reg.promote(1)
    failing = comparison(tmp_path / "fail.json", detectors[0], detectors[1], passed=False, reg=reg)
    before = len(reg.history())

    flipped = _forge(failing, tmp_path / "flipped.json", lambda d: d.update(passed=True))
    with pytest.raises(PromotionRefusedError, match="'passed' is recorded as true but its checks give false"):
        reg.promote(2, comparison=flipped)

    def all_pass(d):
        d["passed"] = True
        for c in d["checks"]:
            c["passed"] = True if c["passed"] is False else c["passed"]

    relabelled = _forge(failing, tmp_path / "relabelled.json", all_pass)
    with pytest.raises(PromotionRefusedError, match="'gain' is recorded as PASS but its numbers give FAIL"):
        reg.promote(2, comparison=relabelled)

    three = tmp_path / "three.json"
    three.write_text(
        json.dumps(
            {
                "passed": True,
                "champion": {"artifact_id": artifact_id(detectors[0])},
                "challenger": {"artifact_id": artifact_id(detectors[1])},
            }
        )
    )
    with pytest.raises(ComparisonError, match="not a novelty-comparison file"):
        reg.promote(2, comparison=three)

    every_fail = _forge(
        comparison(tmp_path / "pass.json", detectors[0], detectors[1]),  # a passing one, not recorded
        tmp_path / "every_fail.json",
        lambda d: [c.update(passed=False) for c in d["checks"]],
    )
    with pytest.raises(PromotionRefusedError, match="does not hold up"):
        reg.promote(2, comparison=every_fail)

    def better_numbers(d):  # a consistent forgery: the numbers, the checks and the verdict all edited
        for r in d["rows"]:
            m = r["metrics"].get("auroc")
            if m is not None:
                m["challenger"], m["diff"], m["ci"] = m["champion"] + 0.2, 0.2, [0.1, 0.3]
        for c in d["checks"]:
            c["passed"] = c["passed"] if c["passed"] is None else True
        d["passed"] = True

    edited = _forge(failing, tmp_path / "edited.json", better_numbers)
    assert not load_comparison(edited).problems()  # it holds together: only the registry's record catches it
    with pytest.raises(PromotionRefusedError, match="was not recorded by this registry"):
        reg.promote(2, comparison=edited)
    with pytest.raises(ComparisonError, match="refusing to record"):
        reg.record_comparison(flipped)

    assert reg.alias("champion") == "0001" and len(reg.history()) == before
    genuine = comparison(tmp_path / "genuine.json", detectors[0], detectors[1])
    with pytest.raises(PromotionRefusedError, match="was not recorded by this registry"):
        reg.promote(2, comparison=genuine)
    reg.record_comparison(genuine)
    assert reg.promote(2, comparison=genuine).changed


def test_forced_promotion_needs_a_reason_and_is_recorded(reg, detectors, tmp_path):
    reg.promote(1)
    failing = comparison(tmp_path / "fail.json", detectors[0], detectors[2], passed=False, reg=reg)
    with pytest.raises(PromotionRefusedError, match="needs a reason"):
        reg.promote(3, comparison=failing, force=True, note="hotfix")
    assert reg.alias("champion") == "0001"
    change = reg.promote(3, comparison=failing, force=True, reason="the new camera went live", note="hotfix")
    assert change.forced and reg.alias("champion") == "0003"
    ev = reg.history()[-1]
    assert ev.data["forced"] is True and "did not pass" in ev.data["refusal"] and ev.data["note"] == "hotfix"
    assert ev.data["reason"] == "the new camera went live"


def test_bad_comparison_files(reg, tmp_path):
    reg.promote(1)
    cases = {
        "missing.json": None,
        "notjson.json": "{oops",
        "list.json": "[1]",
        "nopassed.json": json.dumps({"challenger": {"artifact_id": "a" * 64}}),
        "strpassed.json": json.dumps({"passed": "yes", "challenger": {"artifact_id": "a" * 64}}),
        "noid.json": json.dumps({"passed": True, "champion": {}, "challenger": {}}),
        "badid.json": json.dumps({"passed": True, "challenger": {"artifact_id": "xyz"}}),
        "deep.json": "[" * 100_000 + "]" * 100_000,
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ComparisonError):
            reg.promote(2, comparison=tmp_path / name)
    assert reg.alias("champion") == "0001"


def test_rollback_walks_back_through_the_champions(reg):
    with pytest.raises(RollbackError, match="no champion"):
        reg.rollback()
    for v in (1, 2, 3):
        reg.promote(v, force=True, reason="test")
    assert reg.champions() == ["0001", "0002", "0003"]
    assert reg.rollback().version == "0002"
    assert reg.alias("champion") == "0002"
    assert reg.rollback().version == "0001"
    with pytest.raises(RollbackError, match="no earlier champion"):
        reg.rollback()
    assert reg.alias("champion") == "0001"
    reg.promote(3, force=True, reason="test")
    reg.promote(2, force=True, reason="test")
    assert reg.rollback().version == "0003" and reg.rollback().version == "0001"
    events = [(e.event, e.version) for e in reg.history() if e.alias == "champion"]
    assert events[-2:] == [("rollback", "0003"), ("rollback", "0001")]


def test_concurrent_promotes_keep_history_whole(reg):
    reg.promote(1)
    changes: list = []
    errors: list = []

    def worker(i: int) -> None:
        r = Registry.open(reg.root)  # each its own handle, as separate processes would have
        for k in range(15):
            try:
                changes.append(r.promote((i + k) % 3 + 1, force=True, reason="test"))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    lines = (reg.root / "history.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line whole
    promotes = [e for e in events if e["event"] == "promote"]
    assert len(promotes) == 1 + sum(c.changed for c in changes)
    # each promote's "previous" is the version the one before it set: no lost update
    for before, after in itertools.pairwise(promotes):
        assert after["previous"] == before["version"]
    assert reg.alias("champion") == promotes[-1]["version"]
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".novelty-tmp")]


def test_interrupted_alias_swap_leaves_a_consistent_champion(reg, monkeypatch):
    reg.promote(1)
    reg.promote(2, force=True, reason="test")

    class Crash(BaseException):
        pass

    real_replace = os.replace

    def crash_on_link(src, dst):
        if Path(dst).name == "champion":
            raise Crash()
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_link)
    with pytest.raises(Crash):
        reg.promote(3, force=True, reason="test")
    monkeypatch.setattr(os, "replace", real_replace)
    assert reg.alias("champion") == "0002" and reg.champions() == ["0001", "0002"]
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".novelty-tmp")]

    # a crash after the rename but before the history line: the next change records what happened
    real_append = Registry.append_event

    def crash_on_promote(self, event, **data):
        if event == "promote":
            raise Crash()
        return real_append(self, event, **data)

    monkeypatch.setattr(Registry, "append_event", crash_on_promote)
    with pytest.raises(Crash):
        reg.promote(3, force=True, reason="test")
    monkeypatch.setattr(Registry, "append_event", real_append)
    assert reg.alias("champion") == "0003"  # the link switched; the history does not know yet
    reg.set_alias("challenger", 1)  # any change reconciles first
    recovered = [e for e in reg.history() if e.event == "recovered"]
    assert [(e.alias, e.version, e.previous) for e in recovered] == [("champion", "0003", "0002")]
    assert reg.champions() == ["0001", "0002", "0003"]
    assert reg.rollback().version == "0002"


def test_torn_history_line_is_cut_before_the_next_event(reg):
    reg.promote(1)
    with open(reg.root / "history.jsonl", "ab") as fh:
        fh.write(b'{"event": "promote", "ali')  # a crash mid-write
    assert [e.event for e in reg.history()][-1] == "promote"
    reg.promote(2, force=True, reason="test")
    with open(reg.root / "history.jsonl", "ab") as fh:
        fh.write(
            b'{"event": "rollback", "alias": "champion", "version": "0001"}'
        )  # whole, but no newline yet
    assert reg.history()[-1].version == "0002"  # not an event until its line is complete
    reg.promote(3, force=True, reason="test")
    events = [json.loads(line) for line in (reg.root / "history.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][-3:] == ["promote", "promote", "promote"]
    assert [e["version"] for e in events][-3:] == ["0001", "0002", "0003"]


def test_a_damaged_history_says_where(reg):
    with open(reg.root / "history.jsonl", "ab") as fh:
        fh.write(b"garbage\n")
    with pytest.raises(RegistryError, match="line 4: not a history event"):
        reg.history()


# --- CLI -------------------------------------------------------------------------------------------------
def test_cli_register_promote_rollback(tmp_path, detectors, capsys):
    root = tmp_path / "reg"
    assert main(["register", str(root), str(detectors[0]), "--note", "first", "--no-load"]) == 0
    out = capsys.readouterr()
    assert "version 0001" in out.out and "created registry" in out.err
    assert main(["register", str(root), str(detectors[1]), "--alias", "challenger", "--no-load"]) == 0
    assert "version 0002 (challenger)" in capsys.readouterr().out
    assert main(["register", str(root), str(detectors[1]), "--no-load"]) == 0
    assert "already registered" in capsys.readouterr().out
    assert main(["promote", str(root), "1"]) == 0
    assert "champion: version 0001 (was none)" in capsys.readouterr().out
    assert main(["promote", str(root), "challenger"]) == 1
    assert "needs a comparison" in capsys.readouterr().err
    comp = comparison(tmp_path / "c.json", detectors[0], detectors[1])
    assert main(["promote", str(root), "challenger", "--comparison", str(comp)]) == 1
    assert "was not recorded by this registry" in capsys.readouterr().err
    Registry.open(root).record_comparison(comp)
    assert main(["promote", str(root), "challenger", "--force"]) == 2
    assert "--force needs --reason" in capsys.readouterr().err
    assert main(["promote", str(root), "challenger", "--comparison", str(comp)]) == 0
    assert "champion: version 0002 (was 0001)" in capsys.readouterr().out
    assert main(["registry", str(root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["version", "artifact", "aliases", "registered", "note"]
    assert table[1].startswith("0001") and table[1].split()[1] == artifact_id(detectors[0])[:12]
    assert "challenger,champion" in table[2] and table[1].endswith("first")
    assert main(["rollback", str(root)]) == 0
    assert "champion: version 0001 (rolled back from 0002)" in capsys.readouterr().out
    assert main(["rollback", str(root)]) == 1
    assert "no earlier champion" in capsys.readouterr().err
    assert main(["registry", str(root), "--history"]) == 0
    hist = capsys.readouterr().out
    assert [line.split()[1] for line in hist.splitlines()[1:]] == [
        "register",
        "register",
        "alias",
        "promote",
        "compared",
        "promote",
        "rollback",
    ]


def test_cli_errors(tmp_path, detectors, capsys):
    assert main(["promote", str(tmp_path / "nowhere"), "1", "--force", "--reason", "test"]) == 1
    assert "no registry at" in capsys.readouterr().err
    assert main(["registry", str(detectors[0])]) == 1
    assert "not a novelty registry" in capsys.readouterr().err
    assert main(["rollback", "--mlflow", "sqlite:///x.db"]) == 2
    assert "--mlflow needs --model" in capsys.readouterr().err
    assert main(["rollback", str(tmp_path), "--mlflow", "sqlite:///x.db", "--model", "m"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["rollback"]) == 2
    assert main(["promote", str(tmp_path), "1", "--force", "--comparison", "c.json"]) == 2  # exclusive
    capsys.readouterr()
    Registry.create(tmp_path / "reg")
    assert main(["promote", str(tmp_path / "reg"), "5", "--force", "--reason", "test"]) == 1
    assert "no version 5; registered: none yet" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_register_loads_the_detector(tmp_path, detectors, capsys):
    """Without --no-load the detector is loaded in full (its backbone built) before it is registered."""
    root = tmp_path / "reg"
    assert main(["register", str(root), str(detectors[2])]) == 0
    assert "version 0001" in capsys.readouterr().out


# --- processes and the real service (slow) ---------------------------------------------------------------
_CRASH_SCRIPT = """
import os, sys
from pathlib import Path
from novelty.flywheel.registry.store import Registry
root, where = sys.argv[1], sys.argv[2]
real_replace, real_append = os.replace, Registry.append_event
def replace(src, dst):
    if where == "before-rename" and Path(dst).name == "champion":
        os._exit(9)  # the new link exists under its temporary name; the process dies
    return real_replace(src, dst)
def append(self, event, **data):
    if where == "before-history" and event == "promote":
        os._exit(9)
    return real_append(self, event, **data)
os.replace, Registry.append_event = replace, append
Registry.open(root).promote(sys.argv[3], force=True, reason="test")
"""


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.slow
def test_killed_promote_leaves_a_consistent_champion(reg, embedder):
    reg.promote(1)
    reg.promote(2, force=True, reason="test")
    res = _run(["-c", _CRASH_SCRIPT, str(reg.root), "before-rename", "3"])
    assert res.returncode == 9, res.stderr
    assert [p.name for p in reg.root.iterdir() if p.name.startswith(".novelty-tmp")]  # left by the kill
    assert reg.alias("champion") == "0002" and reg.champions() == ["0001", "0002"]
    assert novelty.load(reg.root / "champion", embedder=embedder).artifact_id_ == reg.get(2).artifact_id
    assert (
        reg.promote(3, force=True, reason="test").previous == "0002"
    )  # the next change cleans up and goes ahead
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".novelty-tmp")]
    res = _run(["-c", _CRASH_SCRIPT, str(reg.root), "before-history", "1"])
    assert res.returncode == 9, res.stderr
    assert reg.alias("champion") == "0001"
    assert reg.rollback().version == "0003"  # recorded as recovered (a push), then rolled back
    assert [e.event for e in reg.history()][-2:] == ["recovered", "rollback"]


_PROMOTER = """
import sys
from novelty.flywheel.registry.store import Registry
r = Registry.open(sys.argv[1])
n = 0
for k in range(int(sys.argv[3])):
    n += r.promote((int(sys.argv[2]) + k) % 3 + 1, force=True, reason="test").changed
print(n)
"""


@pytest.mark.slow
def test_concurrent_promotes_from_processes(reg):
    reg.promote(1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROMOTER, str(reg.root), str(i), "20"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    changed = sum(int(p.communicate(timeout=300)[0]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    events = [json.loads(line) for line in (reg.root / "history.jsonl").read_text().splitlines()]
    promotes = [e for e in events if e["event"] == "promote"]
    assert len(promotes) == 1 + changed
    for before, after in itertools.pairwise(promotes):
        assert after["previous"] == before["version"]
    assert reg.alias("champion") == promotes[-1]["version"]


@pytest.mark.slow
def test_service_on_the_champion_follows_promote_and_rollback(reg, detectors, tmp_path, textile_paths):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from serve_support import ServerProcess, new_token

    reg.promote(1)
    v1, v2 = artifact_id(detectors[0]), artifact_id(detectors[1])
    token = new_token()
    image = Path(textile_paths["nominal"][300]).read_bytes()
    with ServerProcess(
        reg.root / "champion",
        flag_store=str(tmp_path / "flags"),
        token=token,
        log_path=tmp_path / "server.log",
        extra_args=["--watch-interval", "0.2"],
    ) as srv:
        statuses: list[int] = []
        seen: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                req = urllib.request.Request(
                    srv.url + "/v1/score",
                    data=image,
                    headers={"Authorization": f"Bearer {token}"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        statuses.append(r.status)
                        seen.append(json.loads(r.read())["detector_version"])
                except urllib.error.HTTPError as e:
                    statuses.append(e.code)
                except OSError:
                    statuses.append(-1)  # connection refused or reset

        def served_version() -> str:
            with urllib.request.urlopen(srv.url + "/healthz", timeout=30) as r:
                return str(json.loads(r.read())["detector_version"])

        def wait_for(version: str) -> None:
            deadline = time.monotonic() + 180
            while served_version() != version:
                assert time.monotonic() < deadline, (
                    f"the service never served {version[:12]}:\n{srv.log_tail()}"
                )
                time.sleep(0.1)

        def answered(version: str, after: int = 0) -> None:
            """Wait until a scoring request (after the ``after``-th) was answered by ``version``."""
            deadline = time.monotonic() + 180
            while version not in seen[after + 1 :] and time.monotonic() < deadline:
                time.sleep(0.05)

        workers = [threading.Thread(target=hammer) for _ in range(2)]
        for w in workers:
            w.start()
        try:
            assert served_version() == v1
            reg.promote(2, comparison=comparison(tmp_path / "c.json", detectors[0], detectors[1], reg=reg))
            wait_for(v2)
            answered(v2)
            reg.rollback()
            wait_for(v1)
            answered(v1, after=seen.index(v2))
        finally:
            stop.set()
            for w in workers:
                w.join()
    assert statuses and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200]}"
    assert set(seen) == {v1, v2}
    first_v2 = seen.index(v2)
    assert v1 in seen[:first_v2] and v1 in seen[first_v2 + 1 :]  # v1, then v2, then v1 again


# --- one policy under both backends ----------------------------------------------------------------------------
def _mlflow_registry(tmp_path):
    pytest.importorskip("mlflow")
    from novelty.flywheel.registry.mlflow_backend import MlflowRegistry

    return MlflowRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}", "policy", artifact_location=str(tmp_path / "artifacts")
    )


@pytest.mark.parametrize(
    "backend", ["local", pytest.param("mlflow", marks=pytest.mark.slow)], ids=["local", "mlflow"]
)
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_both_backends_share_one_policy(backend, tmp_path, detectors, embedder):
    """The same calls on the local and the MLflow registry: the champion moves only by promote (set_alias
    refuses it); removing the champion empties the rollback stack; a forced promotion needs a reason. The MLflow
    backend's own replay of the history used to ignore the removal and walk back to a removed champion."""
    reg = Registry.create(tmp_path / "reg") if backend == "local" else _mlflow_registry(tmp_path)
    versions = [reg.register(d, embedder=embedder, load=False) for d in detectors]
    reg.promote(versions[0])
    with pytest.raises(PromotionRefusedError, match="changes only by promote"):
        reg.set_alias("champion", versions[1])
    with pytest.raises(PromotionRefusedError, match="needs a reason"):
        reg.promote(versions[1], force=True)
    reg.promote(versions[1], force=True, reason="test")
    assert reg.champions() == versions[:2]
    assert reg.set_alias("champion", None).changed
    assert reg.champions() == [] and reg.alias("champion") is None
    with pytest.raises(RollbackError):
        reg.rollback()
    reg.promote(versions[2])  # after a removal the next champion is a first champion again
    assert reg.champions() == [versions[2]]
    with pytest.raises(RollbackError, match="no earlier champion"):
        reg.rollback()


def test_compare_records_its_file_in_the_registry_its_detectors_lie_in(reg, tmp_path):
    """`novelty compare` finds the registry of the champion or challenger (through the alias symlinks) and
    records the comparison there; with detectors outside any registry it records nothing unless told where."""
    import argparse

    from novelty.cli.common import UsageError
    from novelty.cli.retrain import _comparison_registry

    def ns(champion, challenger, out="c.json", registry=None):
        return argparse.Namespace(
            champion=str(champion),
            challenger=str(challenger),
            out=out,
            registry=registry,
            mlflow=None,
            model=None,
        )

    reg.promote(1)
    found = _comparison_registry(ns(reg.root / "champion", tmp_path / "elsewhere"))
    assert isinstance(found, Registry) and found.root == reg.root
    assert _comparison_registry(ns(tmp_path / "a", tmp_path / "b")) is None
    assert _comparison_registry(ns(reg.root / "champion", tmp_path / "b", out=None)) is None
    with pytest.raises(UsageError, match="give --out"):
        _comparison_registry(ns(tmp_path / "a", tmp_path / "b", out=None, registry=str(reg.root)))
    other = Registry.create(tmp_path / "other")
    with pytest.raises(UsageError, match="two registries"):
        _comparison_registry(ns(reg.root / "champion", other.root / "versions"))
