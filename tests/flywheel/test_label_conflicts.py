"""Different labels for one image: a person's label replaces an automatic one (logged and recorded, never an
error); two people's labels are a conflict settled by ``on_conflict`` ("fail", "latest", "skip")."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from novelty.errors import InvalidInputError
from novelty.fileio import sha256_file
from novelty.flywheel.dataset import Dataset, DatasetIntegrityError, Entry
from novelty.flywheel.labels.labelimport import LabelImportError, import_labels

CLASSES = ["dry", "wet"]


@pytest.fixture
def images(tmp_path, textile_paths) -> list[Path]:
    out = []
    for i, src in enumerate(textile_paths["nominal"][:3]):
        q = tmp_path / "img" / f"img{i}.jpg"
        q.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, q)
        out.append(q)
    return out


def entry(p: Path, label: str, who: str = "human:ann", time: str = "2026-02-01T10:00:00Z", **kw) -> Entry:
    return Entry(
        id=kw.pop("id", p.stem),
        sha256=sha256_file(p),
        path=str(p),
        label=label,
        source="test",
        labeller=who,
        time=time,
        auto=who.startswith("model:"),
        **kw,
    )


def test_a_person_replaces_an_automatic_label_recorded_and_logged(tmp_path, images, caplog):
    ds = Dataset.create(tmp_path / "ds", CLASSES)
    ds.add([entry(images[0], "dry", "model:v1"), entry(images[1], "dry")], source="first")
    caplog.set_level(logging.INFO, logger="novelty.flywheel.dataset")
    res = ds.add_entries([entry(images[0], "wet", "human:bob")], source="people")  # never an error
    assert res.version == 2 and [e.label for e in res.added] == ["wet"]
    assert res.added[0].supersedes == "img0"
    (c,) = res.conflicts
    assert (
        c.rule == "human over auto" and c.kept is not None and c.kept.labeller == "human:bob" and c.replaced
    )
    assert "human over auto" in caplog.text and "'wet' by human:bob" in caplog.text
    again = Dataset.open(ds.path)  # read back, verified
    assert {e.path: e.label for e in again.entries()} == {str(images[0]): "wet", str(images[1]): "dry"}
    assert len(again) == 2 and len(again.history()) == 3
    assert again.entries(1)[0].label == "dry"  # version 1 still reads as it was
    record = again.versions[-1]
    assert record["conflicts"][0]["rule"] == "human over auto"
    assert record["conflicts"][0]["dropped"][0]["labeller"] == "model:v1"
    # the lines without a replacement keep their old shape (no "supersedes" key)
    lines = [json.loads(x) for x in (ds.path / "entries.jsonl").read_text().splitlines()]
    assert "supersedes" not in lines[0] and lines[2]["supersedes"] == "img0"


def test_an_automatic_label_never_replaces_a_persons(tmp_path, images):
    ds = Dataset.create(tmp_path / "ds", CLASSES)
    ds.add([entry(images[0], "dry")], source="first")
    res = ds.add_entries(
        [entry(images[0], "wet", "model:v2"), entry(images[1], "wet", "model:v2")], source="m"
    )
    assert [e.path for e in res.added] == [str(images[1])]
    assert res.conflicts[0].rule == "human over auto" and res.conflicts[0].kept.labeller == "human:ann"
    assert Dataset.open(ds.path).entries()[0].label == "dry"
    # within one batch too, whatever the order
    for batch in (
        [entry(images[2], "wet", "model:v2"), entry(images[2], "dry", "human:eve")],
        [entry(images[2], "dry", "human:eve"), entry(images[2], "wet", "model:v2")],
    ):
        d = Dataset.create(tmp_path / f"b{len(list(tmp_path.iterdir()))}", CLASSES)
        r = d.add_entries(batch, source="x")
        assert [(e.label, e.labeller, e.supersedes) for e in r.added] == [("dry", "human:eve", None)]


def test_two_people_disagreeing_fail_by_default_listing_each(tmp_path, images):
    ds = Dataset.create(tmp_path / "ds", CLASSES)
    ds.add([entry(images[0], "dry"), entry(images[1], "dry")], source="first")
    before = (ds.path / "entries.jsonl").read_bytes()
    with pytest.raises(InvalidInputError) as err:
        ds.add([entry(images[0], "wet", "human:bob"), entry(images[1], "wet", "human:bob")], source="x")
    msg = str(err.value)
    assert "2 problem(s)" in msg and msg.count("conflicting labels") == 2 and "on_conflict" in msg
    assert (ds.path / "entries.jsonl").read_bytes() == before
    with pytest.raises(InvalidInputError, match="on_conflict must be one of fail, latest, skip"):
        ds.add([entry(images[0], "wet")], source="x", on_conflict="newest")


def test_latest_keeps_the_label_given_last(tmp_path, images):
    ds = Dataset.create(tmp_path / "ds", CLASSES)
    ds.add([entry(images[0], "dry", time="2026-02-01T10:00:00Z")], source="first")
    older = ds.add_entries(
        [entry(images[0], "wet", "human:bob", time="2026-01-01T10:00:00Z")], source="x", on_conflict="latest"
    )
    assert not older.added and older.conflicts[0].kept.labeller == "human:ann"
    newer = ds.add_entries(
        [entry(images[0], "wet", "human:bob", time="2026-03-01T10:00:00Z")], source="x", on_conflict="latest"
    )
    assert (
        newer.added[0].label == "wet" and newer.conflicts[0].rule == "latest" and newer.conflicts[0].replaced
    )
    assert Dataset.open(ds.path).entries()[0].label == "wet"
    # in one batch: the later time wins
    d = Dataset.create(tmp_path / "one", CLASSES)
    r = d.add_entries(
        [
            entry(images[1], "wet", "human:a", time="2026-03-01T00:00:00Z"),
            entry(images[1], "dry", "human:b", time="2026-02-01T00:00:00Z", id="other"),
        ],
        source="x",
        on_conflict="latest",
    )
    assert [(e.label, e.labeller) for e in r.added] == [("wet", "human:a")]


def test_skip_leaves_the_image_as_it_was(tmp_path, images):
    ds = Dataset.create(tmp_path / "ds", CLASSES)
    ds.add([entry(images[0], "dry")], source="first")
    res = ds.add_entries(
        [entry(images[0], "wet", "human:bob"), entry(images[1], "dry"), entry(images[2], "dry")],
        source="x",
        on_conflict="skip",
    )
    assert sorted(e.path for e in res.added) == [str(images[1]), str(images[2])]
    assert res.conflicts[0].rule == "skip" and res.conflicts[0].kept.label == "dry"
    assert {e.path: e.label for e in Dataset.open(ds.path).entries()}[str(images[0])] == "dry"
    # two people disagreeing in one batch, about an image without a label: it stays unlabelled
    d = Dataset.create(tmp_path / "one", CLASSES)
    r = d.add_entries(
        [
            entry(images[1], "wet", "human:a"),
            entry(images[1], "dry", "human:b", id="x"),
            entry(images[1], "dry"),
        ],
        source="x",
        on_conflict="skip",
    )
    assert not r.added and r.conflicts[0].kept is None and len(d) == 0


def test_a_second_line_for_an_image_must_say_what_it_replaces(tmp_path, images):
    ds = Dataset.create(tmp_path / "ds", CLASSES)
    ds.add([entry(images[0], "dry", "model:v1")], source="first")
    ds.add([entry(images[0], "wet")], source="people")
    lines = (ds.path / "entries.jsonl").read_text().splitlines()
    second = json.loads(lines[1])
    del second["supersedes"]
    forged = lines[0] + "\n" + json.dumps(second, separators=(",", ":"), ensure_ascii=False) + "\n"
    (ds.path / "entries.jsonl").write_text(forged)
    meta = json.loads((ds.path / "dataset.json").read_text())
    import hashlib

    meta["versions"][1]["entries_sha256"] = hashlib.sha256(forged.encode()).hexdigest()
    (ds.path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetIntegrityError, match="does not say it replaces it"):
        Dataset.open(ds.path)


# --- the import -------------------------------------------------------------------------------------------------
def _selection(tmp_path: Path, images: list[Path]) -> Path:
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
        }
        for i, p in enumerate(images)
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
    path = tmp_path / "selection.json"
    path.write_text(json.dumps(sel))
    return path


def test_import_a_person_over_the_models_label_and_people_conflicts_listed(tmp_path, images):
    sel = _selection(tmp_path, images)
    ds = Dataset.create(tmp_path / "ds", CLASSES)
    ds.add([entry(images[0], "dry", "model:v1"), entry(images[1], "dry", "human:ann")], source="first")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "id,label,labeller,time\n"
        "img0,wet,bob,2026-03-01T00:00:00Z\n"  # replaces the automatic label: no error
        "img1,wet,bob,2026-03-01T00:00:00Z\n"  # against ann's: a real conflict
        "img2,dry,bob,2026-03-01T00:00:00Z\n"
    )
    with pytest.raises(LabelImportError) as err:
        import_labels(ds, labels, sel)
    msg = str(err.value)
    assert "1 problem(s)" in msg and "conflicting labels" in msg and "img1" in msg and "img0" not in msg
    res = import_labels(ds, labels, sel, on_conflict="skip")
    assert sorted(e.id for e in res.added) == ["img0", "img2"]
    assert sorted(c.rule for c in res.conflicts) == ["human over auto", "skip"]
    text = res.summary()
    assert "2 image(s) with different labels settled" in text and "human over auto" in text
    assert {e.id: e.label for e in Dataset.open(ds.path).entries()} == {
        "img0": "wet",
        "img1": "dry",
        "img2": "dry",
    }
    again = import_labels(ds, labels, sel, on_conflict="latest")
    assert [e.id for e in again.added] == ["img1"] and again.conflicts[0].rule == "latest"
    assert {e.id: e.label for e in Dataset.open(ds.path).entries()}["img1"] == "wet"


def test_flywheel_config_on_conflict(tmp_path):
    from novelty.flywheel.turn import FlywheelConfigError, load_config

    base = "registry = 'r'\ndataset = 'd'\ntest = 't'\n[select]\nsources = ['in']\n[label]\n"
    (tmp_path / "a.toml").write_text(base + "on_conflict = 'latest'\n")
    assert load_config(tmp_path / "a.toml").on_conflict == "latest"
    (tmp_path / "b.toml").write_text(base)
    assert load_config(tmp_path / "b.toml").on_conflict == "fail"
    (tmp_path / "c.toml").write_text(base + "on_conflict = 'newest'\n")
    with pytest.raises(FlywheelConfigError, match=r"\[label\] on_conflict must be one of fail, latest, skip"):
        load_config(tmp_path / "c.toml")
