"""Label Studio's API client without a Label Studio server: command-line checks, an unreachable URL, the key's
sources, answers a stub server gives (403, a redirect, an HTML error page), storage folders, task states and the
flywheel's [label_studio] section. The real server's tests: tests/flywheel/test_label_studio.py."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from novelty.cli import main
from novelty.errors import InvalidInputError
from novelty.fileio import sha256_file
from novelty.flywheel.labels import labelstudio
from novelty.flywheel.labels.labelstudio_api import LabelStudioSettings
from novelty.flywheel.labels.labelstudio_client import (
    LabelStudio,
    LabelStudioAuthError,
    LabelStudioError,
    check_url,
    read_api_key,
)
from novelty.flywheel.turn import FlywheelConfigError, load_config

TOKEN = "0123456789abcdef0123456789abcdef01234567"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def selection(tmp_path) -> Path:
    folder = tmp_path / "root" / "images"
    folder.mkdir(parents=True)
    items = []
    for i in range(2):
        p = folder / f"img{i}.png"
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(p)
        items.append({"id": f"i{i}", "path": str(p), "sha256": sha256_file(p), "prediction": "dry"})
    path = tmp_path / "selection.json"
    path.write_text(json.dumps({"format": "novelty-selection", "classes": ["dry", "wet"], "items": items}))
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--project", "p1x"], "apply only with --to-label-studio"),
        (["--to-label-studio", "http://127.0.0.1:1"], "needs --project"),
        (["--to-label-studio", "ftp://x", "--project", "p1x"], "http"),
        (["--to-label-studio", "http://127.0.0.1:1", "--project", "p1x", "--format", "csv"], "not csv"),
        ([], "give --out DIR"),
        (
            [
                "--to-label-studio",
                "http://127.0.0.1:1",
                "--project",
                "p1x",
                "--api-key-file",
                "/nonexistent/key",
            ],
            "cannot read the Label Studio API key file",
        ),
    ],
)
def test_export_arguments_are_checked_first(selection, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    assert main(["export", str(selection), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give the labels FILE, or --from-label-studio"),
        (["labels.json", "--from-label-studio", "http://127.0.0.1:1", "--project", "p1x"], "not both"),
        (["--from-label-studio", "http://127.0.0.1:1", "--project", "p1x", "--format", "csv"], "not csv"),
        (["labels.json", "--save", "x.json"], "--save applies only"),
        (["--from-label-studio", "http://127.0.0.1:1"], "needs --project"),
    ],
)
def test_import_arguments_are_checked_first(tmp_path, selection, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    assert main(["import-labels", str(tmp_path / "ds"), *argv, "--selection", str(selection)]) == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_server_is_named_with_how_to_start_it(selection, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["export", str(selection), "--to-label-studio", url, "--project", "nowhere"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach Label Studio at {url}" in err
    assert "label-studio start --port" in err and "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=" in err
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={tmp_path / 'root'}" in err  # the root this export needs
    argv = ["import-labels", str(tmp_path / "ds"), "--from-label-studio", url, "--project", "nowhere"]
    assert main([*argv, "--selection", str(selection)]) == 1
    assert f"cannot reach Label Studio at {url}" in capsys.readouterr().err


def test_the_api_key_comes_from_a_file_or_the_environment_and_is_never_shown(tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(LabelStudioAuthError, match="LABEL_STUDIO_API_KEY"):
        read_api_key()
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", f"  {TOKEN}\n")
    assert read_api_key() == TOKEN
    f = tmp_path / "key"
    f.write_text("other-key\n")
    assert read_api_key(f) == "other-key"  # the file wins
    f.write_text("\n")
    with pytest.raises(LabelStudioAuthError, match="is empty"):
        read_api_key(f)
    client = LabelStudio("http://localhost:8080/", TOKEN)
    assert client.url == "http://localhost:8080" and not client.personal and TOKEN not in repr(client)
    assert LabelStudio("http://h:1", "eyJh.eyJi.sig").personal
    with pytest.raises(InvalidInputError, match="credentials"):
        check_url("http://user:pw@localhost:8080")


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers as a server in front of (or instead of) Label Studio might: 403 JSON, a redirect, an HTML 502."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        _Stub.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/elsewhere")
            self.end_headers()
            return
        if self.path.startswith("/api/projects"):
            body, status, kind = (
                b'{"detail": "You do not have permission to perform this action."}',
                403,
                "json",
            )
        else:
            body, status, kind = b"<html><body>bad gateway</body></html>", 502, "html"
        self.send_response(status)
        self.send_header("Content-Type", f"application/{kind}" if kind == "json" else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Stub.seen.clear()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def test_refusals_redirects_and_error_pages(stub):
    client = LabelStudio(stub, TOKEN)
    with pytest.raises(
        LabelStudioAuthError, match=r"forbids GET /api/projects to the API key's user \(HTTP 403: You"
    ):
        client.request("GET", "/api/projects", query={"title": "x"})
    with pytest.raises(LabelStudioError, match="redirects GET /moved") as e:
        client.request("GET", "/moved")
    assert "elsewhere" not in [p for p, _ in _Stub.seen]  # the key never followed the redirect
    assert TOKEN not in str(e.value)
    with pytest.raises(
        LabelStudioError, match=r"GET /api/other failed with HTTP 502$"
    ):  # no HTML in the message
        client.request("GET", "/api/other")
    assert {a for _, a in _Stub.seen} == {f"Token {TOKEN}"}


def test_storage_paths_below_the_document_root(tmp_path):
    root = tmp_path / "root"
    a, b = str(root / "in" / "x" / "1.jpg"), str(root / "turns" / "0001" / "2.jpg")
    assert labelstudio.storage_paths([a], root) == [root / "in" / "x"]
    # the common folder is the root itself: one storage per top-level folder (Label Studio refuses the root)
    assert labelstudio.storage_paths([a, b], root) == [root / "in", root / "turns"]
    with pytest.raises(InvalidInputError, match="directly in the document root"):
        labelstudio.storage_paths([a, str(root / "3.jpg")], root)
    with pytest.raises(
        InvalidInputError, match=re.escape(f"a document root that contains them all (e.g. {tmp_path})")
    ):
        labelstudio.storage_paths([a, str(tmp_path / "other" / "4.jpg")], root)


def _ann(choice: str | None, *, cancelled: bool = False, t: str = "2026-01-01T00:00:00Z") -> dict:
    result = (
        [] if choice is None else [{"from_name": "label", "type": "choices", "value": {"choices": [choice]}}]
    )
    return {"result": result, "was_cancelled": cancelled, "updated_at": t}


@pytest.mark.parametrize(
    ("annotations", "state"),
    [
        ([], "unlabelled"),
        ([_ann(None, cancelled=True)], "skipped"),
        ([_ann("dry")], "labelled"),
        ([_ann(None, cancelled=True), _ann("wet")], "labelled"),
        ([_ann(None)], "unlabelled"),  # submitted without a choice
        ([_ann("dry"), _ann("wet", t="2026-01-02T00:00:00Z")], "labelled"),
    ],
)
def test_task_states(annotations, state):
    assert labelstudio.task_state({"data": {}, "annotations": annotations}) == state


def test_config_classes_read_back_what_label_config_writes():
    assert labelstudio.config_classes(labelstudio.label_config(["dry", "wet", "ice"])) == [
        "dry",
        "wet",
        "ice",
    ]
    assert labelstudio.config_classes("<View><Text name='t' value='$t'/></View>") is None
    assert labelstudio.config_classes("<View") is None


BASE = 'registry = "r"\ndataset = "d"\ntest = "t"\n[select]\nsources = ["in"]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[label_studio]\nurl = "http://h:8080"\n', "needs project, document_root"),
        ('[label_studio]\nurl = "h:8080"\nproject = "abc"\ndocument_root = "."\n', "url must be an http"),
        (
            '[label_studio]\nurl = "http://h"\nproject = "abc"\ndocument_root = "."\nkey = "x"\n',
            "unknown key 'key'",
        ),
        (
            '[label_studio]\nurl = "http://h"\nproject = "abc"\ndocument_root = 1\n',
            "document_root must be a str",
        ),
        ('[label_studio]\nurl = "http://h"\nproject = "ab"\ndocument_root = "."\n', "at least 3 characters"),
        (
            '[label]\nformat = "csv"\n[label_studio]\nurl = "http://h"\nproject = "abc"\ndocument_root = "."\n',
            "needs \\[label\\] format = label-studio",
        ),
        (
            '[label_studio]\nurl = "http://h"\nproject = "abc"\ndocument_root = "."\napi_key_file = "k"\n'
            'api_key_env = "K"\n',
            "not both",
        ),
    ],
)
def test_bad_label_studio_sections_name_the_key(tmp_path, text, message):
    cfg = tmp_path / "flywheel.toml"
    cfg.write_text(BASE + text)
    with pytest.raises(FlywheelConfigError, match=message):
        load_config(cfg)


def test_label_studio_section_paths_are_relative_to_the_config(tmp_path):
    cfg = tmp_path / "flywheel.toml"
    cfg.write_text(
        BASE + '[label_studio]\nurl = "http://h:8080/"\nproject = "wipers {turn}"\ndocument_root = "data"\n'
        'api_key_file = "secret/key"\n'
    )
    ls = load_config(cfg).label_studio
    assert ls == LabelStudioSettings(
        url="http://h:8080",
        project="wipers {turn}",
        document_root=tmp_path / "data",
        api_key_file=tmp_path / "secret" / "key",
    )
    assert ls.project_name(3) == "wipers 0003"
    cfg.write_text(BASE)
    assert load_config(cfg).label_studio is None


def test_a_turn_refuses_images_outside_the_flywheel_document_root(tmp_path, selection, monkeypatch):
    """The flywheel's one document root: an image the turn would export from outside it stops the export stage
    before any request (the URL answers nothing), and the turn stays at "selected"."""
    from novelty.flywheel.dataset import Dataset
    from novelty.flywheel.registry.store import Registry
    from novelty.flywheel.turn import Turn, run_turn

    sel = json.loads(selection.read_text())
    for rank, it in enumerate(sel["items"], start=1):
        it.update(source="folder:x", rank=rank, reason="test", p_value=0.01, novelty=0.99, is_novel=True)
    sel.update(format_version=1, created="2026-01-01T00:00:00Z", strategy="novelty", budget=2, seed=0)
    sel.update(weights={}, detector_id="d", model_version="d", alpha=0.05)
    Registry.create(tmp_path / "registry")
    Dataset.create(tmp_path / "train", ["dry", "wet"])
    (tmp_path / "served").mkdir()
    cfg_path = tmp_path / "flywheel.toml"
    cfg_path.write_text(
        BASE.replace('"r"', '"registry"').replace('"d"', '"train"')
        + "[label]\nauto_accept = false\n"
        + f'[label_studio]\nurl = "http://127.0.0.1:{_free_port()}"\nproject = "abc"\ndocument_root = "served"\n'
    )
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    cfg = load_config(cfg_path)
    d = cfg.workdir / "0001"
    d.mkdir(parents=True)
    (d / "selection.json").write_text(json.dumps(sel))
    Turn(number=1, dir=d, stage="selected").save()
    with pytest.raises(InvalidInputError, match=f"outside the document root {tmp_path / 'served'}"):
        run_turn(cfg, new_turn=False)
    assert Turn.load(d).stage == "selected"
    assert main(["flywheel", "run", "--config", str(cfg_path), "--no-new-turn"]) == 1
