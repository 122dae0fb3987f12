"""The service's log of its reloads: each says which detector (its short artifact id, the directory and what an
alias points to), what triggered it (the admin endpoint, a changed MANIFEST.sha256) and how long it took, at
INFO; a reload that fails is a WARNING that names the detector still serving. And ``novelty serve`` shows them
without ``-v``."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from serve_support import ServerProcess, new_token, tiny_detector

import novelty
from novelty.serve.detectors import read_version

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from novelty.serve.app import ServeConfig, create_app

TOKEN = "score-token-0123456789abcdef"
ADMIN = {"Authorization": "Bearer admin-token-0123456789abcdef"}
SERVE_LOG = "novelty.serve"


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    return tiny_detector(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture
def alias(detector_dir, tmp_path) -> Path:
    """``models/champion``, a link to ``versions/0001/detector`` (a registry's layout)."""
    target = tmp_path / "models" / "versions" / "0001" / "detector"
    shutil.copytree(detector_dir, target)
    link = tmp_path / "models" / "champion"
    link.symlink_to(Path("versions") / "0001" / "detector")
    return link


def _app(directory: Path, tmp_path: Path, watch_interval_s: float = 0):
    return create_app(
        ServeConfig(
            directory,
            flag_store=str(tmp_path / "flags"),
            api_tokens=[TOKEN],
            admin_tokens=[ADMIN["Authorization"].split()[1]],
            watch_interval_s=watch_interval_s,
        )
    )


def _save_variant(directory: Path, alpha: float) -> str:
    det = novelty.load(directory)
    det.alpha = alpha
    det.save(directory.resolve())
    return str(read_version(directory))


def _reloads(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == SERVE_LOG and "trigger:" in r.getMessage()]


def test_admin_reload_logs_the_detector_the_trigger_and_the_time(alias, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger=SERVE_LOG), TestClient(_app(alias, tmp_path)) as c:
        v1 = c.get("/readyz").json()["detector_version"]
        caplog.clear()
        assert c.post("/v1/admin/reload", headers=ADMIN).json()["switched"] is False
        (same,) = _reloads(caplog)
        assert same.levelno == logging.INFO
        text = same.getMessage()
        assert f"{alias} → versions/0001/detector" in text and "trigger: POST /v1/admin/reload" in text
        assert re.search(r" in \d+\.\d\d s", text) and f"unchanged, detector {v1[:12]} still serving" in text

        v2 = _save_variant(alias, alpha=0.5)
        caplog.clear()
        assert c.post("/v1/admin/reload", headers=ADMIN).json()["switched"] is True
        (switched,) = _reloads(caplog)
        assert switched.levelno == logging.INFO
        text = switched.getMessage()
        assert "trigger: POST /v1/admin/reload" in text and re.search(r" in \d+\.\d\d s", text)
        assert f"detector {v2[:12]} now serving (was {v1[:12]})" in text and "versions/0001/detector" in text

        # a broken artifact: WARNING, and the detector still serving named
        (alias / "train_ids.json").write_text("{}")
        caplog.clear()
        assert c.post("/v1/admin/reload", headers=ADMIN).status_code == 500
        (failed,) = _reloads(caplog)
        assert failed.levelno == logging.WARNING
        text = failed.getMessage()
        assert "trigger: POST /v1/admin/reload" in text and re.search(r"failed after \d+\.\d\d s", text)
        assert f"still serving {v2[:12]}" in text and str(alias) in text
        assert c.get("/healthz").json()["detector_version"] == v2


def test_a_changed_directory_is_logged_as_the_trigger(detector_dir, tmp_path, caplog):
    d = tmp_path / "det"
    shutil.copytree(detector_dir, d)
    with caplog.at_level(logging.INFO, logger=SERVE_LOG), TestClient(_app(d, tmp_path, 0.1)) as c:
        v1 = c.get("/readyz").json()["detector_version"]
        v2 = _save_variant(d, alpha=0.2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and c.get("/healthz").json()["detector_version"] != v2:
            time.sleep(0.1)
    (rec,) = _reloads(caplog)
    assert rec.levelno == logging.INFO
    text = rec.getMessage()
    assert (
        "trigger: MANIFEST.sha256 changed" in text
        and f"detector {v2[:12]} now serving (was {v1[:12]})" in text
    )
    assert str(d) in text and "→" not in text  # no link: the directory alone


@pytest.mark.slow
def test_novelty_serve_prints_its_reloads_without_verbose(alias, tmp_path):
    admin = new_token()
    server = ServerProcess(
        alias,
        flag_store=str(tmp_path / "flags"),
        token=new_token(),
        admin_token=admin,
        log_path=tmp_path / "server.log",
        extra_args=["--watch-interval", "0"],
        env={"NOVELTY_CACHE": os.environ.get("NOVELTY_CACHE", str(tmp_path / "cache"))},
    ).start()
    try:
        v2 = _save_variant(alias, alpha=0.5)
        req = urllib.request.Request(
            server.url + "/v1/admin/reload", method="POST", headers={"Authorization": f"Bearer {admin}"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert json.loads(r.read())["switched"] is True
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "serving detector" in log  # the start-up line
    (line,) = [x for x in log.splitlines() if "trigger: POST" in x]
    assert line.startswith("INFO novelty.serve: ") and "trigger: POST /v1/admin/reload" in line
    assert f"detector {v2[:12]} now serving" in line


def test_serve_with_another_runtime_loads_every_detector_with_it(detector_dir, tmp_path, caplog):
    """``novelty serve --runtime openvino``: the detector (and every reload) is loaded with that runtime, which
    /v1/detector names; an unknown runtime is a usage error before anything loads."""
    from novelty.cli import main
    from novelty.runtimes import RUNTIMES

    info = RUNTIMES["openvino"]
    pytest.importorskip(info.module or "openvino")
    app = create_app(
        ServeConfig(
            detector_dir,
            flag_store=str(tmp_path / "flags"),
            api_tokens=[TOKEN],
            watch_interval_s=0,
            runtime="openvino",
        )
    )
    with TestClient(app) as client:
        r = client.get("/v1/detector", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["runtime"] == "openvino"
        from novelty.datasets import textile

        image = Path(textile()["nominal"][100]).read_bytes()
        scored = client.post("/v1/score", content=image, headers={"Authorization": f"Bearer {TOKEN}"})
        assert scored.status_code == 200 and 0.0 <= scored.json()["p_value"] <= 1.0
    plain = create_app(ServeConfig(detector_dir, flag_store=str(tmp_path / "f2"), api_tokens=[TOKEN]))
    with TestClient(plain) as client:
        assert client.get("/v1/detector", headers={"Authorization": f"Bearer {TOKEN}"}).json()["runtime"] == (
            novelty.load(detector_dir).runtime
        )
    assert main(["serve", str(detector_dir), "--runtime", "nope"]) == 2
