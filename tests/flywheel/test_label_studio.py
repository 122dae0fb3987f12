"""Against a real Label Studio server (its own venv .venv-ls, installed by `make label-studio` / `make test`):
export a selection of real images, create a project with the exported labelling config through the HTTP API,
import the tasks, submit annotations as an annotator would, export the project and import the labels back; and
the same through novelty's own API client (`novelty export --to-label-studio`, `novelty import-labels
--from-label-studio`, a flywheel turn with a [label_studio] section), its errors included. One server for the
module; every image lies under its document root, work/root."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path

import label_studio_server as lss
import pytest

from novelty.cli import main
from novelty.errors import InvalidInputError
from novelty.fileio import sha256_file
from novelty.flywheel.dataset import Dataset
from novelty.flywheel.labels.labelimport import import_labels
from novelty.flywheel.labels.labelling import export_selection
from novelty.flywheel.labels.labelstudio import label_config

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


# --- through the REST API: novelty export --to-label-studio, import-labels --from-label-studio, the flywheel ------
def _selection(work: Path, name: str, srcs: list[Path], folder: str, *, prefix: str) -> Path:
    """Real images copied to work/root/<folder>/, and a selection over them with group and condition."""
    img_dir = work / "root" / folder
    img_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for i, src in enumerate(srcs):
        q = img_dir / f"{prefix}{i}.jpg"
        shutil.copyfile(src, q)
        p = 0.3 if i % 2 else 0.02
        items.append(
            {
                "id": f"{prefix}{i}",
                "path": str(q),
                "sha256": sha256_file(q),
                "source": f"flag:{prefix}{i}",
                "rank": i + 1,
                "reason": "test",
                "p_value": p,
                "novelty": 1 - p,
                "is_novel": p < 0.05,
                "prediction": CLASSES[i % 2],
                "probability": 0.6 + 0.05 * i,
                "uncertainty": 0.4 - 0.05 * i,
                "timestamp": None,
                "group": f"drive-{i // 2}",
                "condition": "tunnel" if i % 2 else "snow",
            }
        )
    sel = {
        "format": "novelty-selection",
        "format_version": 1,
        "model_version": "det-api",
        "detector_id": "det-api",
        "classes": CLASSES,
        "alpha": 0.05,
        "strategy": "hybrid",
        "items": items,
    }
    path = work / name
    path.write_text(json.dumps(sel))
    return path


def _project(server, title: str) -> dict:
    found = [p for p in server.api("GET", "/api/projects?page_size=100")["results"] if p["title"] == title]
    assert len(found) == 1, found
    return found[0]


def _tasks(server, pid: int) -> list[dict]:
    return server.api("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true")


def _cli(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", lss.TOKEN)


def test_export_to_label_studio_creates_the_project_and_never_duplicates(
    server, exported, textile_paths, key, capsys
):
    work = exported
    srcs = textile_paths["nominal"][10:13] + textile_paths["global"][10:13]
    sel = _selection(work, "sel-api.json", srcs[:4], "api", prefix="api-")
    root = work / "root"
    assert (
        _cli(
            "export", sel, "--to-label-studio", server.url, "--project", "api export", "--document-root", root
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "created" in out
    # the export's record stays beside the selection (what went to people; the import reads it)
    kept = sel.with_name(sel.stem + ".export")
    assert f"to {kept}" in out and json.loads((kept / "export.json").read_text())["n_exported"] == 4
    project = _project(server, "api export")
    storages = server.api("GET", f"/api/storages/localfiles?project={project['id']}")
    assert [s["path"] for s in storages] == [str(root / "api")]
    tasks = _tasks(server, project["id"])
    items = {it["id"]: it for it in json.loads(sel.read_text())["items"]}
    assert sorted(t["data"]["novelty_id"] for t in tasks) == sorted(items)
    for t in tasks:
        it = items[t["data"]["novelty_id"]]
        assert t["data"]["novelty_score"] == pytest.approx(it["novelty"])
        assert (t["data"]["group"], t["data"]["condition"]) == (it["group"], it["condition"])
        assert (t["meta"]["group"], t["meta"]["condition"]) == (it["group"], it["condition"])
        (pred,) = server.api("GET", f"/api/predictions?task={t['id']}")
        assert pred["score"] == pytest.approx(it["probability"]) and pred["model_version"] == "det-api"
        assert pred["result"][0]["value"]["choices"] == [it["prediction"]]
        status, body = server.get_bytes(t["data"]["image"])  # served from the disk
        assert status == 200 and body == Path(it["path"]).read_bytes()

    # an annotator labels two; the export runs again, and once more with two more images: nothing doubles,
    # the annotations stay, the new images arrive
    by_nid = {t["data"]["novelty_id"]: t["id"] for t in tasks}
    annotate(server, by_nid["api-0"], "wet")
    annotate(server, by_nid["api-1"], None, cancel=True)
    assert (
        _cli(
            "export", sel, "--to-label-studio", server.url, "--project", "api export", "--document-root", root
        )
        == 0
    )
    assert "0 task(s) imported, 4 already there" in capsys.readouterr().out
    sel2 = _selection(work, "sel-api-2.json", srcs, "api", prefix="api-")
    assert (
        _cli(
            "export",
            sel2,
            "--to-label-studio",
            server.url,
            "--project",
            "api export",
            "--document-root",
            root,
        )
        == 0
    )
    assert "2 task(s) imported, 4 already there" in capsys.readouterr().out
    after = _tasks(server, project["id"])
    assert sorted(t["data"]["novelty_id"] for t in after) == [f"api-{i}" for i in range(6)]
    anns = {t["data"]["novelty_id"]: t["annotations"] for t in after}
    assert [a["result"][0]["value"]["choices"] for a in anns["api-0"]] == [["wet"]]
    assert [a["was_cancelled"] for a in anns["api-1"]] == [True]
    assert len(server.api("GET", f"/api/storages/localfiles?project={project['id']}")) == 1


def test_import_labels_from_label_studio_keeps_group_and_condition(
    server, exported, textile_paths, key, capsys
):
    work = exported
    sel = _selection(
        work,
        "sel-pull.json",
        textile_paths["nominal"][20:22] + textile_paths["global"][20:22],
        "pull",
        prefix="pull-",
    )
    root = work / "root"
    assert (
        _cli(
            "export",
            sel,
            "--to-label-studio",
            server.url,
            "--project",
            "pull labels",
            "--document-root",
            root,
        )
        == 0
    )
    pid = _project(server, "pull labels")["id"]
    by_nid = {t["data"]["novelty_id"]: t["id"] for t in _tasks(server, pid)}
    annotate(server, by_nid["pull-0"], "dry")
    annotate(server, by_nid["pull-1"], "wet")
    annotate(server, by_nid["pull-2"], None, cancel=True)  # skipped; pull-3 is left
    capsys.readouterr()
    ds = Dataset.create(work / "ds-pull", CLASSES)
    saved = work / "pulled.json"
    assert (
        _cli(
            "import-labels",
            ds.path,
            "--from-label-studio",
            server.url,
            "--project",
            "pull labels",
            "--selection",
            sel,
            "--save",
            saved,
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "4 task(s) of the selection, 2 labelled, 1 skipped, 1 unlabelled" in out and "added 2" in out
    got = {e.id: e for e in Dataset.open(ds.path).entries()}
    assert {k: (e.label, e.group, e.condition) for k, e in got.items()} == {
        "pull-0": ("dry", "drive-0", "snow"),
        "pull-1": ("wet", "drive-0", "tunnel"),
    }
    # the one reader of Label Studio's JSON reads group and condition from the tasks themselves
    from novelty.flywheel.labels.labelimport import read_labels

    rows = {r.id: (r.group, r.condition) for r in read_labels(saved).rows}
    assert rows == {"pull-0": ("drive-0", "snow"), "pull-1": ("drive-0", "tunnel")}
    # pulling again adds nothing: the dataset already has both
    assert (
        _cli(
            "import-labels",
            ds.path,
            "--from-label-studio",
            server.url,
            "--project",
            "pull labels",
            "--selection",
            sel,
        )
        == 0
    )
    assert "nothing new" in capsys.readouterr().out and Dataset.open(ds.path).latest_version == 1


def test_label_studio_errors_name_the_cause(server, exported, textile_paths, monkeypatch, tmp_path, capsys):
    work = exported
    sel = _selection(work, "sel-err.json", textile_paths["nominal"][30:32], "err", prefix="err-")
    root = work / "root"
    base = ["export", sel, "--to-label-studio", server.url, "--document-root", root]

    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    assert _cli(*base, "--project", "errors") == 2  # no key: a usage error, before any request
    assert "LABEL_STUDIO_API_KEY" in capsys.readouterr().err

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)  # a legacy token the server does not know
    assert _cli(*base, "--project", "errors") == 1
    err = capsys.readouterr().err
    assert "refused the API key as a legacy token" in err and "--enable-legacy-api-token" in err
    assert "f" * 40 not in err  # the key is never shown

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln")  # a made-up JWT
    assert _cli(*base, "--project", "errors") == 1
    assert "refused the personal access token" in capsys.readouterr().err

    # a real personal access token works (exchanged for an access token), from a file
    pat = server.api("POST", "/api/token/", {})["token"]
    key_file = tmp_path / "key"
    key_file.write_text(pat + "\n")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    assert _cli(*base, "--project", "errors", "--api-key-file", key_file) == 0
    # with legacy tokens disabled for the organization, the legacy token's error says how to allow them
    from novelty.flywheel.labels.labelstudio_client import LabelStudio

    client = LabelStudio(server.url, pat)
    client.request(
        "POST", "/api/jwt/settings", {"api_tokens_enabled": True, "legacy_api_tokens_enabled": False}
    )
    try:
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", lss.TOKEN)
        assert _cli(*base, "--project", "errors") == 1
        err = capsys.readouterr().err
        assert "legacy token authentication has been disabled" in err and "--enable-legacy-api-token" in err
    finally:
        client.request(
            "POST", "/api/jwt/settings", {"api_tokens_enabled": True, "legacy_api_tokens_enabled": True}
        )

    # two projects with one name
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", lss.TOKEN)
    for _ in range(2):
        server.api("POST", "/api/projects", {"title": "twin project", "label_config": label_config(CLASSES)})
    assert _cli(*base, "--project", "twin project") == 1
    assert "2 projects at" in capsys.readouterr().err

    # images outside the document root given: refused before any request, naming a root that holds them
    outside = _selection(
        work.parent / f"{work.name}-out", "sel-out.json", textile_paths["nominal"][40:42], "x", prefix="out-"
    )
    assert (
        _cli(
            "export",
            outside,
            "--to-label-studio",
            server.url,
            "--project",
            "outside",
            "--document-root",
            root,
        )
        == 1
    )
    assert "outside the document root" in capsys.readouterr().err
    # ... and by default (their own folder's parent): the server says where it serves from, nothing is left behind
    assert _cli("export", outside, "--to-label-studio", server.url, "--project", "outside") == 1
    err = capsys.readouterr().err
    assert f"serves local files from {root}" in err and "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=" in err
    # a document root above the server's: the storage is accepted, but the image is not served: no task imported
    assert (
        _cli(
            "export", sel, "--to-label-studio", server.url, "--project", "wrong root", "--document-root", work
        )
        == 1
    )
    assert "does not serve" in capsys.readouterr().err
    titles = [p["title"] for p in server.api("GET", "/api/projects?page_size=100")["results"]]
    assert "outside" not in titles and "wrong root" not in titles


def test_flywheel_turn_exports_to_and_imports_from_label_studio(
    server, exported, textile_paths, tmp_path, monkeypatch
):
    """A turn with a [label_studio] section: the export goes into the project, the turn waits (saying how many
    tasks are done) until every task is labelled or skipped, then imports the annotations: no file copied by
    hand. Reduced: the turn starts at "selected" (a selection written here) and stops before retraining."""
    import novelty.flywheel.turn as turn_module
    from novelty.flywheel.registry.store import Registry
    from novelty.flywheel.turn import Turn, load_config, run_turn

    work = exported
    fly = work / "root" / "flywheel"  # the flywheel's images lie under the server's document root
    sel_path = _selection(
        work, "sel-turn.json", textile_paths["global"][50:54], "flywheel/incoming", prefix="t-"
    )
    sel = json.loads(sel_path.read_text())
    sel.update(created="2026-01-01T00:00:00Z", budget=4, seed=0, weights={})
    for it in sel["items"]:
        del it["group"], it["condition"]  # what `novelty select` writes
    Registry.create(tmp_path / "registry")
    Dataset.create(tmp_path / "train", CLASSES)
    key_file = tmp_path / "ls-key"
    key_file.write_text(lss.TOKEN)
    cfg_path = tmp_path / "flywheel.toml"
    cfg_path.write_text(
        'registry = "registry"\ndataset = "train"\ntest = "test"\nnew_slice = "new"\nworkdir = "turns"\n'
        f'[select]\nsources = ["{fly / "incoming"}"]\n'
        "[label]\nauto_accept = false\nholdout = 0.0\n"
        f'[label_studio]\nurl = "{server.url}"\nproject = "flywheel {{turn}}"\n'
        f'document_root = "{work / "root"}"\napi_key_file = "ls-key"\n'
    )
    cfg = load_config(cfg_path)
    d = cfg.workdir / "0001"
    d.mkdir(parents=True)
    (d / "selection.json").write_text(json.dumps(sel))
    Turn(number=1, dir=d, stage="selected", champion="0001").save()
    monkeypatch.setattr(turn_module, "_retrain", lambda *a: None)  # stop after the import

    turn = run_turn(cfg, new_turn=False)
    assert turn.stage == "waiting-for-labels" and turn.exported == 4
    assert "0 of 4 tasks done" in turn.message and "flywheel 0001" in turn.waiting_for
    assert main(["flywheel", "run", "--config", str(cfg_path), "--no-new-turn"]) == 4
    pid = _project(server, "flywheel 0001")["id"]
    tasks = {t["data"]["novelty_id"]: t["id"] for t in _tasks(server, pid)}
    assert sorted(tasks) == [f"t-{i}" for i in range(4)]

    annotate(server, tasks["t-0"], "wet")
    annotate(server, tasks["t-1"], "dry")
    turn = run_turn(cfg, new_turn=False)
    assert (
        turn.stage == "waiting-for-labels"
        and "2 of 4 tasks done (2 labelled, 0 skipped, 2 unlabelled)" in turn.message
    )
    assert not cfg.labels_path(1).exists()

    annotate(server, tasks["t-2"], "wet")
    annotate(server, tasks["t-3"], None, cancel=True)
    turn = run_turn(cfg, new_turn=False)
    assert turn.stage == "imported" and turn.labels_bought == 3
    assert cfg.labels_path(1).is_file()  # the pulled annotations, kept with the turn
    got = {e.id: e.label for e in Dataset.open(tmp_path / "train").entries()}
    assert got == {"t-0": "wet", "t-1": "dry", "t-2": "wet"}
    # the project holds the turn's tasks once, whatever ran how often
    assert len(_tasks(server, pid)) == 4
