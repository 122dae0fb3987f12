"""The service in process (FastAPI's TestClient) on a small real detector: fast tests of every endpoint,
every refusal, the flag store behind it, metrics, hot reload and the micro-batcher."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from serve_support import REPO, bomb_png, street_jpegs, textile_images, tiny_detector, truncated_jpeg

import novelty
from novelty.serve import schemas

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from novelty.serve.app import ServeConfig, create_app  # noqa: E402
from novelty.serve.batcher import MicroBatcher  # noqa: E402
from novelty.serve.detectors import Loaded, read_version  # noqa: E402

TOKEN = "score-token-0123456789abcdef"
TOKEN2 = "second-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    return tiny_detector(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def detector(detector_dir) -> novelty.NoveltyDetector:
    return novelty.load(detector_dir)


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return street_jpegs(6)


def _app(detector_dir: Path, store: Path, **kw):
    cfg = ServeConfig(
        detector_dir,
        flag_store=str(store),
        api_tokens=[TOKEN, TOKEN2],
        admin_tokens=[ADMIN],
        watch_interval_s=kw.pop("watch_interval_s", 0),
        **kw,
    )
    return create_app(cfg)


@pytest.fixture(scope="module")
def client(detector_dir, tmp_path_factory):
    app = _app(detector_dir, tmp_path_factory.mktemp("flags") / "store")
    with TestClient(app) as c:
        yield c


def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    schemas.ErrorOut.model_validate(body)
    assert body["error"]["code"] == code and body["error"]["status"] == status
    return body


# --- scoring ---------------------------------------------------------------------------------------------
def test_score_equals_the_library_in_process(client, detector, detector_dir, jpegs):
    version = read_version(detector_dir)
    for data in jpegs[:3]:
        r = client.post("/v1/score", content=data, headers={**AUTH, "Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
        body = r.json()
        schemas.VerdictOut.model_validate(body)
        assert body["detector_version"] == version == r.headers["X-Novelty-Detector-Version"]
        v = detector.score(data)
        assert body["is_novel"] == v.is_novel and body["prediction"] == v.prediction
        assert body["trusted"] == v.trusted
        np.testing.assert_allclose(body["score"], v.score, rtol=1e-4, atol=1e-6)
        assert body["p_value"] == pytest.approx(v.p_value, abs=1e-9)
        assert body["probability"] == pytest.approx(v.probability, abs=1e-4)
        assert [n["id"] for n in body["neighbors"]] == [n.id for n in v.neighbors]
        np.testing.assert_allclose(
            [n["distance"] for n in body["neighbors"]], [n.distance for n in v.neighbors], atol=1e-4
        )
        assert body["image"]["width"] == 320 and body["image"]["height"] == 240
        assert body["alpha"] == detector.alpha


def test_adaptive_threads_score_as_the_library_does(detector_dir, detector, tmp_path, jpegs):
    with TestClient(_app(detector_dir, tmp_path / "store", adaptive_threads=True)) as c:
        r = c.post("/v1/score", content=jpegs[0], headers={**AUTH, "Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
        served = c.app.state.service.holder.current.detector
        assert served.embedder.threads == "auto" and served.embedder.threads_policy() is not None
    np.testing.assert_allclose(r.json()["score"], detector.score(jpegs[0]).score, rtol=1e-4, atol=1e-6)


def test_the_batch_wait_is_the_runtimes_unless_given(detector_dir, tmp_path, monkeypatch):
    """``--max-wait-ms`` defaults to the wait measured best for the runtime that scores (a fast forward pass
    wants a longer wait to fill its batches); a value given is kept whatever the runtime."""
    import dataclasses

    import novelty.serve.service as service_module
    from novelty.runtimes import runtime_info

    with TestClient(_app(detector_dir, tmp_path / "a")) as c:
        svc = c.app.state.service
        assert svc.holder.current.detector.runtime == "torch"
        assert svc.batcher.max_wait_s == pytest.approx(runtime_info("torch").serve_wait_ms / 1000)
    fast = dataclasses.replace(runtime_info("torch"), serve_wait_ms=20.0)
    monkeypatch.setattr(service_module, "runtime_info", lambda name: fast)
    with TestClient(_app(detector_dir, tmp_path / "b")) as c:
        assert c.app.state.service.batcher.describe()["max_wait_ms"] == pytest.approx(20.0)
    with TestClient(_app(detector_dir, tmp_path / "c", max_wait_ms=2.0)) as c:
        assert c.app.state.service.batcher.describe()["max_wait_ms"] == pytest.approx(2.0)


def test_multipart_and_raw_bodies_give_the_same_verdict(client, jpegs):
    raw = client.post("/v1/score", content=jpegs[0], headers=AUTH).json()
    form = client.post("/v1/score", files={"image": ("f.jpg", jpegs[0], "image/jpeg")}, headers=AUTH).json()
    assert form["score"] == pytest.approx(raw["score"], rel=1e-5)
    assert form["image"]["sha256"] == raw["image"]["sha256"]


def test_batch_keeps_order_and_reports_each_bad_image(client, jpegs):
    files = [
        ("images", ("a.jpg", jpegs[0])),
        ("images", ("bad.txt", b"this is text, not an image")),
        ("images", ("b.jpg", jpegs[1])),
        ("images", ("cut.jpg", truncated_jpeg(jpegs[2]))),
        ("images", ("c.jpg", jpegs[2])),
    ]
    r = client.post("/v1/score:batch", files=files, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    schemas.BatchOut.model_validate(body)
    results = body["results"]
    assert [x["index"] for x in results] == [0, 1, 2, 3, 4]
    assert results[1]["error"]["code"] == "not_an_image"
    assert results[3]["error"]["code"] == "truncated"
    singles = [client.post("/v1/score", content=jpegs[i], headers=AUTH).json() for i in (0, 1, 2)]
    for res, single in zip((results[0], results[2], results[4]), singles, strict=True):
        schemas.VerdictOut.model_validate(res)
        assert res["image"]["sha256"] == single["image"]["sha256"]
        assert res["score"] == pytest.approx(single["score"], rel=1e-4)


def test_batch_limits(client, jpegs):
    _error(client.post("/v1/score:batch", content=jpegs[0], headers=AUTH), 415, "unsupported_media_type")
    _error(client.post("/v1/score:batch", files={"x": (None, "text")}, headers=AUTH), 422, "invalid_request")
    for n in (65, 66, 500):  # one over the limit, and far over it (the form parser's own limit): both 413
        many = [("images", (f"{i}.jpg", jpegs[0])) for i in range(n)]
        _error(client.post("/v1/score:batch", files=many, headers=AUTH), 413, "too_large")


# --- refusals --------------------------------------------------------------------------------------------
def test_tokens(client, jpegs):
    _error(client.post("/v1/score", content=jpegs[0]), 401, "unauthorized")
    r = client.post("/v1/score", content=jpegs[0], headers={"Authorization": "Bearer wrong-token-0123456789"})
    body = _error(r, 401, "unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "wrong-token" not in json.dumps(body)
    _error(
        client.post("/v1/score", content=jpegs[0], headers={"Authorization": f"Basic {TOKEN}"}),
        401,
        "unauthorized",
    )
    assert (
        client.post("/v1/score", content=jpegs[0], headers={"Authorization": f"Bearer {TOKEN2}"}).status_code
        == 200
    )
    _error(client.get("/v1/flags"), 401, "unauthorized")
    _error(
        client.post("/v1/admin/reload", headers=AUTH), 403, "forbidden"
    )  # a scoring token is not an admin token
    # the open endpoints
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code"),
    [
        (b"", "application/octet-stream", 422, "empty"),
        (b"just some text, certainly no image", "application/octet-stream", 422, "not_an_image"),
        (b"just some text", "text/plain", 415, "unsupported_media_type"),
        (b'{"image": "abc"}', "application/json", 415, "unsupported_media_type"),
        ("bomb", "image/png", 422, "too_large"),
        ("truncated", "image/jpeg", 422, "truncated"),
    ],
)
def test_bad_bodies_get_their_status_and_the_service_goes_on(client, jpegs, body, ctype, status, code):
    if body == "bomb":
        body = bomb_png()
    elif body == "truncated":
        body = truncated_jpeg(jpegs[3])
    r = client.post("/v1/score", content=body, headers={**AUTH, "Content-Type": ctype})
    err = _error(r, status, code)
    assert err["detector_version"]
    assert client.post("/v1/score", content=jpegs[0], headers=AUTH).status_code == 200


def test_body_over_the_limit_is_refused_before_it_is_read(client):
    big = b"\xff\xd8" + b"\x00" * (50 * 1024 * 1024)
    r = client.post("/v1/score", content=big, headers={**AUTH, "Content-Type": "image/jpeg"})
    _error(r, 413, "too_large")
    assert "limit" in r.json()["error"]["message"]


def test_streamed_body_is_cut_off_at_the_limit(detector_dir, tmp_path):
    """No Content-Length (chunked upload): the guard counts while the body streams in and stops reading
    as soon as it passes the limit — the rest of the stream is never pulled."""
    app = _app(detector_dir, tmp_path / "flags", max_body_bytes=1_000_000)
    chunk = b"\x00" * 65536
    pulled = 0
    sent: list[dict] = []

    async def drive() -> None:
        nonlocal pulled

        async def receive() -> dict:
            nonlocal pulled
            pulled += 1
            return {"type": "http.request", "body": chunk, "more_body": pulled < 800}  # 50 MB in all

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/score",
            "raw_path": b"/v1/score",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"authorization", f"Bearer {TOKEN}".encode()), (b"content-type", b"image/jpeg")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        await app(scope, receive, send)

    with TestClient(app) as c:  # starts the service (lifespan)
        c.portal.call(drive)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert body["error"]["code"] == "too_large"
    assert pulled <= 1_000_000 // len(chunk) + 2  # stopped right after the limit, not at 800 chunks


def test_per_request_timeout(detector_dir, tmp_path, jpegs):
    app = _app(detector_dir, tmp_path / "flags", request_timeout_s=1e-4)
    with TestClient(app) as c:
        _error(c.post("/v1/score", content=jpegs[0], headers=AUTH), 504, "timeout")
        assert c.get("/readyz").status_code == 200


def test_unknown_route_and_method(client):
    _error(client.get("/v1/nothing", headers=AUTH), 404, "not_found")
    _error(client.get("/v1/score", headers=AUTH), 405, "method_not_allowed")


def test_no_token_configured_refuses_to_start(detector_dir, tmp_path):
    with pytest.raises(novelty.errors.InvalidInputError, match="no API token"):
        ServeConfig(detector_dir, flag_store=str(tmp_path))
    open_app = create_app(
        ServeConfig(detector_dir, flag_store=str(tmp_path / "f"), auth=False, watch_interval_s=0)
    )
    with TestClient(open_app) as c:
        assert c.post("/v1/score", content=street_jpegs(1)[0]).status_code == 200


def test_tokens_and_images_never_reach_the_log(detector_dir, tmp_path, jpegs, caplog):
    app = _app(detector_dir, tmp_path / "flags")
    with caplog.at_level(logging.DEBUG), TestClient(app) as c:
        c.post("/v1/score", content=jpegs[0], headers=AUTH)
        c.post("/v1/score", content=b"text", headers={"Authorization": "Bearer leaked-wrong-token-12345"})
        c.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
        c.post("/v1/flag", files={"image": ("x.jpg", jpegs[1])}, data={"source": "car"}, headers=AUTH)
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (TOKEN, ADMIN, "leaked-wrong-token"):
        assert secret not in text
    assert jpegs[0][:64].decode("latin-1") not in text


# --- flags -----------------------------------------------------------------------------------------------
def test_flag_is_stored_once_and_listed(client, jpegs):
    fields = {
        "source": "car-17",
        "prediction": "wet",
        "report": "wipers in a tunnel",
        "captured_at": "2026-11-28T10:00:00Z",
        "metadata": json.dumps({"speed": 40}),
    }
    r1 = client.post("/v1/flag", files={"image": ("f.jpg", jpegs[4])}, data=fields, headers=AUTH)
    assert r1.status_code == 201, r1.text
    rec = r1.json()
    schemas.FlagOut.model_validate(rec)
    assert rec["created"] is True and rec["source"] == "car-17" and rec["metadata"] == {"speed": 40}
    assert rec["captured_at"] == "2026-11-28T10:00:00Z" and rec["detector_version"]
    r2 = client.post("/v1/flag", files={"image": ("f.jpg", jpegs[4])}, data=fields, headers=AUTH)
    assert r2.status_code == 200 and r2.json()["id"] == rec["id"] and r2.json()["created"] is False
    # raw body + query parameters, another source: another flag
    r3 = client.post("/v1/flag?source=car-18&prediction=dry", content=jpegs[4], headers=AUTH)
    assert r3.status_code == 201 and r3.json()["id"] != rec["id"] and r3.json()["prediction"] == "dry"
    got = client.get(f"/v1/flags/{rec['id']}", headers=AUTH).json()
    assert got["id"] == rec["id"] and "created" not in got
    img = client.get(f"/v1/flags/{rec['id']}/image", headers=AUTH)
    assert img.content == jpegs[4] and img.headers["X-Content-SHA256"] == rec["sha256"]
    listed = client.get("/v1/flags", params={"since": rec["received_at"]}, headers=AUTH).json()
    schemas.FlagList.model_validate(listed)
    ids = [f["id"] for f in listed["flags"]]
    assert rec["id"] in ids and r3.json()["id"] in ids
    _error(client.get("/v1/flags/nope", headers=AUTH), 404, "not_found")


def test_flag_pages(client, jpegs):
    for i in range(5):
        assert client.post(f"/v1/flag?source=page-{i}", content=jpegs[5], headers=AUTH).status_code == 201
    got, after = [], None
    for _ in range(20):
        params = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/flags", params=params, headers=AUTH).json()
        got += page["flags"]
        after = page["next_after"]
        if after is None:
            break
    all_at_once = client.get("/v1/flags", params={"limit": 1000}, headers=AUTH).json()["flags"]
    assert [f["id"] for f in got] == [f["id"] for f in all_at_once]
    assert len({f["id"] for f in got}) == len(got)


def test_bad_flags_store_nothing(client, jpegs):
    n = client.get("/readyz").json()["flags"]
    _error(client.post("/v1/flag", content=b"not an image at all", headers=AUTH), 422, "not_an_image")
    _error(client.post("/v1/flag", content=bomb_png(), headers=AUTH), 422, "too_large")
    bad_meta = {"metadata": "{not json"}
    _error(
        client.post("/v1/flag", files={"image": ("a.jpg", jpegs[0])}, data=bad_meta, headers=AUTH),
        422,
        "invalid_request",
    )
    long_source = {"source": "s" * 1000}
    _error(
        client.post("/v1/flag", files={"image": ("a.jpg", jpegs[0])}, data=long_source, headers=AUTH),
        422,
        "invalid_request",
    )
    _error(
        client.post(
            "/v1/flag", files={"image": ("a.jpg", jpegs[0])}, data={"captured_at": "soon"}, headers=AUTH
        ),
        422,
        "invalid_request",
    )
    _error(client.get("/v1/flags", params={"since": "last week"}, headers=AUTH), 422, "invalid_request")
    _error(client.get("/v1/flags", params={"limit": "many"}, headers=AUTH), 422, "invalid_request")
    assert client.get("/readyz").json()["flags"] == n


# --- metrics ---------------------------------------------------------------------------------------------
# the collectors prometheus_client adds next to the service's own novelty_* series (process, GC, platform)
_RUNTIME_PREFIXES = ("process_", "python_")


def _metrics(client) -> dict[str, float]:
    """Every sample of ``/metrics``, parsed by prometheus_client's own parser: ``name{label="value",...}``
    (labels sorted by name) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    out = {}
    for family in text_string_to_metric_families(r.text):
        assert family.name.startswith(("novelty_", *_RUNTIME_PREFIXES)), family.name
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


def test_metrics_count_what_happened(detector_dir, tmp_path, jpegs):
    app = _app(detector_dir, tmp_path / "flags")
    with TestClient(app) as c:
        for _ in range(3):
            c.post("/v1/score", content=jpegs[0], headers=AUTH)
        c.post("/v1/score", content=jpegs[0])
        c.post("/v1/flag?source=m", content=jpegs[1], headers=AUTH)
        c.post("/v1/flag?source=m", content=jpegs[1], headers=AUTH)
        m = _metrics(c)
    assert m['novelty_requests_total{route="/v1/score",status="200"}'] == 3
    assert m['novelty_requests_total{route="/v1/score",status="401"}'] == 1
    assert m['novelty_request_duration_seconds_count{route="/v1/score"}'] == 4
    assert m['novelty_request_duration_seconds_bucket{le="+Inf",route="/v1/score"}'] == 4
    assert m["novelty_images_scored_total"] == 3
    assert m["novelty_flags_stored_total"] == 1 and m["novelty_flags_duplicate_total"] == 1
    assert 0.0 <= m["novelty_novel_rate"] <= 1.0
    assert m["novelty_images_novel_total"] == 3 * m["novelty_novel_rate"]
    assert m["novelty_batch_size_count"] >= 1
    assert m["novelty_queue_images"] == 0
    version = read_version(detector_dir)
    assert m[f'novelty_detector_info{{version="{version}"}}'] == 1
    # the process, GC and platform collectors are on the app's registry too
    assert any(k.startswith("python_info{") for k in m)
    if sys.implementation.name == "cpython":
        assert any(k.startswith("python_gc_objects_collected_total") for k in m)
    if Path("/proc/self/stat").exists():
        assert m["process_resident_memory_bytes"] > 0


def test_each_app_keeps_its_own_metrics_registry(detector_dir, tmp_path, jpegs):
    from prometheus_client import REGISTRY

    a, b = _app(detector_dir, tmp_path / "a"), _app(detector_dir, tmp_path / "b")
    with TestClient(a) as ca, TestClient(b) as cb:
        for _ in range(2):
            ca.post("/v1/score", content=jpegs[0], headers=AUTH)
        cb.post("/v1/score", content=jpegs[0], headers=AUTH)
        ma, mb = _metrics(ca), _metrics(cb)
    assert ma["novelty_images_scored_total"] == 2 and mb["novelty_images_scored_total"] == 1
    # nothing lands on prometheus_client's process-wide default registry
    assert REGISTRY.get_sample_value("novelty_images_scored_total") is None


# --- hot reload ------------------------------------------------------------------------------------------
def _save_variant(detector_dir: Path, alpha: float) -> str:
    det = novelty.load(detector_dir)
    det.alpha = alpha
    det.save(detector_dir)
    return str(read_version(detector_dir))


@pytest.mark.slow
def test_admin_reload_switches_and_reports_the_version(detector_dir, tmp_path, jpegs):
    d = tmp_path / "det"
    shutil.copytree(detector_dir, d)
    app = _app(d, tmp_path / "flags")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(app) as c:
        v1 = c.post("/v1/score", content=jpegs[0], headers=AUTH).json()["detector_version"]
        r = c.post("/v1/admin/reload", headers=admin).json()
        assert r == {"detector_version": v1, "previous": v1, "switched": False}
        v2 = _save_variant(d, alpha=0.5)
        r = c.post("/v1/admin/reload", headers=admin)
        assert r.status_code == 200 and r.json() == {"detector_version": v2, "previous": v1, "switched": True}
        body = c.post("/v1/score", content=jpegs[0], headers=AUTH).json()
        assert body["detector_version"] == v2 and body["alpha"] == 0.5
        # a broken artifact: the reload fails, the old detector keeps serving
        (d / "train_ids.json").write_text("{}")
        _error(c.post("/v1/admin/reload", headers=admin), 500, "reload_failed")
        assert c.post("/v1/score", content=jpegs[0], headers=AUTH).json()["detector_version"] == v2
        m = _metrics(c)
    assert m['novelty_detector_reloads_total{result="switched"}'] == 1
    assert m['novelty_detector_reloads_total{result="unchanged"}'] == 1
    assert m['novelty_detector_reloads_total{result="failed"}'] == 1


@pytest.mark.slow
def test_changed_directory_is_picked_up_by_the_watcher(detector_dir, tmp_path, jpegs):
    d = tmp_path / "det"
    shutil.copytree(detector_dir, d)
    app = _app(d, tmp_path / "flags", watch_interval_s=0.1)
    with TestClient(app) as c:
        v1 = c.get("/readyz").json()["detector_version"]
        v2 = _save_variant(d, alpha=0.2)
        assert v2 != v1

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and c.get("/healthz").json()["detector_version"] != v2:
            time.sleep(0.1)
        body = c.post("/v1/score", content=jpegs[0], headers=AUTH).json()
        assert body["detector_version"] == v2 and body["alpha"] == 0.2


@pytest.mark.slow
def test_requests_in_flight_finish_on_the_detector_they_began_with(detector_dir, tmp_path, jpegs):
    """Threads score while the detector is swapped twice: every answer is 200 and names the version that
    made it, and after the last swap only the new one answers."""
    d = tmp_path / "det"
    shutil.copytree(detector_dir, d)
    app = _app(d, tmp_path / "flags")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    answers: list[tuple[int, str, float]] = []
    stop = threading.Event()

    with TestClient(app) as c:
        v1 = c.get("/readyz").json()["detector_version"]

        def hammer() -> None:
            for _ in range(200):
                if stop.is_set():
                    return
                r = c.post("/v1/score", content=jpegs[0], headers=AUTH)
                answers.append(
                    (r.status_code, r.json().get("detector_version", ""), r.json().get("alpha", -1))
                )

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        v2 = _save_variant(d, alpha=0.3)
        assert c.post("/v1/admin/reload", headers=admin).json()["switched"]
        v3 = _save_variant(d, alpha=0.4)
        assert c.post("/v1/admin/reload", headers=admin).json()["switched"]
        after = c.post("/v1/score", content=jpegs[0], headers=AUTH).json()
        stop.set()
        for t in threads:
            t.join(120)
    assert answers and all(status == 200 for status, _, _ in answers)
    alpha_of = {v1: 0.05, v2: 0.3, v3: 0.4}
    assert all(v in alpha_of and alpha == pytest.approx(alpha_of[v]) for _, v, alpha in answers)
    assert after["detector_version"] == v3


# --- the micro-batcher -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_concurrent_images_share_forward_passes(detector, detector_dir):
    """16 images announced while they decode are scored in fewer passes than images, with the verdicts of
    one-by-one scoring; a lone image does not wait for company."""
    loaded = Loaded(detector, "v")
    emb = detector.embedder
    paths = textile_images("local", 16)
    tensors = [emb.transform(novelty.load_image(p, min_size=emb.min_size)) for p in paths]
    sizes: list[int] = []
    batcher = MicroBatcher(max_batch=8, max_wait_s=1.0, on_batch=lambda n, dt: sizes.append(n))
    batcher.start()
    try:

        async def all_at_once():
            for _ in tensors:
                batcher.expect()
            return await asyncio.gather(
                *(
                    batcher.submit(loaded, t, str(p), expected=True)
                    for t, p in zip(tensors, paths, strict=True)
                )
            )

        verdicts = asyncio.run(all_at_once())
        assert sizes == [8, 8]
        t0 = time.monotonic()
        asyncio.run(batcher.submit(loaded, tensors[0]))
        assert time.monotonic() - t0 < 0.9  # max_wait_s is 1 s: nobody else was on the way
        assert sizes == [8, 8, 1]
    finally:
        batcher.stop()
    for v, p in zip(verdicts, paths, strict=True):
        ref = detector.score(p)
        assert v.is_novel == ref.is_novel and v.prediction == ref.prediction
        # a batch of 8 and a batch of 1 run different float32 kernels: scores agree to ~1e-5 absolute
        assert v.score == pytest.approx(ref.score, rel=1e-4, abs=2e-5)


def test_batcher_answers_every_request_when_the_model_fails(detector):
    class Broken:
        embedder = detector.embedder

        def score_embeddings(self, *a, **k):
            raise RuntimeError("model failure")

    batcher = MicroBatcher(max_batch=4, max_wait_s=0.01)
    batcher.start()
    t = torch.zeros(tuple(detector.embedder.data_config["input_size"]))
    try:

        async def run():
            return await asyncio.gather(
                *(batcher.submit(Loaded(Broken(), "v"), t) for _ in range(3)), return_exceptions=True
            )  # type: ignore[arg-type]

        results = asyncio.run(run())
    finally:
        batcher.stop()
    assert all(isinstance(r, RuntimeError) for r in results)


# --- the OpenAPI spec and the light imports --------------------------------------------------------------
def test_committed_openapi_spec_is_current(client):
    committed = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert committed == client.app.openapi(), "docs/openapi.json is stale: run `make openapi`"
    paths = committed["paths"]
    for p in (
        "/v1/score",
        "/v1/score:batch",
        "/v1/flag",
        "/v1/flags",
        "/v1/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert p in paths
    assert "image/*" in paths["/v1/score"]["post"]["requestBody"]["content"]


@pytest.mark.slow
def test_import_novelty_and_the_client_need_no_web_framework():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn', 'httpx', 'starlette', 'psycopg'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import novelty\n"
        "c = novelty.Client('http://127.0.0.1:9', token='t', retries=0)\n"
        "from novelty.serve.client import ServiceCallError\n"
        "try:\n"
        "    c.score(b'x')\n"
        "except ServiceCallError as e:\n"
        "    assert e.code == 'unreachable', e\n"
        "import novelty.cli\n"
        "novelty.cli._build_parser()\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.slow
def test_novelty_serve_without_token_exits_2(detector_dir, tmp_path):
    env_code = "import sys; from novelty.cli import main; sys.exit(main())"
    r = subprocess.run(
        [sys.executable, "-c", env_code, "serve", str(detector_dir), "--flag-store", str(tmp_path / "f")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={k: v for k, v in __import__("os").environ.items() if k not in ("NOVELTY_API_TOKENS",)},
    )
    assert r.returncode == 2 and "no API token" in r.stderr


@pytest.mark.slow
def test_novelty_serve_with_a_broken_detector_exits_1(tmp_path):
    """A detector that cannot be loaded stops the service at start-up with a message, never serves."""
    (tmp_path / "det").mkdir()
    code = "import sys; from novelty.cli import main; sys.exit(main())"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "serve",
            str(tmp_path / "det"),
            "--no-auth",
            "--flag-store",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    assert "novelty serve: error:" in r.stderr and "manifest.json is missing" in r.stderr
    assert "Traceback" not in r.stderr
