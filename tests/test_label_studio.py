"""Against a real Label Studio server (its own venv .venv-ls, installed by `make label-studio` / `make test`):
export a selection of real images, create a project with the exported labelling config through the HTTP API,
import the tasks, submit annotations as an annotator would, export the project and import the labels back."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path

import label_studio_server as lss
import pytest

from novelty.errors import InvalidInputError
from novelty.fileio import sha256_file
from novelty.flywheel.dataset import Dataset
from novelty.flywheel.labelimport import import_labels
from novelty.flywheel.labelling import export_selection

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not lss.installed(), reason="Label Studio is not installed in .venv-ls (run `make label-studio`)"
    ),
]

CLASSES = ["dry", "wet"]
N = 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory, textile_paths) -> Path:
    """Real textile images as files under root/images, a selection over them, and its Label Studio export."""
    work = tmp_path_factory.mktemp("ls-work")
    img_dir = work / "root" / "images"
    img_dir.mkdir(parents=True)
    items = []
    for i, src in enumerate(textile_paths["nominal"][:4] + textile_paths["global"][:4]):
        q = img_dir / f"frame {i}.jpg"  # a space: the local-file URL must be quoted
        shutil.copyfile(src, q)
        p = 0.5 if i < 4 else 0.01
        items.append(
            {
                "id": f"flag-{i}",
                "path": str(q),
                "sha256": sha256_file(q),
                "source": f"flag:{i}",
                "rank": i + 1,
                "reason": "test",
                "p_value": p,
                "novelty": 1 - p,
                "is_novel": p < 0.05,
                "prediction": CLASSES[i % 2],
                "probability": 0.8,
                "uncertainty": 0.2,
                "timestamp": None,
            }
        )
    sel = {
        "format": "novelty-selection",
        "format_version": 1,
        "model_version": "det-ls-test",
        "detector_id": "det-ls-test",
        "classes": CLASSES,
        "alpha": 0.05,
        "strategy": "hybrid",
        "items": items,
    }
    (work / "selection.json").write_text(json.dumps(sel))
    res = export_selection(work / "selection.json", work / "ls", format="label-studio")
    assert res.n_exported == N
    return work


@pytest.fixture(scope="module")
def server(tmp_path_factory, exported):
    manifest = json.loads((exported / "ls" / "export.json").read_text())
    srv = lss.LabelStudioServer(tmp_path_factory.mktemp("ls-data"), Path(manifest["document_root"]))
    srv.start()
    yield srv
    srv.stop()


def annotate(server, task_id: int, label: str | None, *, cancel: bool = False) -> dict:
    result = (
        []
        if label is None
        else [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
    )
    return server.api(
        "POST",
        f"/api/tasks/{task_id}/annotations",
        {"result": result, "was_cancelled": cancel, "lead_time": 4.2},
    )


def test_label_studio_round_trip(server, exported, tmp_path):
    ls_dir = exported / "ls"
    manifest = json.loads((ls_dir / "export.json").read_text())
    me = server.api("GET", "/api/current-user/whoami")
    project = server.api(
        "POST",
        "/api/projects",
        {"title": "novelty flywheel test", "label_config": (ls_dir / "label_config.xml").read_text()},
    )
    pid = project["id"]
    # the images are served from the disk: a local-files storage over their folder (not synced)
    server.api(
        "POST",
        "/api/storages/localfiles",
        {
            "project": pid,
            "path": manifest["local_storage_path"],
            "use_blob_urls": False,
            "title": "selection",
        },
    )
    tasks = json.loads((ls_dir / "tasks.json").read_text())
    imported = server.api("POST", f"/api/projects/{pid}/import", tasks)
    assert imported["task_count"] == N and imported["prediction_count"] == N

    listed = server.api("GET", f"/api/tasks?project={pid}&page_size=100")["tasks"]
    by_nid = {t["data"]["novelty_id"]: t for t in listed}
    selection = {it["id"]: it for it in json.loads((exported / "selection.json").read_text())["items"]}
    assert set(by_nid) == set(selection)
    for nid, t in by_nid.items():  # each image resolves to the file's bytes
        status, body = server.get_bytes(t["data"]["image"])
        assert status == 200, (t["data"]["image"], body[:200])
        assert body == Path(selection[nid]["path"]).read_bytes()
        assert urllib.parse.unquote(t["data"]["image"]).endswith(Path(selection[nid]["path"]).name)
    # the pre-annotations arrived with the model version and the head's probability as their score; the
    # novelty score travels in the task's data
    for nid, t in by_nid.items():
        preds = server.api("GET", f"/api/predictions?task={t['id']}")
        assert len(preds) == 1
        assert preds[0]["model_version"] == "det-ls-test"
        assert preds[0]["score"] == pytest.approx(selection[nid]["probability"])
        assert t["data"]["novelty_score"] == pytest.approx(selection[nid]["novelty"])
        assert preds[0]["result"][0]["value"]["choices"] == [selection[nid]["prediction"]]

    # an annotator labels six images (two correct the pre-annotation), skips one and leaves one
    submitted = {f"flag-{i}": lab for i, lab in enumerate(["dry", "wet", "wet", "wet", "dry", "dry"])}
    for nid, label in submitted.items():
        annotate(server, by_nid[nid]["id"], label)
    annotate(server, by_nid["flag-6"]["id"], None, cancel=True)
    # flag-0 is relabelled later: the latest annotation counts
    annotate(server, by_nid["flag-0"]["id"], "wet")
    submitted["flag-0"] = "wet"

    export = server.api("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true")
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps(export))

    ds = Dataset.create(tmp_path / "ds", CLASSES)
    res = import_labels(ds, export_path, exported / "selection.json")
    assert {e.id: e.label for e in Dataset.open(ds.path).entries()} == submitted
    assert sorted(res.unlabelled) == ["flag-6", "flag-7"]
    assert {e.labeller for e in res.added} == {f"human:{me['id']}"}
    assert all(
        e.sha256 == selection[e.id]["sha256"] and e.source == selection[e.id]["source"] for e in res.added
    )

    # a broken export: an annotation with a class the dataset does not have → refused, nothing written
    annotate(server, by_nid["flag-7"]["id"], "fog")
    broken = server.api("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true")
    broken_path = tmp_path / "broken.json"
    broken_path.write_text(json.dumps(broken))
    before = {p.name: p.read_bytes() for p in ds.path.iterdir() if p.is_file() and p.name != ".lock"}
    with pytest.raises(InvalidInputError, match=r"unknown class 'fog'"):
        import_labels(ds, broken_path, exported / "selection.json")
    after = {p.name: p.read_bytes() for p in ds.path.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before and Dataset.open(ds.path).latest_version == 1
