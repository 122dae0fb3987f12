"""``novelty.Client``: call a ``novelty serve`` service in one line. Standard library only (no FastAPI, no
HTTP package needed).

    client = novelty.Client("http://127.0.0.1:8000", token="…")
    v = client.score("frame.jpg")                     # a verdict: v.novelty, v.p_value, v.is_novel, v.prediction…
    vs = client.score_batch([frame1, frame2])         # one verdict each, in order (v.error set where unreadable)
    receipt = client.flag(frame, prediction="wet", source="car-17")

Images may be paths, encoded bytes, PIL images or numpy arrays (the last two are sent as PNG, losslessly).
Connection errors, timeouts and 502/503/504 answers are retried with exponential backoff (honouring
``Retry-After``); flags are idempotent on the server (same image + same source = one flag), so a retried
flag is never stored twice. Other errors raise :class:`ServiceCallError` with the service's error code.
Each thread keeps its own keep-alive connection, so one client may be shared by many threads.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from novelty.detector import Neighbor, Verdict
from novelty.errors import NoveltyError
from novelty.images import load_image

__all__ = ["Client", "FlagReceipt", "ServedVerdict", "ServiceCallError"]

_RETRY_STATUS = {502, 503, 504}


class ServiceCallError(NoveltyError):
    """The service answered with an error (``status``, its ``code`` and ``message``), or could not be
    reached after every retry (``status`` 0, code ``unreachable``)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class ServedVerdict(Verdict):
    """A :class:`~novelty.detector.Verdict` from the service, with the detector version that made it and
    the sha256 of the image bytes that were sent."""

    detector_version: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class FlagReceipt:
    """The answer to :meth:`Client.flag`: the flag's id, whether this call stored it (``created``) or it was
    stored before, and the whole stored record."""

    id: str
    created: bool
    sha256: str
    record: Mapping[str, Any]


def _encode(image: Any) -> tuple[bytes, str]:
    """Image → (bytes, name) to send."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image), "image"
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return path.read_bytes(), path.name
    try:
        import numpy as np
        from PIL import Image
    except ImportError:  # pragma: no cover - both are dependencies of novelty
        raise TypeError(f"cannot send {type(image).__name__}: pass a path or encoded bytes") from None
    if isinstance(image, np.ndarray):
        image = load_image(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue(), "image.png"
    raise TypeError(f"cannot send {type(image).__name__}: pass a path, bytes, a PIL image or a numpy array")


def _multipart(files: list[tuple[str, str, bytes]], fields: Mapping[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode())
        out.write(b"\r\n")
    for field_name, filename, data in files:
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{safe}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _verdict(d: Mapping[str, Any], source: str) -> ServedVerdict:
    if "error" in d:
        err = d["error"]
        nan = math.nan
        return ServedVerdict(
            source=source,
            novelty=nan,
            p_value=nan,
            is_novel=False,
            score=nan,
            scores={},
            p_values={},
            neighbors=(),
            error=f"{err.get('code')}: {err.get('message')}",
        )
    return ServedVerdict(
        source=source,
        novelty=float(d["novelty"]),
        p_value=float(d["p_value"]),
        is_novel=bool(d["is_novel"]),
        score=float(d["score"]),
        scores={k: float(v) for k, v in d["scores"].items()},
        p_values={k: float(v) for k, v in d["p_values"].items()},
        neighbors=tuple(Neighbor(n["id"], float(n["distance"])) for n in d["neighbors"]),
        prediction=d.get("prediction"),
        probability=d.get("probability"),
        trusted=d.get("trusted"),
        competence=d.get("competence"),
        trust_rule=d.get("trust_rule"),
        detector_version=d.get("detector_version", ""),
        sha256=d.get("image", {}).get("sha256", ""),
    )


class Client:
    """A client of ``novelty serve`` at ``url`` with bearer ``token``.

    ``retries``: attempts after the first on connection errors, timeouts and 502/503/504;
    the wait doubles from ``backoff_s`` up to ``max_backoff_s`` (with jitter), or follows ``Retry-After``.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 60.0,
        retries: int = 10,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._local = threading.local()

    def __repr__(self) -> str:  # never shows the token
        return f"Client({self.url!r})"

    # --- transport ------------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._drop_connection()

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send a request with retries; ``(status, headers, body)`` of the final answer."""
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if content_type:
            headers["Content-Type"] = content_type
        attempt = 0
        while True:
            wait: float | None = None
            try:
                conn = self._connection()
                conn.request(method, self._prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status, resp_headers = resp.status, {k.lower(): v for k, v in resp.getheaders()}
                if resp_headers.get("connection", "").lower() == "close":
                    self._drop_connection()
                if status not in _RETRY_STATUS or attempt >= self.retries:
                    return status, resp_headers, data
                retry_after = resp_headers.get("retry-after", "")
                wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, closed early
                self._drop_connection()
                if attempt >= self.retries:
                    raise ServiceCallError(
                        0,
                        "unreachable",
                        f"{method} {self.url}{path} failed after {attempt + 1} attempts: {e!r}",
                    ) from e
            delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            time.sleep(min(self.max_backoff_s, wait) if wait is not None else delay)
            attempt += 1

    def _json(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> Any:
        status, _, data = self.request(method, path, body, content_type)
        try:
            payload = json.loads(data) if data else {}
        except json.JSONDecodeError:
            payload = {}
        if status >= 400:
            err = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise ServiceCallError(
                status, err.get("code", "http_error"), err.get("message", data[:200].decode(errors="replace"))
            )
        return payload

    # --- the API --------------------------------------------------------------------------------------
    def score(self, image: Any) -> ServedVerdict:
        """The verdict on one image (raises :class:`ServiceCallError`, e.g. code ``not_an_image``)."""
        data, name = _encode(image)
        payload = self._json("POST", "/v1/score", data, "application/octet-stream")
        return _verdict(payload, str(image) if isinstance(image, (str, os.PathLike)) else name)

    def score_batch(self, images: Iterable[Any], *, chunk_size: int = 32) -> list[ServedVerdict]:
        """One verdict per image, in order; an unreadable image gets a verdict with ``error`` set.

        The images go in requests of ``chunk_size`` (the service takes up to 64 per request by default); each
        verdict names the detector version that made it (a reload between two requests shows there)."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        encoded = [_encode(im) for im in images]
        out: list[ServedVerdict] = []
        for start in range(0, len(encoded), chunk_size):
            chunk = encoded[start : start + chunk_size]
            body, ctype = _multipart([("images", name, data) for data, name in chunk], {})
            payload = self._json("POST", "/v1/score:batch", body, ctype)
            out.extend(_verdict(r, name) for r, (_, name) in zip(payload["results"], chunk, strict=True))
        return out

    def flag(
        self,
        image: Any,
        *,
        prediction: str | None = None,
        source: str = "",
        report: str | None = None,
        captured_at: datetime | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> FlagReceipt:
        """Flag an image for labelling; retrying is safe (the same image from the same source is stored once)."""
        data, name = _encode(image)
        fields: dict[str, str] = {"source": source}
        if prediction is not None:
            fields["prediction"] = str(prediction)
        if report is not None:
            fields["report"] = report
        if captured_at is not None:
            fields["captured_at"] = (
                captured_at.isoformat() if isinstance(captured_at, datetime) else captured_at
            )
        if metadata:
            fields["metadata"] = json.dumps(dict(metadata))
        body, ctype = _multipart([("image", name, data)], fields)
        rec = self._json("POST", "/v1/flag", body, ctype)
        return FlagReceipt(id=rec["id"], created=bool(rec["created"]), sha256=rec["sha256"], record=rec)

    def flags(self, since: datetime | str | None = None, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Every flag received at or after ``since``, oldest first (all pages)."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            q: dict[str, Any] = {"limit": limit}
            if since is not None:
                q["since"] = since.isoformat() if isinstance(since, datetime) else since
            if after is not None:
                q["after"] = after
            page = self._json("GET", "/v1/flags?" + urlencode(q))
            out += page["flags"]
            after = page.get("next_after")
            if not after:
                return out

    def health(self) -> bool:
        """Whether the service answers ``/readyz`` with 200 (no retries)."""
        try:
            conn = self._connection()
            conn.request("GET", self._prefix + "/readyz")
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        except (TimeoutError, OSError, http.client.HTTPException):
            self._drop_connection()
            return False
