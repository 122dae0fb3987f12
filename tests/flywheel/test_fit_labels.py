"""`novelty fit`: labels read as `novelty dataset add-csv` reads them (relative paths from the CSV's folder) and
checked before any image is embedded; `novelty fit --dataset`: the first detector of a flywheel, with the
training record `novelty compare` checks leakage against."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from retrain_support import CLASSES, Item, add_items, synthetic, write_pngs  # tests/retrain_support.py

from novelty.artifact import read_artifact
from novelty.cli import _groups_table, _labels_table, main
from novelty.flywheel.dataset import Dataset


@pytest.fixture
def train(tmp_path, textile_paths) -> list[Path]:
    folder = tmp_path / "data" / "train"
    folder.mkdir(parents=True)
    out = []
    for i, src in enumerate(textile_paths["nominal"][:4] + textile_paths["global"][:2]):
        q = folder / f"img{i}.jpg"
        shutil.copyfile(src, q)
        out.append(q)
    return out


def test_fit_checks_its_labels_before_any_image_is_embedded(tmp_path, train, monkeypatch, capsys):
    import novelty.embedder

    def no_backbone(*a, **k):
        raise AssertionError("the backbone was loaded before the labels were checked")

    monkeypatch.setattr(novelty.embedder.Embedder, "__init__", no_backbone)
    meta = tmp_path / "meta"
    meta.mkdir()
    rows = [f"../data/train/{p.name},{'wet' if i > 3 else 'dry'}" for i, p in enumerate(train[:4])]
    (meta / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n../data/train/gone.jpg,dry\n")
    args = ["fit", str(tmp_path / "data" / "train"), "--labels", str(meta / "train.csv")]
    assert main([*args, "--out", str(tmp_path / "det")]) == 1
    err = capsys.readouterr().err
    assert "2 of 6 training image(s) have no label" in err and "nothing was embedded" in err
    assert str(train[4]) in err and str(train[5]) in err
    assert not (tmp_path / "det").exists()


def test_fit_reads_label_paths_from_the_csvs_folder_as_add_csv_does(tmp_path, train, monkeypatch):
    from novelty.batch.sources import expand_inputs
    from novelty.flywheel.labels.labelimport import entries_from_csv

    meta = tmp_path / "meta"
    meta.mkdir()
    labels = {p.name: ("wet" if i > 3 else "dry") for i, p in enumerate(train)}
    csv_text = "path,label,group\n" + "".join(f"../data/train/{n},{y},g{n[3]}\n" for n, y in labels.items())
    (meta / "train.csv").write_text(csv_text)
    (meta / "groups.csv").write_text("path,group\n" + "".join(f"../data/train/{n},G{n[3]}\n" for n in labels))
    monkeypatch.chdir(tmp_path / "data")  # the CSV's paths are not relative to where fit runs
    items = expand_inputs([str(tmp_path / "data" / "train")])
    table = _labels_table(str(meta / "train.csv"))
    assert (
        dict(zip([Path(it.path).name for it in items], table.values(items, "label"), strict=True)) == labels
    )
    # the same paths, the same files as `novelty dataset add-csv` reads
    read = entries_from_csv(meta / "train.csv", allow_outside_root=True)
    assert sorted(e.path for e in read) == sorted(str(p) for p in train)

    class Args:
        groups, labels = "group", str(meta / "train.csv")

    groups = _groups_table(Args())  # a column of the labels CSV
    assert groups is not None and groups.values(items, "group")[0] == "g0"
    Args.groups = str(meta / "groups.csv")  # a file of its own, its paths from its own folder
    groups = _groups_table(Args())
    assert groups is not None and groups.values(items, "group")[0] == "G0"
    # a bare file name still matches when the CSV names it once
    (meta / "names.csv").write_text("path,label\n" + "".join(f"{n},{y}\n" for n, y in labels.items()))
    assert _labels_table(str(meta / "names.csv")).values(items, "label") == list(labels.values())


def test_fit_labels_need_a_path_and_a_label_on_every_row(tmp_path, train, capsys):
    (tmp_path / "l.csv").write_text(
        "path,label\n" + "".join(f"{p},dry\n" for p in train[:5]) + f"{train[5]},\n"
    )
    args = ["fit", str(train[0].parent), "--labels", str(tmp_path / "l.csv"), "--out", str(tmp_path / "d")]
    assert main(args) == 1
    assert "1 without a label" in capsys.readouterr().err


def test_fit_from_a_dataset_writes_its_training_record_and_compare_finds_leakage(
    tmp_path, embedder, capsys, monkeypatch
):
    """Synthetic embeddings in the dataset's cache: fit runs unchanged without a backbone pass (with a head of
    a few epochs: the default hundred make no other difference here)."""
    import novelty.cli.fit
    from novelty.flywheel.comparison.compare import compare
    from novelty.flywheel.record import TrainingRecord

    described = novelty.cli.fit._detector_of

    def small_head(args):
        det = described(args)
        det.head = {"max_epochs": 3}
        return det

    monkeypatch.setattr(novelty.cli.fit, "_detector_of", small_head)

    rng = np.random.default_rng(0)
    ds = Dataset.create(tmp_path / "train", CLASSES)
    ys = [CLASSES[i % 2] for i in range(80)]
    x = synthetic(rng, ys, ["clean"] * 80, embedder.dim)
    paths = write_pngs(tmp_path / "img", 80, rng)
    add_items(
        ds, [Item(y, "clean", f"g{i // 2}", None, x[i]) for i, y in enumerate(ys)], paths, embedder=embedder
    )
    test = Dataset.create(tmp_path / "test", CLASSES)  # 20 of the training images: leaked
    add_items(test, [Item(y, "clean", f"t{i}", None, x[i]) for i, y in enumerate(ys[:20])], paths[:20])

    out = tmp_path / "runs" / "v1"
    args = ["fit", "--dataset", str(tmp_path / "train"), "--out", str(out), "--calibration-fraction", "0.3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"on 80 images of {tmp_path / 'train'} (version 1)" in text and "record.json" in text
    rec = TrainingRecord.load(out / "record.json")
    assert rec.dataset is not None and rec.dataset.identity == ds.identity(1) and rec.dataset.n == 80
    assert rec.parent is None and rec.artifact_id == read_artifact(out / "detector").artifact_id
    c = compare(out, out, tmp_path / "test", n_boot=100, embedder=embedder, allow_config_change=True)
    leak = next(ch for ch in c.checks if ch.name == "no leakage")
    assert leak.passed is False and "20 test images are in the champion's training data" in " ".join(
        c.reasons
    )
    # usage errors: nothing is fitted
    for extra, message in [
        (["--labels", "x.csv"], "--dataset brings its own labels"),
        ([str(tmp_path)], "not both"),
    ]:
        assert main([*args[:-2], *extra, "--out", str(tmp_path / "d2")]) == 2
        assert message in capsys.readouterr().err
    assert main(["fit", "--out", str(tmp_path / "d3")]) == 2
    assert "give training images (DATA) or a labelled dataset" in capsys.readouterr().err


def test_fit_from_images_keeps_their_sha256_so_compare_checks_leakage(
    tmp_path, train, textile_paths, embedder, capsys
):
    """`novelty fit DATA` writes no training record (no dataset), but its artifact carries the sha256 of every
    training image (files and archive members alike), and `compare` checks a test set against them."""
    import hashlib
    import json
    import zipfile

    import novelty
    from novelty.fileio import sha256_file
    from novelty.flywheel.comparison.compare import _leakage
    from novelty.flywheel.dataset import Entry

    archive = tmp_path / "more.zip"
    extra = textile_paths["nominal"][20:24]
    with zipfile.ZipFile(archive, "w") as z:
        for i, p in enumerate(extra):
            z.writestr(f"x/extra{i}.png", p.read_bytes())
    assert main(["fit", str(train[0].parent), str(archive), "--out", str(tmp_path / "det")]) == 0
    assert "training images' sha256 are in the artifact" in capsys.readouterr().out
    ids = json.loads((tmp_path / "det" / "train_ids.json").read_text())
    want = {sha256_file(p) for p in train} | {hashlib.sha256(p.read_bytes()).hexdigest() for p in extra}
    assert set(ids["sha256"]) == want and len(want) == 10

    det = novelty.load(tmp_path / "det", embedder=embedder)
    test = Dataset.create(tmp_path / "test", ["a", "b"])
    test.add(
        [
            Entry(id=f"t{i}", sha256=sha256_file(p), path=str(p), label="a", source="t", labeller="human:x")
            for i, p in enumerate(train[:2])
        ],
        source="t",
    )
    check = _leakage(test.entries(), [("champion", None)], [det])
    assert check.passed is False and "2 test images are in the champion's training data" in check.message
