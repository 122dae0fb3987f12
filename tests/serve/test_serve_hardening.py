"""The service's answers to hostile input: every refusal is a 4xx with a one-line reason, never a 500.

Out-of-range times, metadata nested thousands deep or holding lone surrogates, a flag whose image file went
missing, too many files in a form, methods a route does not have, bad `novelty serve` options, and a
detector directory caught half-copied by the reload watcher.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import shutil
import time
from pathlib import Path

import pytest
from serve_support import street_jpegs, tiny_detector

import novelty
from novelty.errors import ArtifactError
from novelty.serve import schemas

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from novelty.serve.app import ServeConfig, create_app  # noqa: E402
from novelty.serve.detectors import DetectorHolder, read_version  # noqa: E402

TOKEN = "hardening-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OUT_OF_RANGE = ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00")


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    return tiny_detector(tmp_path_factory.mktemp("hardening") / "tiny")


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return street_jpegs(8)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("flags") / "store"


@pytest.fixture(scope="module")
def client(detector_dir, store_dir):
    app = create_app(
        ServeConfig(detector_dir, flag_store=str(store_dir), api_tokens=[TOKEN], watch_interval_s=0)
    )
    with TestClient(app) as c:
        yield c


def _refused(r, status: int, code: str) -> str:
    """The error answer's message, after checking its status, code and shape (one line)."""
    assert r.status_code == status, r.text
    body = r.json()
    schemas.ErrorOut.model_validate(body)
    assert body["error"]["code"] == code and body["error"]["status"] == status
    message = body["error"]["message"]
    assert message and "\n" not in message
    return str(message)


def _count(client) -> int:
    return int(client.get("/readyz").json()["flags"])


# --- 3: times out of range ------------------------------------------------------------------------------
@pytest.mark.parametrize("when", OUT_OF_RANGE)
def test_out_of_range_times_are_422_on_both_endpoints(client, jpegs, when):
    msg = _refused(client.get("/v1/flags", params={"since": when}, headers=AUTH), 422, "invalid_request")
    assert "since" in msg and "out of range" in msg
    n = _count(client)
    form = client.post(
        "/v1/flag", files={"image": ("a.jpg", jpegs[0])}, data={"captured_at": when}, headers=AUTH
    )
    msg = _refused(form, 422, "invalid_request")
    assert "captured_at" in msg and "out of range" in msg
    raw = client.post("/v1/flag", params={"captured_at": when}, content=jpegs[0], headers=AUTH)
    assert "captured_at" in _refused(raw, 422, "invalid_request")
    assert _count(client) == n


# --- 4: metadata that made the JSON parser or the encoder fail ------------------------------------------
def _nested(depth: int, kind: str = "object") -> str:
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("metadata", "where", "words"),
    [
        (_nested(5000), "form", "nested"),
        ('{"a": ' + _nested(3000, "array") + "}", "query", "nested"),
        (_nested(33), "form", "nested"),
        ('{"note": "\\ud800"}', "form", "surrogate"),
        ('{"\\udfff": 1}', "query", "surrogate"),
        ('{"a": "' + "x" * 70_000 + '"}', "form", "limit"),
    ],
    ids=["object-5000-deep", "array-3000-deep-query", "33-deep", "lone-surrogate", "surrogate-key", "70-kB"],
)
def test_hostile_metadata_is_422_and_stores_nothing(client, jpegs, metadata, where, words):
    n = _count(client)
    if where == "form":
        r = client.post(
            "/v1/flag", files={"image": ("a.jpg", jpegs[1])}, data={"metadata": metadata}, headers=AUTH
        )
    else:
        r = client.post("/v1/flag", params={"metadata": metadata}, content=jpegs[1], headers=AUTH)
    assert words in _refused(r, 422, "invalid_request")
    assert _count(client) == n
    assert client.get("/healthz").status_code == 200


def test_metadata_at_the_depth_limit_is_stored(client, jpegs):
    r = client.post(
        "/v1/flag",
        files={"image": ("a.jpg", jpegs[2])},
        data={"metadata": _nested(32), "source": "depth-32"},
        headers=AUTH,
    )
    assert r.status_code == 201, r.text
    assert r.json()["metadata"] == json.loads(_nested(32))


def test_form_fields_must_be_utf8(client, jpegs):
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'.encode()
        + jpegs[1]
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="source"\r\n\r\n'.encode()
        + b"car-\xff\xfe"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = client.post(
        "/v1/flag",
        content=body,
        headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "UTF-8" in _refused(r, 422, "invalid_request")


# --- 5: a flag whose image file is gone ------------------------------------------------------------------
def test_missing_image_file_is_404_and_a_reflag_restores_it(client, store_dir, jpegs):
    r = client.post("/v1/flag", params={"source": "gone"}, content=jpegs[3], headers=AUTH)
    assert r.status_code == 201, r.text
    flag = r.json()
    path = store_dir / "images" / flag["sha256"][:2] / flag["sha256"]
    path.unlink()
    msg = _refused(client.get(f"/v1/flags/{flag['id']}/image", headers=AUTH), 404, "image_missing")
    assert flag["id"] in msg and "missing" in msg
    again = client.post("/v1/flag", params={"source": "gone"}, content=jpegs[3], headers=AUTH)
    assert again.status_code == 200 and again.json()["id"] == flag["id"] and again.json()["created"] is False
    assert path.read_bytes() == jpegs[3]
    img = client.get(f"/v1/flags/{flag['id']}/image", headers=AUTH)
    assert img.status_code == 200 and img.content == jpegs[3]
    assert not list(path.parent.glob(".*tmp*"))  # written atomically: no temporary file left behind


# --- 13: too many files in a single-image form -----------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("route", ["/v1/flag", "/v1/score"])
def test_too_many_files_names_the_limit_of_one(client, jpegs, route, n):
    files = [("image", (f"{i}.jpg", jpegs[i])) for i in range(n)]
    msg = _refused(client.post(route, files=files, headers=AUTH), 413, "too_large")
    assert "the limit is 1" in msg


def test_an_image_part_without_a_filename_is_an_image(client, jpegs):
    """RFC 7578 makes the filename optional (``curl -F 'image=<a.jpg'`` sends none): the bytes arrive intact."""
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
        + jpegs[4]
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = client.post(
        "/v1/score",
        content=body,
        headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 200, r.text
    raw = client.post("/v1/score", content=jpegs[4], headers=AUTH).json()
    assert r.json()["image"]["sha256"] == raw["image"]["sha256"]


# --- 14: what schemathesis found (the bounded run itself is tests/serve/test_schemathesis.py, slow) --------------
def test_405_names_the_allowed_methods(client):
    for method, path, allowed in (
        ("GET", "/v1/score", "POST"),
        ("DELETE", "/v1/flags", "GET"),
        ("TRACE", "/healthz", "GET"),
    ):
        r = client.request(method, path, headers=AUTH)
        _refused(r, 405, "method_not_allowed")
        assert allowed in r.headers["Allow"]


def test_input_the_spec_allows_is_accepted(client, jpegs):
    assert client.get("/v1/flags", params={"after": ""}, headers=AUTH).status_code == 200
    assert client.get("/v1/flags", params={"since": ""}, headers=AUTH).status_code == 200
    msg = _refused(client.get("/v1/flags", params={"after": "0" * 32}, headers=AUTH), 404, "not_found")
    assert "after" in msg
    _refused(client.get("/v1/flags", params={"limit": 0}, headers=AUTH), 422, "invalid_request")
    files = [("images", (None, jpegs[0], "image/jpeg")), ("images", ("b.jpg", jpegs[1]))]
    r = client.post("/v1/score:batch", files=files, headers=AUTH)
    assert r.status_code == 200 and [x["index"] for x in r.json()["results"]] == [0, 1]


# --- 7: `novelty serve` options are checked before anything is loaded -------------------------------------
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--port", "99999"),
        ("--port", "-1"),
        ("--decode-threads", "0"),
        ("--max-batch", "0"),
        ("--max-queue", "0"),
        ("--max-wait-ms", "-5"),
        ("--max-body-mb", "nan"),
        ("--max-body-mb", "-1"),
        ("--torch-threads", "-3"),
        ("--timeout", "0"),
        ("--body-timeout", "inf"),
        ("--max-connections", "0"),
        ("--max-pixels", "0"),
        ("--watch-interval", "-1"),
        ("--port", "80x"),
        ("--device", "gpu"),
    ],
)
def test_bad_serve_options_exit_2_with_one_line_before_loading(tmp_path, capsys, option, value):
    from novelty.cli import main

    missing = tmp_path / "no-detector-here"
    rc = main(["serve", str(missing), "--no-auth", "--flag-store", str(tmp_path / "f"), f"{option}={value}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("novelty serve: error: argument " + option), err
    assert "Traceback" not in err and "no detector" not in err  # nothing was loaded
    assert not (tmp_path / "f").exists()  # nor the flag store opened


def test_serve_help_names_the_ranges(capsys):
    from novelty.cli import main

    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "1 to 65535" in out and "≥ 1" in out and "0 to 60000" in out


# --- reload: a directory caught half-copied is loaded once complete ----------------------------------------
class _FakeDetector:
    def __init__(self, directory: Path):
        self.alpha = json.loads((directory / "manifest.json").read_text())["alpha"]


def _fake_loader(calls: list[str]):
    def load(directory: Path) -> novelty.NoveltyDetector:
        calls.append(str(read_version(directory)))
        if not (directory / "index.faiss").exists():
            raise ArtifactError(f"{directory}: index.faiss is missing (the manifest lists it)")
        return _FakeDetector(directory)  # type: ignore[return-value]

    return load


def _write_version(d: Path, version: str, alpha: float) -> None:
    (d / "manifest.json").write_text(json.dumps({"alpha": alpha}))
    (d / "MANIFEST.sha256").write_text(f"{version}  manifest.json\n")


def test_half_copied_detector_is_retried_until_it_loads(tmp_path, caplog):
    d = tmp_path / "det"
    d.mkdir()
    (d / "index.faiss").write_bytes(b"index")
    v1, v2 = "1" * 64, "2" * 64
    _write_version(d, v1, 0.05)
    calls: list[str] = []
    holder = DetectorHolder(d, loader=_fake_loader(calls))
    assert holder.load_blocking().version == v1

    async def scenario() -> None:
        watcher = asyncio.create_task(holder.watch(0.02))
        try:
            # `cp -r` of a new detector, caught half way: the new manifest is there, the index not yet
            (d / "index.faiss").unlink()
            _write_version(d, v2, 0.3)
            deadline = time.monotonic() + 10
            while calls.count(v2) < 2 and time.monotonic() < deadline:  # failed, and failed again
                await asyncio.sleep(0.01)
            assert calls.count(v2) >= 2
            assert holder.current is not None and holder.current.version == v1  # still serving
            (d / "index.faiss").write_bytes(b"index")  # the copy completes; MANIFEST.sha256 does not change
            deadline = time.monotonic() + 10
            while holder.current.version != v2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            watcher.cancel()

    with caplog.at_level(logging.INFO, logger="novelty.serve"):
        asyncio.run(scenario())
    assert holder.current is not None and holder.current.version == v2
    assert holder.current.detector.alpha == 0.3
    assert holder.describe()["last_error"] is None
    text = caplog.text
    assert "trying again in" in text and "retry 1 of" in text and f"detector {v2[:12]} now serving" in text


def test_retries_are_bounded_and_back_off(tmp_path, caplog, monkeypatch):
    from novelty.serve import detectors

    monkeypatch.setattr(detectors, "RETRIES", 3)
    d = tmp_path / "det"
    d.mkdir()
    (d / "index.faiss").write_bytes(b"index")
    v1, v2 = "1" * 64, "2" * 64
    _write_version(d, v1, 0.05)
    calls: list[str] = []
    holder = DetectorHolder(d, loader=_fake_loader(calls))
    holder.load_blocking()
    (d / "index.faiss").unlink()
    _write_version(d, v2, 0.3)
    times: list[float] = []

    async def scenario() -> None:
        watcher = asyncio.create_task(holder.watch(0.02))
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.5:  # 0.02 + 0.04 + 0.08 s of backoff, then nothing more
                n = calls.count(v2)
                await asyncio.sleep(0.002)
                if calls.count(v2) > n:
                    times.append(time.monotonic())
        finally:
            watcher.cancel()

    with caplog.at_level(logging.ERROR, logger="novelty.serve"):
        asyncio.run(scenario())
    assert calls.count(v2) == 1 + 3  # the first try and three retries
    gaps = [b - a for a, b in itertools.pairwise(times)]
    waits = [holder.backoff_s(k) for k in (1, 2, 3)]
    assert waits == [0.02, 0.04, 0.08]  # the watch interval, doubled after each failure
    assert len(gaps) == 3 and all(g >= w * 0.9 for g, w in zip(gaps, waits, strict=True)), (gaps, waits)
    assert "not trying this version again until MANIFEST.sha256 changes" in caplog.text
    # a new version is tried at once
    _write_version(d, "3" * 64, 0.2)
    (d / "index.faiss").write_bytes(b"index")

    async def new_version() -> None:
        watcher = asyncio.create_task(holder.watch(0.01))
        try:
            deadline = time.monotonic() + 5
            while holder.current.version != "3" * 64 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            watcher.cancel()

    asyncio.run(new_version())
    assert holder.current.version == "3" * 64


@pytest.mark.slow
def test_half_copied_real_detector_is_loaded_by_the_service_once_complete(detector_dir, tmp_path, jpegs):
    """The same with the service and a real detector: a `cp -r` caught half way, completed later."""
    d = tmp_path / "det"
    shutil.copytree(detector_dir, d)
    new = tmp_path / "new"
    shutil.copytree(detector_dir, new)
    det = novelty.load(new)
    det.alpha = 0.3
    det.save(new)
    v2 = read_version(new)
    app = create_app(
        ServeConfig(d, flag_store=str(tmp_path / "flags"), api_tokens=[TOKEN], watch_interval_s=0.05)
    )
    with TestClient(app) as c:
        v1 = c.get("/healthz").json()["detector_version"]
        assert v1 != v2
        held = next(p for p in sorted(new.iterdir()) if p.suffix in (".faiss", ".safetensors"))
        (d / held.name).unlink()  # the copy has not reached this file yet
        for p in new.iterdir():
            if p.name != held.name:
                shutil.copy2(p, d / p.name)
        deadline = time.monotonic() + 30
        while app.state.service.holder.outcomes["failed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.service.holder.outcomes["failed"] >= 1
        assert c.get("/healthz").json()["detector_version"] == v1  # still serving the old one
        shutil.copy2(held, d / held.name)  # the copy completes
        deadline = time.monotonic() + 30
        while c.get("/healthz").json()["detector_version"] != v2 and time.monotonic() < deadline:
            time.sleep(0.05)
        body = c.post("/v1/score", content=jpegs[0], headers=AUTH).json()
        assert body["detector_version"] == v2 and body["alpha"] == 0.3
