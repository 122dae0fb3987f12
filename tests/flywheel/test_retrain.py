"""The training record (params, config hash, record.json) and retraining a champion on a labelled dataset.

Fast tier: datasets of real image files whose embeddings sit in the dataset's cache (synthetic vectors), so
retrain runs unchanged without a backbone pass; the detectors are kNN + a head trained for a few epochs.
The retrain on real frames (the windshield scenario) is in tests/flywheel/test_compare.py.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from retrain_support import CLASSES, Item, add_items, synthetic, write_pngs  # tests/retrain_support.py

import novelty
from novelty.artifact import read_artifact
from novelty.cli import main
from novelty.errors import ArtifactError, InvalidInputError, NoveltyError
from novelty.flywheel import record as R
from novelty.flywheel.dataset import Dataset
from novelty.flywheel.record import (
    ConfigMismatchError,
    TrainingRecord,
    TrainingRecordError,
    build_detector,
    config_hash,
    detector_params,
    load_champion,
    locate,
    params_from_artifact,
    with_seed,
)
from novelty.flywheel.retrain import RetrainError, parse_window, retrain, save_retrained

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
HEAD = {"max_epochs": 20, "patience": 5}


def iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def template(embedder: novelty.Embedder, **kw: object) -> novelty.NoveltyDetector:
    args: dict = {"scorers": ("knn",), "head": HEAD, "alpha": 0.1, "calibration_fraction": 1 / 3, "seed": 0}
    args.update(kw)
    return novelty.NoveltyDetector(embedder=embedder, **args)


@pytest.fixture(scope="module")
def base(tmp_path_factory, embedder: novelty.Embedder) -> Path:
    """``ds``: version 1, 60 clean images labelled 40 days before NOW (pairs share a group); version 2, 30
    tunnel images, each its own group, labelled 2 days before NOW (their class shows along other dimensions:
    a clean-only head is at chance on them). ``champion``: kNN + head trained on version 1, saved with its
    record as champion/detector + champion/record.json; ``plain``: the same without a head. Tests work on
    copies (the ``ds``, ``champion_dir`` and ``plain_dir`` fixtures)."""
    root = tmp_path_factory.mktemp("retrain-base")
    rng = np.random.default_rng(0)
    d = Dataset.create(root / "ds", CLASSES)
    labels = [CLASSES[i % 2] for i in range(60)]
    x = synthetic(rng, labels, ["clean"] * 60, embedder.dim)
    items = [
        Item(y, "clean", f"c{i // 2}", iso(NOW - timedelta(days=40)), x[i]) for i, y in enumerate(labels)
    ]
    add_items(d, items, write_pngs(root / "img", 60, rng), embedder=embedder)
    labels2 = [CLASSES[i % 2] for i in range(30)]
    x2 = synthetic(rng, labels2, ["tunnel"] * 30, embedder.dim, shifts={"tunnel": 1.0}, own=["tunnel"])
    items2 = [Item(y, "tunnel", None, iso(NOW - timedelta(days=2)), x2[i]) for i, y in enumerate(labels2)]
    add_items(d, items2, write_pngs(root / "img", 30, rng, start=60), embedder=embedder)
    for name, det in (("champion", template(embedder)), ("plain", template(embedder, head=False))):
        fitted, rec = retrain(det, d, version=1, now=NOW)
        save_retrained(fitted, rec, root / name)
    return root


@pytest.fixture
def ds(base: Path, tmp_path: Path) -> Dataset:
    shutil.copytree(base / "ds", tmp_path / "ds")
    return Dataset.open(tmp_path / "ds")


@pytest.fixture
def champion_dir(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base / "champion", tmp_path / "champion"))


@pytest.fixture
def plain_dir(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base / "plain", tmp_path / "plain"))


# --- parameters and the config hash -------------------------------------------------------------------
def test_config_hash_is_canonical_and_leaves_out_only_the_seeds(embedder):
    p = detector_params(template(embedder, scorers={"knn": {"k": 7}, "autoencoder": {"max_epochs": 3}}))
    assert p["scorers"][1]["params"]["seed"] == 0 and p["head"]["seed"] == 0
    h = config_hash(p)
    reordered = json.loads(json.dumps(p, sort_keys=False), object_pairs_hook=lambda kv: dict(reversed(kv)))
    assert config_hash(reordered) == h  # key order does not matter
    s = with_seed(p, 7)
    assert (s["seed"], s["scorers"][1]["params"]["seed"], s["head"]["seed"]) == (7, 7, 7)
    assert "seed" not in s["scorers"][0]["params"]  # kNN has no seed: none is added
    assert config_hash(s) == h and s != p  # the seeds are recorded, not hashed
    changes = {
        "alpha": 0.2,
        "calibration_fraction": 0.5,
        "n_neighbors": 3,
        "draft": False,
        "backbone": "resnet18",
        "weights_fingerprint": "0" * 64,
        "index": {"metric": "cosine", "factory": "HNSW32"},
        "head": None,
    }
    for key, value in changes.items():
        assert config_hash({**p, key: value}) != h, key
    k8 = json.loads(json.dumps(p))
    k8["scorers"][0]["params"]["k"] = 8
    assert config_hash(k8) != h
    lr = json.loads(json.dumps(p))
    lr["head"]["lr"] = 0.1
    assert config_hash(lr) != h
    # the hash is sha256 of the canonical JSON of the seedless params (documented for other tools)
    import hashlib

    text = json.dumps(R.hashed_params(p), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert h == hashlib.sha256(text.encode()).hexdigest()
    with pytest.raises(InvalidInputError):
        with_seed(p, -1)


def test_build_detector_is_the_inverse_of_detector_params(embedder):
    for det in (
        template(embedder),
        template(
            embedder,
            head=False,
            index="HNSW32",
            n_neighbors=2,
            scorers={"knn": {"k": 3, "aggregate": "mean"}},
        ),
    ):
        p = detector_params(det)
        again = build_detector(p, embedder=embedder)
        assert detector_params(again) == p
        assert again.embedder is embedder  # the backbone is shared, not loaded again
    assert detector_params(template(embedder, head=False))["head"] is None
    p = detector_params(template(embedder))
    with pytest.raises(ConfigMismatchError, match="fingerprint"):
        build_detector({**p, "weights_fingerprint": "f" * 64}, embedder=embedder)
    with pytest.raises(TrainingRecordError, match="missing seed"):
        build_detector({k: v for k, v in p.items() if k != "seed"}, embedder=embedder)


def test_params_from_artifact_equal_the_loaded_detectors(tmp_path, embedder):
    # the shipped windshield detector: kNN + autoencoder + head, saved before the draft field existed
    shipped = Path(__file__).resolve().parents[2] / "checkpoints" / "windshield"
    params, artifact_id = params_from_artifact(shipped)
    det = novelty.load(shipped, embedder=embedder)
    assert params == detector_params(det) and artifact_id == det.artifact_id_
    assert [s["name"] for s in params["scorers"]] == ["knn", "autoencoder"] and params["head"]["hidden"] == 0
    # a detector without a head, saved here
    rng = np.random.default_rng(1)
    x = synthetic(rng, ["dry"] * 40, ["clean"] * 40, embedder.dim)
    plain = template(embedder, head=False).fit_embeddings(x)
    plain.save(tmp_path / "plain")
    p2, _ = params_from_artifact(tmp_path / "plain")
    assert p2 == detector_params(novelty.load(tmp_path / "plain", embedder=embedder)) and p2["head"] is None
    # a detector fitted without labels has no head, whatever its head parameter said
    assert detector_params(template(embedder).fit_embeddings(x))["head"] is None


# --- record.json ------------------------------------------------------------------------------------
def test_record_round_trip_and_validation(tmp_path, embedder):
    p = detector_params(template(embedder))
    rec = TrainingRecord(
        params=p,
        config_hash=config_hash(p),
        dataset=R.DatasetRef("/data/ds", 2, "a" * 64, 90, "30d", False),
        created="2026-12-01T12:00:00Z",
        compute_s=1.5,
        parent=None,
    )
    with pytest.raises(TrainingRecordError, match="save the detector first"):
        rec.save(tmp_path / "record.json")
    saved = rec.with_artifact("b" * 64)
    path = saved.save(tmp_path)  # a folder: record.json inside
    assert path == tmp_path / "record.json"
    data = json.loads(path.read_text())
    assert data["format"] == "novelty-training-record" and data["format_version"] == 1
    assert set(data) == {
        "format",
        "format_version",
        "params",
        "config_hash",
        "dataset",
        "created",
        "compute_s",
        "parent",
        "artifact_id",
    }
    assert set(data["dataset"]) == {"path", "version", "identity", "n", "window", "new_only"}
    assert TrainingRecord.load(path) == saved
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".novelty-tmp")]  # atomic: nothing left
    # edited, broken or foreign files are refused with the reason
    bad = {
        "edited": {**data, "params": {**data["params"], "alpha": 0.5}},
        "format": {**data, "format": "something-else"},
        "version": {**data, "format_version": 2},
        "compute": {**data, "compute_s": "fast"},
        "dataset": {**data, "dataset": {**data["dataset"], "version": "2"}},
        "params": {**data, "params": {**data["params"], "extra": 1}},
    }
    messages = {
        "edited": "was edited",
        "format": "format",
        "version": "not supported",
        "compute": "compute_s",
        "dataset": "version",
        "params": "unknown extra",
    }
    for name, doc in bad.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
        with pytest.raises(TrainingRecordError, match=messages[name]):
            TrainingRecord.load(tmp_path / f"{name}.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(TrainingRecordError, match="not a readable"):
        TrainingRecord.load(tmp_path / "junk.json")
    with pytest.raises(TrainingRecordError, match="no training record"):
        TrainingRecord.load(tmp_path / "absent.json")
    assert issubclass(TrainingRecordError, NoveltyError)


def test_locate_and_load_champion(champion_dir, tmp_path, embedder, caplog):
    where = locate(champion_dir)
    assert (
        where.detector_dir == champion_dir / "detector" and where.record_path == champion_dir / "record.json"
    )
    via_detector = locate(champion_dir / "detector")  # e.g. a registry's champion symlink
    assert via_detector.record_path == (champion_dir / "record.json").resolve()
    link = tmp_path / "champion-link"
    link.symlink_to(champion_dir / "detector", target_is_directory=True)
    assert locate(link).record_path == (champion_dir / "record.json").resolve()
    det, rec = load_champion(link, embedder=embedder)
    assert (
        rec is not None
        and rec.artifact_id == det.artifact_id_
        and rec.config_hash == config_hash(detector_params(det))
    )
    with pytest.raises(ArtifactError, match="no such detector"):
        locate(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not a detector"):
        locate(tmp_path / "empty")
    # a record that belongs to another artifact is ignored, with a warning
    data = json.loads((champion_dir / "record.json").read_text())
    (champion_dir / "record.json").write_text(json.dumps({**data, "artifact_id": "c" * 64}))
    with caplog.at_level("WARNING"):
        _, rec2 = load_champion(champion_dir, embedder=embedder)
    assert rec2 is None and "ignored" in caplog.text
    # a record of this artifact that claims other parameters is an error
    p = {**data["params"], "n_neighbors": 9}
    (champion_dir / "record.json").write_text(
        json.dumps({**data, "params": p, "config_hash": config_hash(p)})
    )
    with pytest.raises(TrainingRecordError, match="n_neighbors"):
        load_champion(champion_dir, embedder=embedder)


# --- retrain ----------------------------------------------------------------------------------------
def test_retrain_keeps_every_parameter_refits_every_part_and_records_it(ds, champion_dir, embedder):
    champ, champ_rec = load_champion(champion_dir, embedder=embedder)
    assert champ_rec is not None and champ_rec.parent is None and champ_rec.dataset.version == 1
    det, rec = retrain(champion_dir, ds, seed=3, now=NOW, embedder=embedder)
    assert rec.config_hash == champ_rec.config_hash == config_hash(detector_params(det))
    assert rec.params["seed"] == 3 and rec.params["head"]["seed"] == 3 and det.seed == 3
    assert rec.parent == champ.artifact_id_ and rec.artifact_id is None
    assert rec.dataset.version == 2 and rec.dataset.n == 90 and rec.dataset.window is None
    assert rec.dataset.identity == ds.identity(2) and rec.compute_s > 0
    assert det.index_.ntotal + det.calibrator_.n == 90  # index and calibration refitted on every entry
    assert det.split_ == "groups" and det.head_ is not None and det.head_.classes_ == ["dry", "wet"]
    # groups kept near-duplicates on one side of the split: no pair is cut
    entries = {e.path: e.group for e in ds.entries() if e.group is not None}
    fit_groups = {entries[p] for p in det.train_ids_ if p in entries}
    cal_groups = {entries[p] for p in det.calibration_ids_ if p in entries}
    assert len(fit_groups) + len(cal_groups) == 30
    assert not fit_groups & cal_groups
    # the head learnt the new condition: on the tunnel images the champion is at chance, the new head right
    tunnel = [e for e in ds.entries() if e.condition == "tunnel"]
    from novelty.flywheel.dataset import embed_entries

    x = embed_entries(tunnel, embedder, ds.embeddings_dir)
    truth = [e.label for e in tunnel]
    new_acc = np.mean(np.array(det.score_embeddings(x).predictions) == truth)
    old_acc = np.mean(np.array(champ.score_embeddings(x).predictions) == truth)
    assert old_acc <= 0.7 and new_acc >= 0.9, (old_acc, new_acc)
    # the same data and seed give the same detector (deterministic training)
    again, _ = retrain(champion_dir, ds, seed=3, now=NOW, embedder=embedder)
    np.testing.assert_allclose(again.score_embeddings(x).p_value, det.score_embeddings(x).p_value)


def test_training_window_versions_and_new_only(ds, plain_dir, embedder):
    _, rec = retrain(plain_dir, ds, window_days=30, now=NOW, embedder=embedder)
    assert rec.dataset.window == "30d" and rec.dataset.n == 30 and not rec.dataset.new_only
    _, rec = retrain(plain_dir, ds, new_only=True, now=NOW, embedder=embedder)
    assert rec.dataset.n == 30 and rec.dataset.new_only and "new after version 1" in rec.dataset.window
    _, rec = retrain(plain_dir, ds, versions=[1], now=NOW, embedder=embedder)
    assert rec.dataset.n == 60 and rec.dataset.window == "versions 1"
    with pytest.raises(RetrainError, match="holds no entries"):
        retrain(plain_dir, ds, window_days=1, now=NOW, embedder=embedder)
    with pytest.raises(RetrainError, match="nothing new"):
        retrain(plain_dir, ds, version=1, new_only=True, now=NOW, embedder=embedder)
    with pytest.raises(RetrainError, match="needs the champion's training record"):
        retrain(template(embedder), ds, new_only=True)  # a template has no record
    _, rec = retrain(plain_dir, ds, window_days=30, new_only=True, now=NOW, embedder=embedder)
    assert rec.dataset.window == "30d; new after version 1" and rec.dataset.n == 30
    assert parse_window("12h") == 0.5 and parse_window("2w") == 14.0
    for bad in ("30", "-3d", "soon", "0d"):
        with pytest.raises(InvalidInputError):
            parse_window(bad)


def test_retrain_refusals(ds, champion_dir, embedder, tmp_path, monkeypatch):
    # labels the champion's head lacks
    rng = np.random.default_rng(5)
    ds.add_classes(["slush"])
    x = synthetic(rng, ["slush"] * 10, ["snow"] * 10, embedder.dim)
    add_items(
        ds,
        [Item("slush", "snow", None, iso(NOW), v) for v in x],
        write_pngs(tmp_path / "s", 10, rng),
        embedder=embedder,
    )
    with pytest.raises(RetrainError, match=r"does not know: 'slush' \(10 images\)"):
        retrain(champion_dir, ds, now=NOW, embedder=embedder)
    det, rec = retrain(champion_dir, ds, allow_new_classes=True, now=NOW, embedder=embedder)
    assert det.head_.classes_ == ["dry", "slush", "wet"] and rec.config_hash == config_hash(
        detector_params(det)
    )
    # one class only
    with pytest.raises(RetrainError, match="only the class 'slush'"):
        retrain(
            champion_dir, ds, versions=[ds.latest_version], allow_new_classes=True, now=NOW, embedder=embedder
        )
    # too few images for the champion's parameters
    few = Dataset.create(tmp_path / "few", CLASSES)
    xs = synthetic(rng, ["dry", "wet"] * 2, ["clean"] * 4, embedder.dim)
    add_items(
        few,
        [Item(y, "clean", None, iso(NOW), v) for y, v in zip(["dry", "wet"] * 2, xs, strict=True)],
        write_pngs(tmp_path / "f", 4, rng),
        embedder=embedder,
    )
    with pytest.raises(RetrainError, match="holds 4 images; the champion's parameters need at least"):
        retrain(champion_dir, few, now=NOW, embedder=embedder)
    # an empty dataset
    with pytest.raises(RetrainError, match="no entries yet"):
        retrain(champion_dir, Dataset.create(tmp_path / "empty", CLASSES), embedder=embedder)
    # a record that disagrees with the champion's parameters
    _, rec1 = load_champion(champion_dir, embedder=embedder)
    other = {**rec1.params, "alpha": 0.3}
    forged = TrainingRecord(other, config_hash(other), rec1.dataset, rec1.created, 1.0)
    champ, _ = load_champion(champion_dir, embedder=embedder)
    with pytest.raises(ConfigMismatchError, match="alpha"):
        retrain(champ, ds, champion_record=forged)
    # the config hash is checked on the detector actually built, never assumed
    real_build = R.build_detector

    def drifting(params, **kw):
        det = real_build(params, **kw)
        det.n_neighbors = det.n_neighbors + 1
        return det

    monkeypatch.setattr("novelty.flywheel.retrain.build_detector", drifting)
    with pytest.raises(ConfigMismatchError, match="n_neighbors"):
        retrain(champion_dir, ds, version=1, now=NOW, embedder=embedder)


def test_save_retrained_layout(ds, champion_dir, tmp_path, embedder):
    det, rec = retrain(champion_dir, ds, now=NOW, embedder=embedder)
    out = tmp_path / "runs" / "v2"
    saved = save_retrained(det, rec, out)
    assert sorted(p.name for p in out.iterdir()) == ["detector", "record.json"]
    assert saved.artifact_id == det.artifact_id_ == read_artifact(out / "detector").artifact_id
    assert TrainingRecord.load(out / "record.json") == saved
    loaded, lrec = load_champion(out, embedder=embedder)
    assert lrec == saved and detector_params(loaded) == rec.params
    with pytest.raises(InvalidInputError, match="detector directory"):
        save_retrained(det, rec, out / "detector")
    with pytest.raises(ConfigMismatchError):  # a record made for other parameters
        save_retrained(
            template(embedder, head=False).fit_embeddings(det.index_.vectors()), rec, tmp_path / "x"
        )
    assert not (tmp_path / "x" / "detector").exists()


# --- the command line ------------------------------------------------------------------------------
def test_cli_retrain(ds, champion_dir, tmp_path, capsys):
    out = tmp_path / "cli-run"
    code = main(
        [
            "retrain",
            str(champion_dir),
            "--dataset",
            str(ds.path),
            "--new-only",
            "--seed",
            "2",
            "--out",
            str(out),
        ]
    )
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "embedding 30 images" in cap.err and "fitting on 30 images" in cap.err  # progress on stderr
    assert "retrained on 30 images" in cap.out and "record.json" in cap.out
    rec = TrainingRecord.load(out / "record.json")
    assert rec.params["seed"] == 2 and rec.dataset.new_only
    # usage errors (2) before any work, failures (1) with one line
    assert (
        main(
            [
                "retrain",
                str(champion_dir),
                "--dataset",
                str(ds.path),
                "--window",
                "soon",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 2
    )
    assert (
        main(["retrain", str(champion_dir), "--dataset", str(ds.path), "--out", str(out / "detector")]) == 2
    )
    code = main(
        [
            "retrain",
            str(champion_dir),
            "--dataset",
            str(ds.path),
            "--window",
            "1h",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "novelty retrain: error: the training window (1h" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    code = main(["retrain", str(tmp_path / "nope"), "--dataset", str(ds.path), "--out", str(tmp_path / "c")])
    assert code == 1 and "no such detector" in capsys.readouterr().err


def test_retrain_refits_the_autoencoder_with_its_recorded_parameters(ds, embedder):
    ae = {"hidden": [16], "bottleneck": 4, "max_epochs": 3, "patience": 1}
    champ, _ = retrain(template(embedder, head=False, scorers={"knn": {}, "autoencoder": ae}), ds, version=1)
    det, rec = retrain(champ, ds, seed=5)
    old, new = champ.scorers_[1], det.scorers_[1]
    assert new.name == "autoencoder" and new.get_params() == {**old.get_params(), "seed": 5}
    assert rec.params["scorers"][1]["params"]["seed"] == 5 and rec.config_hash == config_hash(
        detector_params(champ)
    )
    a, b = old.state_arrays(), new.state_arrays()
    assert a.keys() == b.keys() and any(not np.array_equal(a[k], b[k]) for k in a)  # fitted again, not copied
    assert det.calibrator_.n == 30 and det.index_.ntotal == 60  # on all 90 images: index and calibration too
