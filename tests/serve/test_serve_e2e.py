"""The real service: ``novelty serve`` in a subprocess (uvicorn on 127.0.0.1), the shipped windshield
detector, street frames, ``novelty.Client`` — verdicts against the library, bad requests on the wire, retries
across a ``kill -9``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
import urllib.request

import pytest
from serve_support import WINDSHIELD, ServerProcess, bomb_png, new_token, street_jpegs, truncated_jpeg

import novelty
from novelty.serve.client import ServiceCallError

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def token() -> str:
    return new_token()


@pytest.fixture(scope="module")
def server(tmp_path_factory, token):
    tmp = tmp_path_factory.mktemp("e2e")
    with ServerProcess(
        WINDSHIELD,
        flag_store=str(tmp / "flags"),
        token=token,
        log_path=tmp / "server.log",
        extra_args=["--body-timeout", "1.5", "--watch-interval", "0"],
    ) as srv:
        yield srv
    log = (tmp / "server.log").read_text(errors="replace")
    assert token not in log  # tokens never reach the log


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return street_jpegs(12, start=100)


def test_service_verdicts_equal_the_library_in_process(server, token, frames):
    det = novelty.load(WINDSHIELD)
    client = novelty.Client(server.url, token)
    version = (WINDSHIELD / "MANIFEST.sha256").read_text().split()[0]
    served = [client.score(f) for f in frames[:6]] + client.score_batch(frames[6:])
    for frame, v in zip(frames, served, strict=True):
        ref = det.score(frame)
        assert v.detector_version == version and v.sha256 == hashlib.sha256(frame).hexdigest()
        assert v.error is None
        assert v.is_novel == ref.is_novel
        assert v.prediction == ref.prediction and v.trusted == ref.trusted
        assert v.p_value == pytest.approx(ref.p_value, abs=1e-9)
        assert v.score == pytest.approx(ref.score, rel=1e-4, abs=1e-6)
        for name in ref.scores:
            assert v.scores[name] == pytest.approx(ref.scores[name], rel=1e-4, abs=1e-6)
            assert v.p_values[name] == pytest.approx(ref.p_values[name], abs=1e-9)
        assert v.probability == pytest.approx(ref.probability, abs=1e-4)
        assert [n.id for n in v.neighbors] == [n.id for n in ref.neighbors]


def _raw(url: str, request: bytes, *, then: bytes = b"", timeout: float = 30.0) -> tuple[int, dict]:
    """Send raw bytes on a fresh connection, read the answer: (status, JSON body)."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        if then:
            with contextlib.suppress(OSError):  # the server may close before everything is sent
                s.sendall(then)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n")[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _still_serving(server, token, frame) -> None:
    req = urllib.request.Request(
        server.url + "/v1/score", data=frame, headers={"Authorization": f"Bearer {token}"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200 and json.loads(r.read())["detector_version"]


def _post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_bad_requests_on_the_wire(server, token, frames):
    auth = {"Authorization": f"Bearer {token}"}
    cases = [
        (
            "no token",
            _post("/v1/score", frames[0], {"Content-Length": str(len(frames[0]))}),
            401,
            "unauthorized",
        ),
        (
            "wrong token",
            _post(
                "/v1/score",
                frames[0],
                {"Authorization": "Bearer not-the-right-token-123", "Content-Length": str(len(frames[0]))},
            ),
            401,
            "unauthorized",
        ),
        ("empty body", _post("/v1/score", b"", {**auth, "Content-Length": "0"}), 422, "empty"),
        ("text", _post("/v1/score", b"hello world", {**auth, "Content-Length": "11"}), 422, "not_an_image"),
        (
            "wrong content type",
            _post(
                "/v1/score", b'{"a": 1}', {**auth, "Content-Type": "application/json", "Content-Length": "8"}
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "truncated JPEG",
            _post(
                "/v1/score",
                truncated_jpeg(frames[1]),
                {**auth, "Content-Length": str(len(truncated_jpeg(frames[1])))},
            ),
            422,
            "truncated",
        ),
        (
            "decompression bomb",
            _post(
                "/v1/score",
                bomb_png(),
                {**auth, "Content-Type": "image/png", "Content-Length": str(len(bomb_png()))},
            ),
            422,
            "too_large",
        ),
        # 50 MB announced: refused from the header, the body is never sent
        (
            "50 MB body",
            _post("/v1/score", b"", {**auth, "Content-Length": str(50 * 1024 * 1024)}),
            413,
            "too_large",
        ),
    ]
    for name, request, status, code in cases:
        got_status, body = _raw(server.url, request)
        assert (got_status, body["error"]["code"]) == (status, code), name
        assert body["error"]["message"] and body["error"]["status"] == status, name
        _still_serving(server, token, frames[2])


def test_chunked_50mb_body_is_cut_off_while_streaming(server, token, frames):
    """No Content-Length: the server counts while the body streams and answers 413 at the limit (16 MB)."""
    host, port = server.url.split("//")[1].split(":")
    head = _post("/v1/score", b"", {"Authorization": f"Bearer {token}", "Transfer-Encoding": "chunked"})
    chunk = b"%x\r\n" % 65536 + b"\x00" * 65536 + b"\r\n"
    answer = bytearray()
    with socket.create_connection((host, int(port)), timeout=30) as s:

        def reader() -> None:
            while True:
                try:
                    data = s.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                answer.extend(data)

        t = threading.Thread(target=reader)
        s.sendall(head)
        t.start()
        sent = 0
        try:
            for _ in range(800):  # 50 MB
                s.sendall(chunk)
                sent += 65536
                if answer:
                    break
        except OSError:
            pass
        t.join(10)
        closed_by_server = not t.is_alive()
        if not closed_by_server:
            s.shutdown(socket.SHUT_RDWR)
            t.join(10)
    assert answer.startswith(b"HTTP/1.1 413"), bytes(answer[:200])
    assert b'"too_large"' in answer
    assert sent < 40 * 1024 * 1024  # it stopped well before the client had sent 50 MB
    assert closed_by_server  # and ended the connection instead of reading the rest
    _still_serving(server, token, frames[2])


def test_slow_client_times_out_and_others_are_served(server, token, frames):
    host, port = server.url.split("//")[1].split(":")
    head = _post(
        "/v1/score", b"", {"Authorization": f"Bearer {token}", "Content-Length": str(len(frames[0]))}
    )
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head + frames[0][:1000])  # then nothing more
        t0 = time.monotonic()
        _still_serving(server, token, frames[3])  # another client is served meanwhile
        data = b""
        while chunk := s.recv(65536):  # the server closes the connection after its answer
            data += chunk
        waited = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b'"request_timeout"' in data
    assert waited < 10


def test_client_errors_carry_the_code(server, token, frames):
    client = novelty.Client(server.url, token)
    with pytest.raises(ServiceCallError) as e:
        client.score(b"definitely not an image")
    assert (e.value.status, e.value.code) == (422, "not_an_image")
    with pytest.raises(ServiceCallError) as e:
        novelty.Client(server.url, "a-wrong-token-0123456789").score(frames[0])
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    results = client.score_batch([frames[0], b"nope", frames[1]])
    assert results[0].error is None and results[2].error is None
    assert results[1].error is not None and results[1].error.startswith("not_an_image")
    # more images than the service takes in one request (64): sent in chunks, answered in order
    many = [f + i.to_bytes(4, "big") for i, f in enumerate((frames * 12)[:70])] + [b"nope"]
    answered = client.score_batch(many, chunk_size=32)
    assert [v.sha256 for v in answered[:70]] == [hashlib.sha256(m).hexdigest() for m in many[:70]]
    assert answered[70].error is not None and all(v.error is None for v in answered[:70])
    with pytest.raises(ValueError, match="chunk_size"):
        client.score_batch(many, chunk_size=0)


def test_flags_survive_kill_9_and_client_retries(tmp_path, token, frames):
    """4 threads send 120 flags while the server is killed with SIGKILL and restarted on the same port:
    every flag a client got a 2xx for is in the store exactly once, image bytes intact."""
    store_dir = tmp_path / "flags"
    srv = ServerProcess(WINDSHIELD, flag_store=str(store_dir), token=token, log_path=tmp_path / "server.log")
    srv.start()
    images = [f + i.to_bytes(4, "big") for i, f in enumerate(frames * 10)]  # 120 distinct JPEGs (padded)
    acks: list[tuple[str, str, bool]] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def send(part: int) -> None:
        client = novelty.Client(srv.url, token, retries=300, backoff_s=0.05, max_backoff_s=1.0)
        try:
            for i in range(part, len(images), 4):
                r = client.flag(images[i], prediction="wet", source=f"car-{i % 7}")
                with lock:
                    acks.append((r.id, r.sha256, r.created))
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        while len(acks) < 40 and all(t.is_alive() for t in threads):
            time.sleep(0.01)
        srv.kill9()
        time.sleep(0.5)
        srv.start()
        for t in threads:
            t.join(300)
    finally:
        srv.stop()
    assert not failures, failures
    assert len(acks) == len(images)
    from novelty.flags import open_flag_store

    store = open_flag_store(str(store_dir))
    try:
        stored = store.list(limit=10_000)
        assert store.count() == len(images) == len(stored)
        assert {f.id for f in stored} == {a[0] for a in acks}
        assert sorted(f.sha256 for f in stored) == sorted(hashlib.sha256(im).hexdigest() for im in images)
        for f in stored[::10]:
            assert hashlib.sha256(store.image(f.id)).hexdigest() == f.sha256
    finally:
        store.close()
