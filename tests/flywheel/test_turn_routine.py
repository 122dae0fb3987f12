"""The routine of a flywheel turn: no label bought twice, automatic labels only in training, a stalled turn
retried, aborted or moved on, and the files a selection writes kept in its own folder.

Real image files (textile) and a real detector fitted on their cached embeddings; the turn's stages run
unchanged up to the labels people give, which the tests write as the labelling tool would."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from novelty.errors import InvalidInputError
from novelty.fileio import sha256_bytes, sha256_file
from novelty.flywheel.dataset import Dataset, Entry
from novelty.flywheel.pools import Pool
from novelty.flywheel.selection import Selection, select
from novelty.flywheel.turn import load_config, run_turn

CLASSES = ["dry", "wet"]


# --- helpers ------------------------------------------------------------------------------------------------
def _pool(n: int, rng: np.random.Generator) -> Pool:
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    p = np.linspace(0.01, 1.0, n)
    ids = [f"img{i:03d}" for i in range(n)]
    return Pool(
        ids=ids,
        paths=[f"/data/{i}.jpg" for i in ids],
        sha256=[sha256_bytes(i.encode()) for i in ids],
        sources=[("folder:/data",)] * n,
        embeddings=emb,
        p_value=p,
        novelty=1 - p,
        score=-p,
        is_novel=p < 0.05,
        timestamps=[None] * n,
        alpha=0.05,
        detector_id="det-test",
    )


def _entry(path: Path | str, sha: str, label: str, *, labeller: str = "human:test", **kw) -> Entry:
    return Entry(
        id=kw.pop("id", sha[:16]),
        sha256=sha,
        path=str(path),
        label=label,
        source="test",
        labeller=labeller,
        auto=labeller.startswith("model:"),
        **kw,
    )


def _copy(paths, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        q = folder / f"{p.parent.name}-{p.name}"
        shutil.copyfile(p, q)
        out.append(q)
    return out


def _file_dataset(path: Path, files: list[Path], label_of) -> Dataset:
    ds = Dataset.create(path, CLASSES)
    ds.add(
        [_entry(p, sha256_file(p), label_of(p), group=p.name, condition="clean") for p in files],
        source="setup",
    )
    return ds


# --- 1. no label bought twice ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["random", "novelty", "diversity", "hybrid"])
def test_select_leaves_out_what_a_dataset_labels_and_spends_the_budget_on_the_rest(tmp_path, rng, strategy):
    pool = _pool(20, rng)
    ds = Dataset.create(tmp_path / "train", CLASSES)
    known = [1, 3, 5, 7]  # the most novel images: every strategy would like them
    ds.add([_entry(pool.paths[i], pool.sha256[i], "wet") for i in known], source="setup")
    sel = select(pool, 8, strategy, dataset=tmp_path / "train", radius=0.0)
    assert len(sel) == 8
    assert not {it.sha256 for it in sel.items} & {pool.sha256[i] for i in known}
    assert sel.n_already_labelled == 4 and sel.labelled_in == [str(tmp_path / "train")]
    assert sel.pool_size == 20
    assert all(pool.sha256[p] == it.sha256 for p, it in zip(sel.positions, sel.items, strict=True))
    sel.save(tmp_path / "selection.json")
    raw = json.loads((tmp_path / "selection.json").read_text())
    assert raw["pool"]["n_already_labelled"] == 4
    assert Selection.load(tmp_path / "selection.json").n_already_labelled == 4
    # without a dataset nothing is left out, and nothing is claimed
    plain = select(pool, 8, strategy, radius=0.0)
    assert plain.n_already_labelled is None
    assert json.loads(json.dumps(plain.to_json()))["pool"]["n_already_labelled"] is None


def test_select_when_everything_is_labelled_already(tmp_path, rng):
    from novelty.flywheel.selection import SelectionError

    pool = _pool(3, rng)
    ds = Dataset.create(tmp_path / "train", CLASSES)
    ds.add([_entry(pool.paths[i], pool.sha256[i], "dry") for i in range(3)], source="setup")
    with pytest.raises(SelectionError, match="labelled already"):
        select(pool, 2, "random", dataset=ds)
    # a dataset directory that does not exist yet (a new slice before its first turn) labels nothing
    assert select(pool, 2, "random", dataset=[tmp_path / "new"]).n_already_labelled == 0


def test_export_counts_what_other_datasets_label(tmp_path, textile_paths):
    from novelty.flywheel.labels.labelling import export_selection

    files = _copy(textile_paths["nominal"][:4], tmp_path / "img")
    items = [
        {
            "id": f"item{i}",
            "path": str(p),
            "sha256": sha256_file(p),
            "rank": i + 1,
            "reason": "",
            "p_value": 0.5,
            "novelty": 0.5,
            "is_novel": False,
        }
        for i, p in enumerate(files)
    ]
    sel = {
        "format": "novelty-selection",
        "format_version": 1,
        "created": "2026-01-01T00:00:00Z",
        "strategy": "random",
        "budget": 4,
        "seed": 0,
        "weights": {},
        "detector_id": "d",
        "model_version": "d",
        "classes": CLASSES,
        "alpha": 0.05,
        "items": items,
    }
    (tmp_path / "selection.json").write_text(json.dumps(sel))
    _file_dataset(tmp_path / "test", files[:1], lambda p: "dry")
    _file_dataset(tmp_path / "train", files[1:2], lambda p: "dry")
    res = export_selection(
        tmp_path / "selection.json",
        tmp_path / "export",
        format="csv",
        labelled=[tmp_path / "test", tmp_path / "train"],
    )
    assert res.n_already_labelled == 2 and res.n_exported == 2
    assert json.loads((tmp_path / "export" / "export.json").read_text())["n_already_labelled"] == 2
    assert len(Dataset.open(tmp_path / "train")) == 1  # given nothing


# --- a real turn -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def champion_dir(embedder, textile_paths, textile_embeddings, tmp_path_factory) -> Path:
    """kNN + a dry (nominal) / wet (global defect) head fitted on real embeddings, saved."""
    from novelty.detector import NoveltyDetector

    x = np.concatenate([textile_embeddings["nominal"][:300], textile_embeddings["global"][:100]])
    labels = ["dry"] * 300 + ["wet"] * 100
    ids = [str(p) for p in textile_paths["nominal"][:300] + textile_paths["global"][:100]]
    det = NoveltyDetector(embedder=embedder, calibration_fraction=0.3).fit_embeddings(x, labels, ids=ids)
    out = tmp_path_factory.mktemp("turn-champion") / "det"
    det.save(out)
    return out


def _label(p: Path) -> str:
    return "dry" if "nominal" in p.name else "wet"


@pytest.fixture
def flywheel(tmp_path, champion_dir, textile_paths):
    """A registry with the champion, a training set, a test set, and an inbox of 10 production images of
    which 4 are labelled in the training set already (the flagged frames of the walkthrough)."""
    from novelty.flywheel.registry.store import Registry

    reg = Registry.create(tmp_path / "registry")
    reg.promote(reg.register(champion_dir, note="first"), force=True, reason="test")
    inbox = _copy(textile_paths["nominal"][900:906] + textile_paths["local"][:4], tmp_path / "incoming")
    train_files = _copy(
        textile_paths["nominal"][:6] + textile_paths["global"][:4], tmp_path / "img" / "train"
    )
    _file_dataset(tmp_path / "train", train_files + inbox[4:8], _label)
    test_files = _copy(
        textile_paths["nominal"][500:504] + textile_paths["local"][300:302], tmp_path / "img" / "t"
    )
    _file_dataset(tmp_path / "test", test_files, _label)
    return tmp_path, inbox


def _config(root: Path, extra: str = "", label: str = "") -> Path:
    text = (
        'registry = "registry"\ndataset = "train"\ntest = "test"\nnew_slice = "new"\nworkdir = "turns"\n'
        f"[select]\nsources = ['incoming']\nstrategy = 'random'\nbudget = 10\n{extra}"
        "[label]\nformat = 'csv'\nlabels = 'turns/{turn}/labels.csv'\n" + label
    )
    path = root / "flywheel.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_turn_never_buys_a_label_the_training_set_has(flywheel):
    root, inbox = flywheel
    said: list[str] = []
    turn = run_turn(load_config(_config(root, label="auto_accept = false\n")), say=said.append)
    assert turn.stage == "waiting-for-labels"
    sel = Selection.load(turn.dir / "selection.json")
    labelled = {sha256_file(p) for p in inbox[4:8]}
    assert not {it.sha256 for it in sel.items} & labelled
    assert len(sel) == 6 and sel.n_already_labelled == 4
    assert turn.already_labelled == 4 and turn.exported == 6
    assert any("4 labelled already left out" in m for m in said)
    with open(turn.dir / "export" / "labels.csv", newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 6


def test_select_command_leaves_out_what_dataset_labels(flywheel, champion_dir, capsys):
    from novelty.cli import main

    root, _ = flywheel
    out = root / "sel" / "selection.json"
    args = ["select", str(champion_dir), str(root / "incoming"), "--budget", "10", "--strategy", "novelty"]
    assert main([*args, "--dataset", str(root / "train"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"4 already labelled left out ({root / 'train'})" in text
    sel = Selection.load(out)
    assert len(sel) == 6 and sel.n_already_labelled == 4
    assert main([*args, "--dataset", str(root / "nowhere"), "--out", str(out)]) == 2
    assert "not a labelled dataset" in capsys.readouterr().err


# --- a turn stopped at its labels, prepared as the select and export stages leave it ----------------------------
def _selection_file(path: Path, files: list[Path]) -> None:
    items = [
        {
            "id": p.stem,
            "path": str(p),
            "sha256": sha256_file(p),
            "source": "test",
            "rank": i + 1,
            "reason": "",
            "p_value": 0.5,
            "novelty": 0.5,
            "is_novel": False,
            "prediction": "dry",
            "probability": 0.99,
        }
        for i, p in enumerate(files)
    ]
    sel = {
        "format": "novelty-selection",
        "format_version": 1,
        "created": "2026-01-01T00:00:00Z",
        "strategy": "random",
        "budget": len(items),
        "seed": 0,
        "weights": {},
        "detector_id": "d",
        "model_version": "d",
        "classes": CLASSES,
        "alpha": 0.05,
        "items": items,
    }
    path.write_text(json.dumps(sel))


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def exported(tmp_path, textile_paths):
    """A flywheel whose turn 1 is exported: 12 images in 6 groups (two frames each); in every group one image
    went to people and one was accepted from the model. Returns ``(config path, people, auto)``."""
    from novelty.flywheel.registry.store import Registry
    from novelty.flywheel.turn import Turn

    Registry.create(tmp_path / "registry")
    train = _copy(textile_paths["nominal"][:2], tmp_path / "img" / "train")
    _file_dataset(tmp_path / "train", train, _label)
    _file_dataset(tmp_path / "test", _copy(textile_paths["nominal"][2:4], tmp_path / "img" / "test"), _label)
    files = _copy(textile_paths["nominal"][700:712], tmp_path / "production")
    people, auto = files[0::2], files[1::2]
    d = tmp_path / "turns" / "0001"
    (d / "export").mkdir(parents=True)
    _selection_file(d / "selection.json", files)
    (d / "export" / "export.json").write_text(json.dumps({"auto_accept": {"audit": []}}))
    _csv(
        d / "export" / "auto_labels.csv",
        ["id", "path", "sha256", "label", "labeller", "group", "condition"],
        [[p.stem, str(p), sha256_file(p), "dry", "model:d", f"g{i}", "clean"] for i, p in enumerate(auto)],
    )
    _csv(
        d / "labels.csv",
        ["id", "label", "group", "labeller"],
        [[p.stem, "dry", f"g{i}", "ann"] for i, p in enumerate(people)],
    )
    Turn(number=1, dir=d, stage="exported", champion="0001", exported=6, auto_accepted=6).save()
    cfg = _config(tmp_path, label="holdout = 0.5\n")
    return cfg, people, auto


def _import_stage(cfg_path: Path) -> tuple[object, list[str]]:
    import novelty.flywheel.turn as T

    cfg = load_config(cfg_path)
    turn = T.Turn.load(cfg.workdir / "0001")
    said: list[str] = []
    T._import(cfg, None, turn, said.append)
    turn.save()
    return turn, said


def test_automatic_labels_never_enter_the_new_slice(exported):
    cfg_path, _, _ = exported
    turn, said = _import_stage(cfg_path)
    root = cfg_path.parent
    new = Dataset.open(root / "new").entries()
    assert len(new) == 3 and turn.held_out == 3
    assert not any(e.auto for e in new) and all(e.labeller == "human:ann" for e in new)
    held_groups = {e.group for e in new}
    trained = [e for e in Dataset.open(root / "train").entries() if e.version > 1]
    assert {e.group for e in trained if e.auto} == {f"g{i}" for i in range(6)} - held_groups
    assert not {e.group for e in trained} & held_groups  # no frame of a slice group is trained on
    assert turn.withheld == 3 and turn.trained_on == 6 and len(trained) == 6
    assert any("3 accepted from the model in the slice's groups left out of both" in m for m in said)
    # the test set is never written
    assert len(Dataset.open(root / "test").entries()) == 2 and Dataset.open(root / "test").latest_version == 1


def test_a_turn_takes_a_persons_label_over_the_models_label_in_the_training_set(exported):
    cfg_path, people, _ = exported
    root = cfg_path.parent
    _config(root, label="holdout = 0.0\n")  # every label to training
    Dataset.open(root / "train").add(  # accepted from the model meanwhile (novelty export --auto-accept)
        [_entry(people[0], sha256_file(people[0]), "wet", labeller="model:old", group="g0")], source="auto"
    )
    turn, said = _import_stage(cfg_path)
    assert turn.stage == "imported"
    label = {e.sha256: e for e in Dataset.open(root / "train").entries()}[sha256_file(people[0])]
    assert (label.label, label.labeller) == ("dry", "human:ann")
    assert len(turn.conflicts) == 1 and "human over auto" in turn.conflicts[0]
    assert any("settled" in m and "human over auto" in m for m in said)


# --- 4. a stalled turn: retried, aborted, or moved on -----------------------------------------------------------
@pytest.fixture
def later_stages(monkeypatch):
    """The stages after the import stand in for themselves: a challenger registered, compared, not passing."""
    import novelty.flywheel.turn as T

    def retrain(config, registry, turn, say):
        turn.challenger, turn.stage = "0002", "retrained"

    def compare(config, registry, turn, say):
        turn.passed, turn.stage = False, "compared"

    monkeypatch.setattr(T, "_retrain", retrain)
    monkeypatch.setattr(T, "_compare", compare)


def _people_labels(cfg_path: Path, people: list[Path], labels: dict[int, str] | None = None) -> None:
    labels = labels or {}
    _csv(
        cfg_path.parent / "turns" / "0001" / "labels.csv",
        ["id", "label", "group", "labeller"],
        [[p.stem, labels.get(i, "dry"), f"g{i}", "ann"] for i, p in enumerate(people)],
    )


def test_a_failed_import_is_recorded_shown_and_retried(exported, later_stages, capsys):
    from novelty.cli import main
    from novelty.flywheel.labels.labelimport import LabelImportError
    from novelty.flywheel.turn import Turn

    cfg_path, people, _ = exported
    d = cfg_path.parent / "turns" / "0001"
    _people_labels(cfg_path, people, {0: "fog"})
    with pytest.raises(LabelImportError, match="fog"):
        run_turn(load_config(cfg_path))
    turn = Turn.load(d)
    assert turn.stage == "exported" and turn.error["stage"] == "import" and "fog" in turn.error["message"]
    assert not (d / "labels").exists()
    assert main(["flywheel", "status", "--config", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert "import failed:" in out and "unknown class 'fog'" in out
    assert f"novelty flywheel run --config {cfg_path} --retry" in out and "--abort" in out
    _people_labels(cfg_path, people)  # fixed
    assert main(["flywheel", "run", "--config", str(cfg_path), "--retry"]) == 0
    turn = Turn.load(d)
    assert turn.stage == "rejected" and turn.error is None and turn.labels_bought == 6
    assert (d / "labels" / "dataset.json").is_file() and not (d / "labels.staging").exists()
    assert "retrying import" in capsys.readouterr().err


def test_what_a_failed_import_left_is_never_in_the_way(exported, later_stages):
    """The people's labels are staged, then the training set refuses them (ann and bob disagree about one
    image); the labels file is corrected and the conflict settled: the next run must not read the old staging."""
    cfg_path, people, _ = exported
    root = cfg_path.parent
    Dataset.open(root / "train").add(
        [_entry(people[1], sha256_file(people[1]), "wet", labeller="human:bob", time="2026-01-01T00:00:00Z")],
        source="bob",
    )
    _config(root, label="holdout = 0.0\n")
    _people_labels(cfg_path, people)
    with pytest.raises(InvalidInputError, match="conflicting labels"):
        run_turn(load_config(cfg_path))
    _people_labels(cfg_path, people, {2: "wet"})  # ann corrects one of hers
    _config(root, label="holdout = 0.0\non_conflict = 'skip'\n")  # and bob's label stands
    turn = run_turn(load_config(cfg_path))
    assert turn.stage == "rejected" and turn.error is None
    standing = {e.sha256: e.label for e in Dataset.open(root / "train").entries()}
    assert standing[sha256_file(people[2])] == "wet" and standing[sha256_file(people[1])] == "wet"
    assert len(turn.conflicts) == 1 and "human:bob" in turn.conflicts[0]
    assert {e.sha256: e.label for e in Dataset.open(root / "turns" / "0001" / "labels").entries()}[
        sha256_file(people[2])
    ] == "wet"


def test_skip_import_goes_on_with_the_labels_accepted_from_the_model(exported, later_stages):
    cfg_path, _, auto = exported
    (cfg_path.parent / "turns" / "0001" / "labels.csv").unlink()  # the people's labels never came
    turn = run_turn(load_config(cfg_path))
    assert turn.stage == "waiting-for-labels"
    turn = run_turn(load_config(cfg_path), skip_stage="import")
    assert turn.stage == "rejected" and turn.skipped == ["import"]
    assert turn.labels_bought == 0 and turn.trained_on == 6 and turn.held_out == 0
    trained = [e for e in Dataset.open(cfg_path.parent / "train").entries() if e.version > 1]
    assert sorted(e.path for e in trained) == sorted(str(p) for p in auto) and all(e.auto for e in trained)


def test_refused_retries_and_skips_say_why(exported, capsys):
    from novelty.cli import main
    from novelty.flywheel.turn import Turn, TurnActionError

    cfg_path, _, _ = exported
    cfg = load_config(cfg_path)
    with pytest.raises(TurnActionError, match="nothing failed in turn 1"):
        run_turn(cfg, retry=True)
    with pytest.raises(TurnActionError, match="its next stage is import"):
        run_turn(cfg, skip_stage="retrain")
    d = cfg.workdir / "0001"
    turn = Turn.load(d)
    for stage, why in [
        ("retrain", "without a challenger there is nothing to compare"),
        ("compare", "promoted only on a recorded comparison"),
    ]:
        turn.stage = {"retrain": "imported", "compare": "retrained"}[stage]
        turn.save()
        args = ["flywheel", "run", "--config", str(cfg_path), "--skip-stage", stage]
        assert main(args) == 2
        assert why in capsys.readouterr().err
    turn.stage, turn.passed = "compared", True
    turn.save()
    turn = run_turn(cfg, skip_stage="promote")  # the gate passed; the operator keeps the champion
    assert turn.stage == "rejected" and "promotion skipped" in turn.reasons[-1]
    with pytest.raises(TurnActionError, match="no unfinished turn"):
        run_turn(cfg, retry=True)


def test_abort_ends_the_turn_and_the_next_run_starts_a_new_one(exported, champion_dir, monkeypatch, capsys):
    import novelty.flywheel.turn as T
    from novelty.cli import main
    from novelty.flywheel.registry.store import Registry

    cfg_path, _, _ = exported
    root = cfg_path.parent
    reg = Registry.open(root / "registry")
    reg.promote(reg.register(champion_dir, note="first"), force=True, reason="test")
    args = ["flywheel", "run", "--config", str(cfg_path)]
    assert main([*args, "--abort", "--reason", "the labelling firm went away"]) == 0
    turn = T.Turn.load(root / "turns" / "0001")
    assert turn.stage == "aborted" and turn.aborted_at == "exported"
    assert turn.message == "the labelling firm went away"
    log = [json.loads(x) for x in (root / "turns" / "turns.jsonl").read_text().splitlines()]
    assert [(x["turn"], x["stage"]) for x in log] == [(1, "aborted")]
    assert main([*args, "--abort"]) == 2 and "no unfinished turn" in capsys.readouterr().err
    assert main(["flywheel", "status", "--config", str(cfg_path)]) == 0
    assert "starts turn 2" in capsys.readouterr().out

    def select(config, registry, turn, say):
        raise OSError("the sources are offline")

    monkeypatch.setattr(T, "_select", select)
    with pytest.raises(OSError):
        run_turn(load_config(cfg_path))
    turn = T.Turn.load(root / "turns" / "0002")
    assert turn.stage == "started" and turn.error["stage"] == "select"


# --- 5. a selection writes only into its own folder --------------------------------------------------------------
def test_select_writes_flagged_images_into_the_selections_own_folder(
    flywheel, champion_dir, textile_paths, capsys
):
    from novelty.cli import main
    from novelty.flags import SQLiteFlagStore

    root, _ = flywheel
    store = SQLiteFlagStore(root / "flags")
    store.add(textile_paths["local"][50].read_bytes(), source="car-1")
    store.close()
    data = root / "incoming"  # the user's own data folder, where the selection file is written
    before = sorted(p.name for p in data.iterdir())
    out = data / "selection.json"
    args = ["select", str(champion_dir), str(data), "--flags", str(root / "flags"), "--budget", "12"]
    assert main([*args, "--strategy", "random", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    own = data / "selection.images"
    assert sorted(p.name for p in data.iterdir()) == sorted([*before, "selection.json", "selection.images"])
    assert not (data / "images").exists()
    flagged = [it for it in Selection.load(out).items if it.source.startswith("flag:")]
    assert len(flagged) == 1 and Path(flagged[0].path).parent == own.resolve()
    assert f"1 image(s) without a file of their own (flags, archive members) are in {own}" in text


def test_route_keeps_every_group_where_an_earlier_turn_put_it():
    from novelty.flywheel.turn import _route

    def e(i: int, group: str | None, auto: bool = False) -> Entry:
        return Entry(
            id=f"e{i}",
            sha256=f"{i:064x}",
            path=f"/p/{i}.jpg",
            label="dry",
            source="t",
            labeller="model:x" if auto else "human:a",
            group=group,
            auto=auto,
        )

    entries = [e(0, "trained"), e(1, "trained", True), e(2, "sliced"), e(3, "sliced", True), e(4, "tested")]
    entries += [e(10 + i, f"new{i}") for i in range(8)] + [e(20, None), e(21, None)]
    for seed in range(6):
        train, held, withheld = _route(
            entries, 0.5, seed, trained=["trained", "both"], evaluated=["sliced", "tested", "both"]
        )
        ids = lambda es: {x.id for x in es}  # noqa: E731
        assert {"e0", "e1"} <= ids(train) and {"e2", "e4"} <= ids(held) and ids(withheld) >= {"e3"}
        assert not ids(train) & ids(held) and not ids(train) & ids(withheld)
        assert ids(train) | ids(held) | ids(withheld) == ids(entries)
        fresh = {x.group for x in held if x.group and x.group.startswith("new")}
        assert 0 < len(fresh) < 8  # only the groups new to both are split
        assert not {x.group for x in train} & {x.group for x in held} - {None}  # no group: each its own


def test_a_turn_puts_labels_of_groups_placed_before_where_those_groups_are(exported, textile_paths):
    """People's labels of a group the training set has go to training, of a group the new slice has to the
    slice; the model's labels of a slice group are left out of both."""
    cfg_path, _, _ = exported
    root = cfg_path.parent
    earlier = _copy(textile_paths["nominal"][4:10], root / "img" / "earlier")
    trained, sliced = ["g0", "g2", "g4"], ["g1", "g3", "g5"]
    Dataset.open(root / "train").add(
        [_entry(p, sha256_file(p), "dry", group=g) for p, g in zip(earlier[:3], trained, strict=True)],
        source="turn 0",
    )
    Dataset.create(root / "new", CLASSES).add(
        [_entry(p, sha256_file(p), "dry", group=g) for p, g in zip(earlier[3:], sliced, strict=True)],
        source="turn 0",
    )
    turn, _ = _import_stage(cfg_path)
    before = {sha256_file(p) for p in earlier}
    now_trained = [e for e in Dataset.open(root / "train").entries() if e.version > 2]
    now_held = [e for e in Dataset.open(root / "new").entries() if e.sha256 not in before]
    assert {e.group for e in now_trained} == set(trained)  # people's and the model's labels of those groups
    assert len(now_trained) == 6 and sum(e.auto for e in now_trained) == 3
    assert {e.group for e in now_held} == set(sliced) and not any(e.auto for e in now_held)
    assert turn.withheld == 3 and turn.held_out == 3 and turn.trained_on == 6
