"""Export of a selection to Label Studio / CVAT / CSV, import of finished labels (all or nothing), assisted
labelling and its measurement, and the CLI verbs. Real image files (textile) are hashed; the Label Studio
exports here are written the way the real server writes them (see tests/flywheel/test_label_studio.py for the server)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from novelty.cli import main
from novelty.errors import InvalidInputError
from novelty.fileio import sha256_file
from novelty.flywheel.dataset import Dataset
from novelty.flywheel.labels.assisted import auto_accepted, measure_assistance
from novelty.flywheel.labels.labelimport import LabelImportError, entries_from_csv, import_labels, read_labels
from novelty.flywheel.labels.labelling import export_selection
from novelty.flywheel.labels.labelstudio import label_config
from novelty.flywheel.selection import SelectedItem, read_selection

CLASSES = ["dry", "wet"]


@pytest.fixture
def work(tmp_path, textile_paths) -> Path:
    """tmp/root/images/img{0..5}.jpg (real textile images) and tmp/selection.json over them."""
    img_dir = tmp_path / "root" / "images"
    img_dir.mkdir(parents=True)
    srcs = textile_paths["nominal"][:4] + textile_paths["global"][:2]
    # (p_value, probability, prediction): 0 and 1 are in-distribution and confident → auto-accepted
    scores = [
        (0.6, 0.97, "dry"),
        (0.3, 0.95, "wet"),
        (0.5, 0.6, "dry"),
        (0.01, 0.99, "wet"),
        (0.02, 0.55, "dry"),
        (0.4, 0.91, None),
    ]
    items = []
    for i, (src, (p, prob, pred)) in enumerate(zip(srcs, scores, strict=True)):
        q = img_dir / f"img{i}.jpg"
        shutil.copyfile(src, q)
        items.append(
            {
                "id": f"item{i}",
                "path": str(q),
                "sha256": sha256_file(q),
                "source": f"flag:{i}",
                "rank": i + 1,
                "reason": "novel" if p < 0.05 else "uncertain",
                "p_value": p,
                "novelty": 1 - p,
                "is_novel": p < 0.05,
                "prediction": pred,
                "probability": prob if pred else None,
                "uncertainty": 1 - prob,
                "timestamp": None,
            }
        )
    items[5]["condition"] = "tunnel"
    sel = {
        "format": "novelty-selection",
        "format_version": 1,
        "created": "2026-01-01T00:00:00Z",
        "strategy": "hybrid",
        "budget": 6,
        "seed": 0,
        "weights": {},
        "detector_id": "det-1",
        "model_version": "det-1",
        "classes": CLASSES,
        "alpha": 0.05,
        "items": items,
    }
    (tmp_path / "selection.json").write_text(json.dumps(sel))
    return tmp_path


def sel_items(work: Path) -> list[dict]:
    return json.loads((work / "selection.json").read_text())["items"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file() and p.name != ".lock"}


def completed(tasks: list[dict], labels: dict[str, str | None], user=7) -> list[dict]:
    """A Label Studio JSON export of ``tasks`` as the server writes it: ids, annotations with ``completed_by``;
    ``labels[novelty_id]`` None → a skipped (cancelled) annotation; a task missing from ``labels`` has none."""
    out = []
    for k, t in enumerate(tasks, start=1):
        nid = t["data"]["novelty_id"]
        anns = []
        if nid in labels:
            label = labels[nid]
            anns.append(
                {
                    "id": k,
                    "completed_by": user,
                    "result": []
                    if label is None
                    else [
                        {
                            "from_name": "label",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [label]},
                        }
                    ],
                    "was_cancelled": label is None,
                    "created_at": "2026-02-01T10:00:00.123456Z",
                    "updated_at": "2026-02-01T10:00:00.123456Z",
                    "lead_time": 2.5,
                }
            )
        out.append(
            {"id": k, "annotations": anns, "predictions": [k], "data": t["data"], "meta": t.get("meta", {})}
        )
    return out


# --- Label Studio --------------------------------------------------------------------------------------------
def test_label_studio_export_tasks_and_config(work):
    res = export_selection(work / "selection.json", work / "ls", format="label-studio")
    assert res.n_exported == 6 and not res.auto
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    manifest = json.loads((work / "ls" / "export.json").read_text())
    root = Path(manifest["document_root"])
    assert root == work / "root" and Path(manifest["local_storage_path"]) == work / "root" / "images"
    for t, it in zip(tasks, sel_items(work), strict=True):
        url = t["data"]["image"]
        assert url.startswith("/data/local-files/?d=")
        rel = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["d"][0]
        assert root / rel == Path(it["path"])
        assert t["data"]["novelty_id"] == it["id"] and t["data"]["sha256"] == it["sha256"]
        assert t["data"]["novelty_score"] == pytest.approx(it["novelty"])  # higher = more novel
        assert (t["data"]["group"], t["data"]["condition"]) == (it.get("group"), it.get("condition"))
        if it["prediction"] is None:
            assert "predictions" not in t
            continue
        (pred,) = t["predictions"]
        # the score annotators see is the head's confidence in its answer, not the novelty score
        assert pred["model_version"] == "det-1" and pred["score"] == pytest.approx(it["probability"])
        assert pred["result"] == [
            {
                "from_name": "label",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [it["prediction"]]},
            }
        ]
    cfg = ET.fromstring((work / "ls" / "label_config.xml").read_text())
    assert cfg.tag == "View" and cfg.find("Image").attrib == {"name": "image", "value": "$image"}
    choices = cfg.find("Choices")
    assert choices.get("toName") == "image" and choices.get("choice") == "single"
    assert [c.get("value") for c in choices.findall("Choice")] == CLASSES


def test_no_pre_annotation_outside_the_tool_classes(work):
    export_selection(work / "selection.json", work / "ls", classes=["dry"])
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    with_pred = [t["data"]["novelty_id"] for t in tasks if "predictions" in t]
    assert with_pred == ["item0", "item2", "item4"]  # the head's "wet" is no choice of this config


def test_label_config_escapes_class_names():
    cfg = ET.fromstring(label_config(['a "quoted" <b>', "c&d"]))
    assert [c.get("value") for c in cfg.iter("Choice")] == ['a "quoted" <b>', "c&d"]


def test_document_root_option(work):
    export_selection(work / "selection.json", work / "ls", document_root=work)
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=root/images/img0.jpg"
    with pytest.raises(InvalidInputError, match="outside the document root"):
        export_selection(work / "selection.json", work / "ls2", document_root=work / "elsewhere")


def test_label_studio_round_trip(work):
    export_selection(work / "selection.json", work / "ls")
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    labels = {"item0": "dry", "item1": "dry", "item2": "wet", "item3": "wet", "item4": None}  # item4 skipped
    (work / "export.json").write_text(json.dumps(completed(tasks, labels)))
    ds = Dataset.create(work / "ds", CLASSES)
    res = import_labels(ds, work / "export.json", work / "selection.json")
    assert res.version == 1 and res.counts() == {"dry": 2, "wet": 2}
    assert sorted(res.unlabelled) == ["item4", "item5"]
    got = {e.id: e for e in Dataset.open(work / "ds").entries()}
    assert {k: e.label for k, e in got.items()} == {k: v for k, v in labels.items() if v}
    e = got["item0"]
    assert (
        e.labeller == "human:7"
        and e.auto is False
        and e.source == "flag:0"
        and e.time == "2026-02-01T10:00:00Z"
    )
    assert e.sha256 == sha256_file(work / "root" / "images" / "img0.jpg")
    assert "added 4" in res.summary()
    # the same export again: nothing new, no new version
    again = import_labels(ds, work / "export.json", work / "selection.json")
    assert again.version == 1 and not again.added and len(again.skipped) == 4


def test_label_studio_latest_live_annotation_wins(work):
    export_selection(work / "selection.json", work / "ls")
    tasks = json.loads((work / "ls" / "tasks.json").read_text())[:1]
    exp = completed(tasks, {"item0": "dry"})
    later = {
        "id": 9,
        "completed_by": {"id": 3, "email": "ann@example.com"},
        "result": [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["wet"]}}
        ],
        "was_cancelled": False,
        "created_at": "2026-02-02T00:00:00Z",
        "updated_at": "2026-02-02T00:00:00Z",
    }
    cancelled = {**later, "id": 10, "was_cancelled": True, "updated_at": "2026-02-03T00:00:00Z", "result": []}
    exp[0]["annotations"] += [later, cancelled]
    (work / "export.json").write_text(json.dumps(exp))
    read = read_labels(work / "export.json")
    assert [(r.id, r.label, r.labeller) for r in read.rows] == [("item0", "wet", "human:ann@example.com")]
    ds = Dataset.create(work / "ds", CLASSES)
    res = import_labels(ds, work / "export.json", work / "selection.json", labeller="alice")
    assert res.added[0].labeller == "human:alice"  # --labeller overrides the file's


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (
            lambda exp: exp[0]["data"].update(novelty_id="nobody"),
            r"unknown file nobody \(not in the selection",
        ),
        (
            lambda exp: exp[0]["annotations"][0]["result"][0]["value"].update(choices=["fog"]),
            r"unknown class 'fog'",
        ),
        (
            lambda exp: exp[0]["annotations"][0]["result"][0]["value"].update(choices=["dry", "wet"]),
            r"2 classes chosen",
        ),
        (lambda exp: exp[0]["data"].update(sha256="0" * 64), r"does not match the selection's"),
        (lambda exp: exp.append(json.loads(json.dumps(exp[1]))), r"duplicate id item1"),
    ],
)
def test_label_studio_import_refuses_bad_exports_and_writes_nothing(work, mutate, pattern):
    export_selection(work / "selection.json", work / "ls")
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    exp = completed(tasks, {"item0": "dry", "item1": "wet", "item2": "dry"})
    mutate(exp)
    (work / "export.json").write_text(json.dumps(exp))
    ds = Dataset.create(work / "ds", CLASSES)
    before = snapshot(ds.path)
    with pytest.raises(InvalidInputError, match=pattern):
        import_labels(ds, work / "export.json", work / "selection.json")
    assert snapshot(ds.path) == before and Dataset.open(ds.path).latest_version == 0


def test_label_studio_import_lists_every_problem_at_once(work):
    export_selection(work / "selection.json", work / "ls")
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    exp = completed(tasks, {"item0": "fog", "item1": "wet", "item2": "dry"})
    exp[1]["data"]["novelty_id"] = "stranger"
    (work / "export.json").write_text(json.dumps(exp))
    ds = Dataset.create(work / "ds", CLASSES)
    ds.add(
        [_entry_for(sel_items(work)[2], "wet")],  # item2 is in the dataset as wet; the export says dry
        source="earlier",
    )
    with pytest.raises(LabelImportError) as err:
        import_labels(ds, work / "export.json", work / "selection.json")
    msg = str(err.value)
    assert "3 problem(s)" in msg and "unknown file stranger" in msg and "unknown class 'fog'" in msg
    assert "conflicting labels" in msg and "labelled 'wet'" in msg


def _entry_for(item: dict, label: str):
    from novelty.flywheel.dataset import Entry

    return Entry(
        id=item["id"], sha256=item["sha256"], path=item["path"], label=label, source="s", labeller="human:x"
    )


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("{not json", "not JSON"),
        ('{"tasks": []}', "not a Label Studio JSON export"),
        ('[{"data": {}, "annotations": {}}]', "'annotations' must be a list"),
    ],
)
def test_label_studio_unreadable_files(tmp_path, text, pattern):
    p = tmp_path / "e.json"
    p.write_text(text)
    with pytest.raises(LabelImportError, match=pattern):
        read_labels(p)


def test_a_file_changed_since_selection_is_refused(work):
    export_selection(work / "selection.json", work / "ls")
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    (work / "export.json").write_text(json.dumps(completed(tasks, {"item0": "dry"})))
    (work / "root" / "images" / "img0.jpg").write_bytes(b"other bytes")
    ds = Dataset.create(work / "ds", CLASSES)
    with pytest.raises(LabelImportError, match="changed since it was selected"):
        import_labels(ds, work / "export.json", work / "selection.json")
    (work / "root" / "images" / "img0.jpg").unlink()
    with pytest.raises(LabelImportError, match="unreadable"):
        import_labels(ds, work / "export.json", work / "selection.json")


# --- CSV ----------------------------------------------------------------------------------------------------
def _fill(path: Path, labels: dict[str, str], extra: dict[str, dict[str, str]] | None = None) -> None:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    fields = list(rows[0]) + sorted({k for v in (extra or {}).values() for k in v})
    for r in rows:
        r["label"] = labels.get(r["id"], "")
        r.update((extra or {}).get(r["id"], {}))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue())


def test_csv_export_and_round_trip(work):
    export_selection(work / "selection.json", work / "csv", format="csv")
    text = (work / "csv" / "labels.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [
        "id",
        "path",
        "sha256",
        "prediction",
        "probability",
        "p_value",
        "novelty",
        "group",
        "condition",
        "label",
    ]
    assert [r["id"] for r in rows] == [f"item{i}" for i in range(6)] and all(r["label"] == "" for r in rows)
    assert rows[0]["prediction"] == "dry" and float(rows[0]["p_value"]) == 0.6
    _fill(
        work / "csv" / "labels.csv",
        {"item0": "dry", "item3": "wet", "item5": "wet"},
        {"item3": {"condition": "ice", "group": "g7"}},
    )
    ds = Dataset.create(work / "ds", CLASSES)
    res = import_labels(
        ds, work / "csv" / "labels.csv", work / "selection.json", labeller="bob", condition="clean"
    )
    got = {e.id: e for e in res.added}
    assert {k: e.label for k, e in got.items()} == {"item0": "dry", "item3": "wet", "item5": "wet"}
    assert len(res.unlabelled) == 3 and got["item0"].labeller == "human:bob"
    # condition: the CSV's column, else the selection item's, else --condition
    assert got["item3"].condition == "ice" and got["item3"].group == "g7"
    assert got["item5"].condition == "tunnel" and got["item0"].condition == "clean"


def test_csv_by_path_and_errors(work):
    items = sel_items(work)
    p = work / "l.csv"
    p.write_text(
        f"path,label\n{items[0]['path']},dry\n{work / 'x.jpg'},wet\n{items[1]['path']},dry\n{items[1]['path']},wet\n"
    )
    ds = Dataset.create(work / "ds", CLASSES)
    before = snapshot(ds.path)
    with pytest.raises(LabelImportError) as err:
        import_labels(ds, p, work / "selection.json")
    msg = str(err.value)
    assert "unknown file" in msg and "x.jpg" in msg and "duplicate id item1" in msg
    assert snapshot(ds.path) == before
    p.write_text(f"path,label\n{items[0]['path']},dry\n")
    assert import_labels(ds, p, work / "selection.json").counts() == {"dry": 1}


def test_conflicting_labels_for_one_image_under_two_ids(work):
    """Two selection items for the same image (e.g. flagged twice) given different labels."""
    sel = json.loads((work / "selection.json").read_text())
    twin = dict(sel["items"][0], id="twin", source="flag:99")
    sel["items"].append(twin)
    (work / "selection.json").write_text(json.dumps(sel))
    p = work / "l.csv"
    p.write_text("id,label\nitem0,dry\ntwin,wet\n")
    ds = Dataset.create(work / "ds", CLASSES)
    with pytest.raises(
        LabelImportError, match=r"conflicting labels: image .* given 'dry' as item0 .* and 'wet' as twin"
    ):
        import_labels(ds, p, work / "selection.json")
    p.write_text("id,label\nitem0,dry\ntwin,dry\n")
    res = import_labels(ds, p, work / "selection.json")
    assert len(res.added) == 1 and len(res.skipped) == 1  # the same image, the same label: stored once


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"path,class\nx,y\n", "needs a 'label' column and an 'id' or 'path' column"),
        (b"id,label\n,dry\n", "neither an id nor a path"),
        (b"id,label\nitem0,dry,extra\n", "more fields than the header"),
        (b"id,label\nitem\xff,dry\n", "not UTF-8"),
    ],
)
def test_unreadable_csv(tmp_path, content, pattern):
    p = tmp_path / "l.csv"
    p.write_bytes(content)
    with pytest.raises(LabelImportError, match=pattern):
        read_labels(p)


def test_format_detection(tmp_path):
    with pytest.raises(LabelImportError, match="cannot tell the format"):
        read_labels(tmp_path / "labels.txt")
    with pytest.raises(InvalidInputError, match="unknown labels format"):
        read_labels(tmp_path / "labels.csv", "yaml")


# --- CVAT ----------------------------------------------------------------------------------------------------
def test_cvat_export_is_well_formed_and_round_trips(work):
    export_selection(work / "selection.json", work / "cvat", format="cvat")
    tree = ET.parse(work / "cvat" / "annotations.xml")
    root = tree.getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    task = root.find("meta/task")
    assert task.findtext("mode") == "annotation" and task.findtext("size") == "6"
    assert [lab.findtext("name") for lab in task.findall("labels/label")] == CLASSES
    images = root.findall("image")
    items = sel_items(work)
    assert [im.get("name") for im in images] == [f"img{i}.jpg" for i in range(6)]
    for im, it in zip(images, items, strict=True):
        with Image.open(it["path"]) as pil:
            assert (int(im.get("width")), int(im.get("height"))) == pil.size
        tags = im.findall("tag")
        assert [t.get("label") for t in tags] == ([it["prediction"]] if it["prediction"] else [])
        assert all(t.get("source") == "auto" for t in tags)
    assert (work / "cvat" / "images.txt").read_text().splitlines() == [it["path"] for it in items]
    # a finished CVAT export: people corrected img2 and labelled img5; img3 lost its tag (unlabelled)
    for im in images:
        for t in im.findall("tag"):
            t.set("source", "manual")
    images[2].find("tag").set("label", "wet")
    ET.SubElement(images[5], "tag", label="dry", source="manual")
    images[3].remove(images[3].find("tag"))
    tree.write(work / "done.xml", encoding="utf-8", xml_declaration=True)
    ds = Dataset.create(work / "ds", CLASSES)
    res = import_labels(ds, work / "done.xml", work / "selection.json", labeller="carol")
    assert {e.id: e.label for e in res.added} == {
        "item0": "dry",
        "item1": "wet",
        "item2": "wet",
        "item4": "dry",
        "item5": "dry",
    }
    assert res.unlabelled == ("img3.jpg",)


def test_cvat_tags_carry_group_and_condition_both_ways(work):
    """The selection's group and condition ride on each pre-annotation as attributes; a person's edit of one
    comes back with the label, an empty one leaves the selection's."""
    sel = json.loads((work / "selection.json").read_text())
    for i, it in enumerate(sel["items"]):
        it["group"], it["condition"] = f"g{i // 2}", "snow"
    (work / "sel-groups.json").write_text(json.dumps(sel))
    export_selection(work / "sel-groups.json", work / "cvat-g", format="cvat")
    tree = ET.parse(work / "cvat-g" / "annotations.xml")
    root = tree.getroot()
    attrs = root.findall("meta/task/labels/label")[0].findall("attributes/attribute")
    assert [a.findtext("name") for a in attrs] == ["group", "condition"]
    images = root.findall("image")
    tagged = [(im, it) for im, it in zip(images, sel["items"], strict=True) if it["prediction"]]
    assert tagged
    for im, it in tagged:
        got = {a.get("name"): a.text for a in im.find("tag").findall("attribute")}
        assert got == {"group": it["group"], "condition": "snow"}
    first, _ = tagged[0]
    next(a for a in first.find("tag").findall("attribute") if a.get("name") == "condition").text = "fog"
    second, _ = tagged[1]
    next(a for a in second.find("tag").findall("attribute") if a.get("name") == "group").text = ""
    tree.write(work / "done-g.xml", encoding="utf-8", xml_declaration=True)
    ds = Dataset.create(work / "ds-g", CLASSES)
    res = import_labels(ds, work / "done-g.xml", work / "sel-groups.json", labeller="carol")
    by_id = {e.id: e for e in res.added}
    first_id, second_id = tagged[0][1]["id"], tagged[1][1]["id"]
    assert (by_id[first_id].group, by_id[first_id].condition) == (tagged[0][1]["group"], "fog")
    assert (by_id[second_id].group, by_id[second_id].condition) == (tagged[1][1]["group"], "snow")


def test_cvat_files_named_by_upload_match_by_file_name(work, tmp_path):
    export_selection(work / "selection.json", work / "cvat", format="cvat")
    text = (work / "cvat" / "annotations.xml").read_text()
    # re-exported by CVAT: no comment of ours, names as uploaded
    text = "\n".join(line for line in text.splitlines() if "novelty-image-root" not in line)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.xml").write_text(text)
    read = read_labels(tmp_path / "elsewhere" / "a.xml")
    assert read.rows[0].path == str(tmp_path / "elsewhere" / "img0.jpg")
    ds = Dataset.create(work / "ds", CLASSES)
    res = import_labels(ds, tmp_path / "elsewhere" / "a.xml", work / "selection.json")
    assert len(res.added) == 5


@pytest.mark.parametrize(
    ("xml", "pattern"),
    [
        (
            "<annotations><image id='0' name='a.jpg'><tag label='dry'/><tag label='wet'/></image></annotations>",
            "different tags",
        ),
        ("<annotations><image id='0'><tag label='dry'/></image></annotations>", "no name"),
        ("<annotations><image id='0' name='a.jpg'><tag/></image></annotations>", "without a label"),
        ("<other/>", "not a CVAT for images file"),
        ("<annotations>", "not well-formed"),
        ('<!DOCTYPE x [<!ENTITY e "boom">]><annotations/>', "DOCTYPE"),
    ],
)
def test_cvat_bad_files(tmp_path, xml, pattern):
    p = tmp_path / "a.xml"
    p.write_text(xml)
    with pytest.raises(LabelImportError, match=pattern):
        read_labels(p)


# --- assisted labelling ------------------------------------------------------------------------------------
def test_auto_accept_into_the_dataset(work):
    ds = Dataset.create(work / "ds", CLASSES)
    res = export_selection(work / "selection.json", work / "ls", auto_accept=True, dataset=ds, audit=0)
    # default thresholds: p ≥ alpha (0.05) and probability ≥ 0.9 → item0 (0.6, 0.97), item1 (0.3, 0.95);
    # item5 (0.4) has no prediction, item3 is novel (p 0.01), item2/item4 are uncertain
    assert sorted(e.id for e in res.auto) == ["item0", "item1"] and res.auto_version == 1
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    assert [t["data"]["novelty_id"] for t in tasks] == ["item2", "item3", "item4", "item5"]
    got = Dataset.open(ds.path).entries()
    assert {(e.id, e.label, e.labeller, e.auto) for e in got} == {
        ("item0", "dry", "model:det-1", True),
        ("item1", "wet", "model:det-1", True),
    }
    manifest = json.loads((work / "ls" / "export.json").read_text())
    assert manifest["auto_accept"] == {
        "enabled": True, "min_p": 0.05, "min_prob": 0.9, "n": 2, "dataset_version": 1, "file": None,
        "audit_rule": "share", "audit_share": 0.0, "audit_risk": None, "audit_delta": None, "audit_size": 0,
        "audit": [],
        # a selection without a trust decision: the old rule, no ε, no competence threshold
        "trust_rule": None, "auto_risk": None, "risk": None, "threshold": None,
    }  # fmt: skip
    # exported again with the dataset: what it labels already is left out
    res2 = export_selection(work / "selection.json", work / "ls2", dataset=ds)
    assert res2.n_exported == 4 and res2.n_already_labelled == 2


def test_auto_accept_thresholds_and_csv(work):
    res = export_selection(
        work / "selection.json",
        work / "csv",
        format="csv",
        auto_accept=True,
        auto_min_p=0.5,
        auto_min_prob=0.5,
        audit=0,
    )
    assert sorted(e.id for e in res.auto) == ["item0", "item2"]  # p ≥ 0.5 and probability ≥ 0.5
    assert res.auto_file == work / "csv" / "auto_labels.csv"
    ds = Dataset.create(work / "ds", CLASSES)
    imp = import_labels(ds, res.auto_file, work / "selection.json")
    assert {(e.id, e.label, e.labeller, e.auto) for e in imp.added} == {
        ("item0", "dry", "model:det-1", True),
        ("item2", "dry", "model:det-1", True),
    }
    with pytest.raises(InvalidInputError, match="auto_min_prob must lie in"):
        export_selection(work / "selection.json", work / "x", auto_accept=True, auto_min_prob=1.5)


def test_audit_sends_a_share_of_the_auto_accepted_to_people_and_measures_the_rule(work):
    from novelty.flywheel.labels.labelling import audit_result

    res = export_selection(work / "selection.json", work / "ls", auto_accept=True, audit=0.5)
    # the rule takes item0 and item1; half of them (one, chosen by content hash) goes to people instead
    assert len(res.auto) == 1
    manifest = json.loads((work / "ls" / "export.json").read_text())
    audited = manifest["auto_accept"]["audit"]
    assert len(audited) == 1 and {audited[0]["id"], res.auto[0].id} == {"item0", "item1"}
    tasks = [t["data"]["novelty_id"] for t in json.loads((work / "ls" / "tasks.json").read_text())]
    assert audited[0]["id"] in tasks and res.auto[0].id not in tasks
    export_selection(work / "selection.json", work / "ls2", auto_accept=True, audit=0.5)
    assert json.loads((work / "ls2" / "export.json").read_text())["auto_accept"]["audit"] == audited  # stable
    # people agree with the head → 0 wrong; disagree → 1 of 1 wrong, with its interval
    model = audited[0]["model_label"]
    ok = audit_result(work / "ls", {audited[0]["id"]: model})
    assert (ok.n, ok.wrong, ok.error_rate) == (1, 0, 0.0)
    other = "wet" if model == "dry" else "dry"
    bad = audit_result(work / "ls", {audited[0]["id"]: other})
    assert (bad.n, bad.wrong, bad.error_rate) == (1, 1, 1.0) and bad.ci is not None and bad.ci[0] > 0.2
    assert audit_result(work / "ls", {}).to_json() == {
        "n": 0, "wrong": 0, "error_rate": None, "upper": None, "delta": 0.1, "risk": None, "vouched": None,
        "ci": None, "unlabelled": 1
    }  # fmt: skip
    all_of_them = export_selection(work / "selection.json", work / "ls3", auto_accept=True, audit=1.0)
    assert all_of_them.auto == ()
    with pytest.raises(InvalidInputError, match="audit must be a share"):
        export_selection(work / "selection.json", work / "x", auto_accept=True, audit=1.5)
    with pytest.raises(InvalidInputError, match="use it with auto_accept"):
        export_selection(work / "selection.json", work / "x", audit=0.1)
    with pytest.raises(InvalidInputError, match="not an export manifest"):
        audit_result(work, {})


def test_auto_accept_refuses_labels_that_do_not_fit_the_dataset(work):
    ds = Dataset.create(work / "ds", CLASSES)
    other = dict(sel_items(work)[4], id="item1")  # the id item1 already names another image
    ds.add([_entry_for(other, "dry")], source="human")
    before = snapshot(ds.path)
    with pytest.raises(InvalidInputError, match=r"nothing written.*id already used: item1"):
        export_selection(work / "selection.json", work / "ls", auto_accept=True, dataset=ds, audit=0)
    assert not (work / "ls").exists() and snapshot(ds.path) == before


def test_auto_accepted_rule():
    base = SelectedItem(id="a", path="/a", sha256="0" * 64, p_value=0.2, prediction="dry", probability=0.95)
    assert auto_accepted(base, min_p=0.05)
    assert not auto_accepted(base, min_p=0.3)  # novel at this level
    assert not auto_accepted(base, min_p=0.05, min_prob=0.96)  # uncertain
    assert not auto_accepted(base, min_p=0.05, classes=["wet"])  # not a class of the tool
    from dataclasses import replace

    assert not auto_accepted(replace(base, prediction=None), min_p=0.05)
    assert not auto_accepted(replace(base, probability=None), min_p=0.05)


def test_measure_assistance_against_hand_counts(work):
    truth = {"item0": "dry", "item1": "dry", "item2": "dry", "item3": "dry", "item4": "wet", "item5": "wet"}
    st = measure_assistance(work / "selection.json", truth)
    # predictions: dry, wet, dry, wet, dry, None → pre-annotated 5, right: item0, item2 → 2/5
    assert (st.n, st.n_preannotated, st.n_pre_right) == (6, 5, 2) and st.pre_right_share == pytest.approx(0.4)
    # auto-accepted: item0 (right), item1 (wrong) → error 1/2
    assert (st.n_auto, st.n_auto_wrong, st.auto_error_rate) == (2, 1, 0.5)
    lo, hi = st.auto_error_ci
    assert lo == pytest.approx(0.0945, abs=1e-3) and hi == pytest.approx(0.9055, abs=1e-3)  # Wilson, n=2
    # left to people: item2..item5; pre-annotated item2, item3, item4; right: item2
    assert (st.n_human, st.n_human_preannotated, st.n_human_pre_right) == (4, 3, 1)
    assert json.loads(json.dumps(st.to_json()))["auto_error_ci"] == [lo, hi]
    none = measure_assistance(work / "selection.json", {"item3": "wet"})
    assert none.n_auto == 0 and none.to_json()["auto_error_rate"] is None


# --- the selection reader -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"format": "other"}, "not a novelty selection"),
        ({"items": {}}, "'items' must be a list"),
        ({"alpha": 2}, "'alpha' must lie strictly between 0 and 1"),
        ({"items": [{"id": "a", "path": "/x"}]}, "item #0: sha256 must be a non-empty string"),
        ({"items": [{"id": "a", "path": "/x", "sha256": "s"}] * 2}, "id a occurs more than once"),
        (
            {"items": [{"id": "a", "path": "/x", "sha256": "s", "p_value": "high"}]},
            "p_value must be a number",
        ),
    ],
)
def test_read_selection_refuses_bad_files(work, change, pattern):
    sel = json.loads((work / "selection.json").read_text())
    sel.update(change)
    with pytest.raises(InvalidInputError, match=pattern):
        read_selection(sel)


def test_read_selection_takes_the_selection_object(work):
    from novelty.flywheel.selection import Selection

    sel = Selection.load(work / "selection.json")
    got = read_selection(sel)
    assert [it.id for it in got.items] == [f"item{i}" for i in range(6)] and got.model_version == "det-1"


# --- the initial training set ----------------------------------------------------------------------------------
def test_entries_from_csv(work):
    (work / "train.csv").write_text(
        "path,label,group,condition\nroot/images/img0.jpg,dry,g1,clean\nroot/images/img1.jpg,wet,,\n"
    )
    es = entries_from_csv(work / "train.csv", labeller="dana")
    assert [(e.label, e.group, e.condition, e.labeller, e.source) for e in es] == [
        ("dry", "g1", "clean", "human:dana", "train"),
        ("wet", None, None, "human:dana", "train"),
    ]
    assert es[0].path == str(work / "root" / "images" / "img0.jpg") and es[0].id == sha256_file(es[0].path)
    (work / "bad.csv").write_text(
        "path,label\nmissing1.jpg,dry\nroot/images/img0.jpg,dry\nmissing2.jpg,wet\n"
    )
    with pytest.raises(LabelImportError, match=r"2 unreadable image\(s\).*missing1.jpg.*missing2.jpg"):
        entries_from_csv(work / "bad.csv")
    (work / "nolabel.csv").write_text("path,label\nroot/images/img0.jpg,\n")
    with pytest.raises(LabelImportError, match="without a label"):
        entries_from_csv(work / "nolabel.csv")


# --- CLI -----------------------------------------------------------------------------------------------------
def test_cli_dataset_export_import(work, capsys):
    ds = str(work / "ds")
    assert main(["dataset", "create", ds, "--classes", "dry,wet"]) == 0
    (work / "train.csv").write_text("path,label\nroot/images/img0.jpg,dry\n")
    assert main(["dataset", "add-csv", ds, str(work / "train.csv")]) == 0
    assert "version 1: added 1 (dry: 1)" in capsys.readouterr().out
    out = str(work / "ls")
    assert (
        main(
            [
                "export",
                str(work / "selection.json"),
                "--format",
                "label-studio",
                "--out",
                out,
                "--dataset",
                ds,
                "--auto-accept",
                "--audit",
                "0",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "exported 4 image(s)" in printed and "left out 1 image(s)" in printed and "auto-accepted 1" in printed
    )
    tasks = json.loads((work / "ls" / "tasks.json").read_text())
    (work / "export.json").write_text(json.dumps(completed(tasks, {"item2": "wet", "item3": "wet"})))
    assert (
        main(["import-labels", ds, str(work / "export.json"), "--selection", str(work / "selection.json")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "version 3: added 2 (wet: 2)" in printed and "2 unlabelled" in printed
    assert main(["dataset", "show", ds, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["counts"] == {"dry": 1, "wet": 3} and shown["n_auto"] == 1 and shown["latest_version"] == 3
    assert main(["dataset", "show", ds]) == 0
    assert "auto-accepted (labeller model:…): 1" in capsys.readouterr().out
    assert main(["dataset", "add-classes", ds, "--classes", "fog"]) == 0
    assert Dataset.open(ds).classes == ["dry", "fog", "wet"]


def test_cli_exit_codes(work, capsys):
    ds = str(work / "ds")
    assert main(["dataset", "create", ds, "--classes", "dry,wet"]) == 0
    (work / "bad.json").write_text("[]")
    assert main(["import-labels", ds, str(work / "bad.json"), "--selection", str(work / "nope.json")]) == 1
    assert "novelty import-labels: error:" in capsys.readouterr().err
    assert main(["dataset", "show", str(work / "missing")]) == 1
    assert main(["dataset", "create", ds, "--classes", ","]) == 2
    assert (
        main(["export", str(work / "selection.json"), "--out", str(work / "x"), "--auto-min-p", "0.1"]) == 2
    )
    assert "only apply with --auto-accept" in capsys.readouterr().err
    assert main(["export", str(work / "selection.json"), "--out", str(work / "x"), "--format", "yaml"]) == 2
