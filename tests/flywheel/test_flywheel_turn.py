"""`novelty flywheel run`: one turn as far as it goes without a human, resumable, with its cost logged."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

import novelty
from novelty.cli import main
from novelty.fileio import sha256_file
from novelty.flywheel.turn import FlywheelConfigError, load_config, run_turn, turn_history


def _write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BASE = """
registry = "registry"
dataset = "train"
test = "test"
[select]
sources = ["incoming"]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("registry = 'r'\n", "missing dataset, test"),
        (BASE + "budget = 0\n", "budget must be an integer ≥ 1, got 0"),
        (BASE + "seed = -1\n", r"\[select\] seed must be an integer ≥ 0, got -1"),
        (BASE + "[gate]\nmin_gain = nan\n", "min_gain must lie in"),
        (BASE + "[gate]\nmargin = -0.1\n", "margin must lie in"),
        (BASE + "[gate]\nn_boot = 5\n", "n_boot must be an integer ≥ 100"),
        (BASE + "[label]\nauto_min_prob = 2\n", "auto_min_prob must lie in"),
        (BASE + "[label]\nauto_min_p = inf\n", "auto_min_p must lie in"),
        (BASE + "[cost]\ncompute_hour = inf\n", "compute_hour must lie in"),
        (BASE + "strategy = 'clever'\n", "strategy 'clever' is not one of"),
        (BASE + "colour = 'red'\n", "unknown key 'colour' in \\[select\\]"),
        (BASE + "budget = 'ten'\n", "budget must be a int"),
        (BASE + "[label]\nholdout = 1.0\n", "holdout must lie in"),
        (BASE + "[label]\naudit = 2\n", "audit must lie in"),
        (BASE + "[label]\nformat = 'excel'\n", "format must be label-studio, cvat or csv"),
        (BASE + "[cost]\nlabel = -1\n", r"\[cost\] label must lie in \[0, inf\)"),
        (BASE + "[retrain]\nwindow = 'soon'\n", "window"),
        (BASE + "[gate]\nnominal = []\n", "nominal must be a non-empty list"),
        ("registry = 'r'\ndataset = 'd'\ntest = 't'\n", "needs sources or flags"),
        ("registry = [\n", "not valid TOML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    cfg = _write_config(tmp_path / "flywheel.toml", text)
    with pytest.raises(FlywheelConfigError, match=message):
        load_config(cfg)
    assert main(["flywheel", "run", "--config", str(cfg)]) == 2


def test_config_paths_are_relative_to_the_file_and_defaults(tmp_path):
    cfg = load_config(_write_config(tmp_path / "flywheel.toml", BASE + "flags = 'postgresql://u@h/db'\n"))
    assert cfg.registry == tmp_path / "registry"
    assert cfg.sources == (str(tmp_path / "incoming"),)
    assert cfg.flags == "postgresql://u@h/db"  # a DSN is not a path
    assert (cfg.strategy, cfg.budget, cfg.holdout, cfg.label_format) == ("diversity", 50, 0.2, "label-studio")
    assert cfg.labels_path(3) == tmp_path / "turns" / "0003" / "labels.json"
    assert main(["flywheel", "run", "--config", str(tmp_path / "missing.toml")]) == 2


def test_a_key_left_out_gets_the_default_of_its_field_and_the_reference_names_every_key(tmp_path):
    import dataclasses

    import novelty.flywheel.turn as turn_module
    from novelty.flywheel.config import _KEYS, FlywheelConfig

    cfg = load_config(_write_config(tmp_path / "flywheel.toml", BASE))
    for f in dataclasses.fields(FlywheelConfig):
        if f.name in ("new_slice", "workdir"):  # paths: relative to the config file
            assert getattr(cfg, f.name) == tmp_path / f.default
        elif f.default is not dataclasses.MISSING and f.name not in ("sources", "audit"):
            assert getattr(cfg, f.name) == f.default, f.name
    assert cfg.audit == FlywheelConfig.audit  # auto_accept is on by default
    reference = (turn_module.__doc__ or "").split("The config (TOML")[1]
    for section, keys in _KEYS.items():
        for key in keys:
            assert f"{key} = " in reference or f"[{key}]" in reference, (section, key)


def _copy(paths, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        q = folder / f"{p.parent.name}-{p.name}"
        shutil.copyfile(p, q)
        out.append(q)
    return out


def _dataset(path: Path, items: list[tuple[Path, str, str]]):
    from novelty.flywheel.dataset import Dataset, Entry

    ds = Dataset.create(path, ["dry", "wet"])
    ds.add(
        [
            Entry(
                id=p.name,
                sha256=sha256_file(p),
                path=str(p),
                label=label,
                source="train",
                labeller="human:test",
                group=p.name,
                condition=condition,
            )
            for p, label, condition in items
        ],
        source="test setup",
    )
    return ds


@pytest.mark.slow
def test_a_turn_waits_for_labels_then_retrains_compares_and_decides(
    tmp_path, textile_paths, embedder, monkeypatch
):
    """Real images and backbone: nominal textile = "dry", defects = "wet". The champion never saw local defects;
    production brings them. The turn selects, exports a CSV, waits, imports the filled CSV, retrains, compares
    and promotes (or not, as the gate says), logging labels bought and compute with their cost."""
    from novelty.flywheel.registry.store import Registry

    nominal, glob, local = textile_paths["nominal"], textile_paths["global"], textile_paths["local"]
    train = _copy(nominal[:60], tmp_path / "img" / "train") + _copy(glob[:30], tmp_path / "img" / "train")
    _dataset(tmp_path / "train", [(p, "wet" if "global" in p.name else "dry", "clean") for p in train])
    test = (
        [(p, "dry", "clean") for p in _copy(nominal[100:140], tmp_path / "img" / "test")]
        + [(p, "wet", "global") for p in _copy(glob[100:120], tmp_path / "img" / "test")]
        + [(p, "wet", "local") for p in _copy(local[100:140], tmp_path / "img" / "test")]
    )
    _dataset(tmp_path / "test", test)
    _copy(local[:60], tmp_path / "incoming")
    _copy(nominal[200:240], tmp_path / "incoming")

    det = novelty.NoveltyDetector(
        embedder=embedder, scorers=("knn",), head={"max_epochs": 20}, calibration_fraction=0.3
    )
    det.fit(train, ["wet" if "global" in p.name else "dry" for p in train], progress=False)
    det.save(tmp_path / "champion")
    reg = Registry.create(tmp_path / "registry")
    first = reg.register(tmp_path / "champion", note="first")
    reg.promote(first, force=True, reason="test")

    cfg_path = _write_config(
        tmp_path / "flywheel.toml",
        BASE.replace("[select]", 'new_slice = "new"\nworkdir = "turns"\n[select]')
        + "strategy = 'hybrid'\nbudget = 24\n"
        + "[label]\nformat = 'csv'\nlabels = 'turns/{turn}/labels.csv'\nholdout = 0.25\n"
        + "[gate]\nnominal = ['clean']\nn_boot = 200\n"
        + "[cost]\nlabel = 0.10\ncompute_hour = 1.0\ncurrency = 'EUR'\n",
    )
    cfg = load_config(cfg_path)

    turn = run_turn(cfg)
    assert turn.stage == "waiting-for-labels"
    assert turn.selected == 24 and turn.exported + turn.auto_accepted == 24
    labels = cfg.labels_path(1)
    assert turn.waiting_for == str(labels)
    assert main(["flywheel", "run", "--config", str(cfg_path)]) == 4  # still waiting: exit 4, nothing changes
    assert turn_history(cfg)[-1].stage == "waiting-for-labels"

    # a person labels the exported images (the oracle: defects are "wet")
    with open(turn.dir / "export" / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == turn.exported
    for r in rows:
        r["label"] = "wet" if "local" in Path(r["path"]).name else "dry"
    with open(labels, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    # the retrain fails once (a crash): the turn stays at "imported" and the next run carries on from there
    import novelty.flywheel.retrain as retrain_module

    real = retrain_module.retrain
    monkeypatch.setattr(
        retrain_module, "retrain", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone"))
    )
    with pytest.raises(OSError, match="disk gone"):
        run_turn(cfg)
    assert turn_history(cfg)[-1].stage == "imported"
    monkeypatch.setattr(retrain_module, "retrain", real)

    # a kill right after register, before the turn's state is saved: the re-run must not train and register a
    # second challenger (hardening: 0002 was orphaned and 0003 compared)
    real_register = Registry.register

    def register_then_die(self, *a, **k):
        real_register(self, *a, **k)
        raise OSError("killed after register")

    monkeypatch.setattr(Registry, "register", register_then_die)
    with pytest.raises(OSError, match="killed after register"):
        run_turn(cfg)
    assert turn_history(cfg)[-1].stage == "imported"
    assert [v.version for v in Registry.open(tmp_path / "registry").list_versions()] == ["0001", "0002"]
    monkeypatch.setattr(Registry, "register", real_register)
    monkeypatch.setattr(  # the saved challenger is reused: training again would fail the test
        retrain_module, "retrain", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained twice"))
    )

    turn = run_turn(cfg)
    monkeypatch.setattr(retrain_module, "retrain", real)
    assert [v.version for v in Registry.open(tmp_path / "registry").list_versions()] == ["0001", "0002"]
    assert turn.challenger == "0002"
    assert turn.stage in ("promoted", "rejected")
    assert turn.labels_bought == turn.exported
    assert turn.trained_on + turn.held_out == turn.exported + turn.auto_accepted
    assert turn.held_out >= 1
    comparison = json.loads((turn.dir / "comparison.json").read_text())
    assert comparison["passed"] == (turn.stage == "promoted")
    assert (turn.dir / "comparison.html").is_file()
    reg = Registry.open(tmp_path / "registry")
    assert reg.alias("challenger") == turn.challenger
    assert reg.alias("champion") == (turn.challenger if turn.stage == "promoted" else first)

    log = [json.loads(x) for x in (tmp_path / "turns" / "turns.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["turn"] == 1
    assert log[0]["labels_bought"] == turn.exported
    assert log[0]["labels_cost"] == pytest.approx(0.10 * turn.exported)
    assert log[0]["compute_s"] > 0 and log[0]["currency"] == "EUR"
    if turn.auto_accepted or (turn.audit and turn.audit["n"]):  # audited: 10 % of what the rule would take
        assert turn.audit is not None and log[0]["audit"] == turn.audit
    assert set(log[0]["compute_by_stage_s"]) == {"select", "export", "import", "retrain", "compare"}
    print("turn 1:", turn.stage, turn.reasons, log[0])

    # the next run starts turn 2 from the (possibly new) champion and stops at the next labels
    turn2 = run_turn(cfg)
    assert turn2.number == 2 and turn2.champion == reg.alias("champion")
    assert turn2.stage == "waiting-for-labels" or turn2.exported == 0
    assert main(["flywheel", "status", "--config", str(cfg_path)]) == 0
