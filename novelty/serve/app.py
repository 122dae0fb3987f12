"""The HTTP service: score images, store flags, report health and metrics (FastAPI).

    app = create_app(ServeConfig("checkpoints/windshield", api_tokens=["…"]))   # then: uvicorn.run(app)

Endpoints (every one answers JSON; errors as ``{"error": {"code", "message", "status"}}``):
  POST /v1/score          one image (raw bytes, or multipart with one file)      → a verdict
  POST /v1/score:batch    multipart with several files                          → one verdict or error each
  POST /v1/flag           an image + prediction, report, source, capture time, metadata → stored (201)
  GET  /v1/flags          ?since=ISO-8601&after=ID&limit=N                        → stored flags, oldest first
  GET  /v1/flags/{id}     · /v1/flags/{id}/image · GET /v1/detector
  POST /v1/admin/reload   (admin token) load the detector directory again and switch to it
  GET  /healthz · /readyz · /metrics (Prometheus text)

The app layer only: decoding is :func:`novelty.images.load_image` (with its decompression-bomb limit) and
the detector's own preprocessing; scoring is :meth:`~novelty.detector.NoveltyDetector.score_embeddings` on
embeddings of micro-batches (:mod:`novelty.serve.batcher`). Scores: higher = more novel; ``is_novel`` is
``p_value < alpha``. Image bytes and tokens are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from novelty import __version__
from novelty.detector import NoveltyDetector, Verdict
from novelty.errors import ImageError, InvalidInputError, NoveltyError
from novelty.fileio import sha256_bytes
from novelty.flags import FlagStore, FlagStoreError, open_flag_store
from novelty.images import load_image
from novelty.serve import schemas
from novelty.serve.auth import TokenSet
from novelty.serve.batcher import MicroBatcher, OverloadedError
from novelty.serve.detectors import DetectorHolder, Loaded
from novelty.serve.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics

log = logging.getLogger("novelty.serve")

__all__ = ["ServeConfig", "ServiceError", "create_app"]

VERSION_HEADER = "X-Novelty-Detector-Version"


@dataclass
class ServeConfig:
    """Settings of a service. Sizes in bytes, times in seconds."""

    detector_dir: str | Path
    flag_store: str = "novelty-flags"  # a directory (SQLite + images) or a postgresql:// URL
    api_tokens: list[str] = field(default_factory=list)  # scoring and flagging
    admin_tokens: list[str] = field(default_factory=list)  # POST /v1/admin/reload
    auth: bool = True  # False only with --no-auth: every endpoint open
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_images: int = 64
    max_pixels: int = 40_000_000  # per image, checked from the header before decoding
    request_timeout_s: float = 30.0  # decoding + waiting for the model + scoring
    body_timeout_s: float = 15.0  # to receive the whole request body
    max_batch: int = 32  # images per forward pass
    max_wait_ms: float = 5.0  # how long the first image of a batch waits for company
    max_queue: int = 512  # images waiting for the model before requests are refused (503)
    decode_threads: int = 2
    watch_interval_s: float = 2.0  # poll MANIFEST.sha256; 0 turns hot reload on change off
    device: str = "auto"
    torch_threads: int | None = (
        None  # intra-op threads of the model (process-wide); None leaves torch's default
    )
    warmup: bool = True  # forward passes at batch sizes 1, 2, 4, 8 before serving

    def __post_init__(self) -> None:
        if self.auth and not self.api_tokens:
            raise InvalidInputError(
                "no API token configured: pass --token-file or set NOVELTY_API_TOKENS "
                "(or --no-auth to serve without authentication, e.g. behind an authenticating proxy)"
            )


class ServiceError(Exception):
    """An error answered as ``{"error": {"code", "message", "status"}}`` with HTTP status ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _error_json(status: int, code: str, message: str, version: str | None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}, "detector_version": version}


def _plain(x: Any) -> Any:
    """numpy scalars (head classes, float32 distances) → JSON-able Python values."""
    return x.item() if isinstance(x, np.generic) else x


# --- the service state ---------------------------------------------------------------------------------
class _Upload:
    """Bytes with a name for error messages (a :class:`novelty.images.ByteSource`)."""

    def __init__(self, key: str, data: bytes):
        self.key, self._data = key, data

    def read_bytes(self) -> bytes:
        return self._data


@dataclass
class _Prepared:
    tensor: torch.Tensor
    info: dict[str, Any]
    sha256: str
    size: int


class Service:
    """Everything a request needs: the detector holder, the batcher, the flag store, tokens, metrics."""

    def __init__(
        self,
        config: ServeConfig,
        *,
        loader: Callable[[Path], NoveltyDetector] | None = None,
        store: FlagStore | None = None,
    ):
        self.config = config
        self.api_tokens = TokenSet(config.api_tokens)
        self.admin_tokens = TokenSet(config.admin_tokens)
        self.holder = DetectorHolder(
            config.detector_dir,
            loader=loader or (lambda d: NoveltyDetector.load(d, device=config.device)),
            warmup=self._warmup if config.warmup else None,
        )
        self.store = store
        self._own_store = store is None
        self.metrics = _make_metrics(self)
        self.batcher = MicroBatcher(
            max_batch=config.max_batch,
            max_wait_s=config.max_wait_ms / 1000.0,
            max_queue=config.max_queue,
            on_batch=lambda n, dt: self.metrics.observe("novelty_batch_size", n),
        )
        self.decode_pool: ThreadPoolExecutor | None = None
        self.recent_novel: deque[bool] = deque(maxlen=1000)
        self.ready = False
        self._watcher: asyncio.Task[None] | None = None

    # --- life cycle -----------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the flag store and load the detector in the calling thread (raises
        :class:`~novelty.errors.NoveltyError` with a clear message); :meth:`start` does it when not done."""
        if self.config.torch_threads is not None:
            torch.set_num_threads(self.config.torch_threads)
        if self.store is None:
            self.store = open_flag_store(self.config.flag_store)
        if self.holder.current is None:
            self.holder.load_blocking()

    async def start(self) -> None:
        await asyncio.to_thread(self.open)
        self.decode_pool = ThreadPoolExecutor(self.config.decode_threads, thread_name_prefix="novelty-decode")
        self.batcher.start()
        if self.config.watch_interval_s > 0:
            self._watcher = asyncio.create_task(self.holder.watch(self.config.watch_interval_s))
        self.ready = True
        cur = self.holder.current
        log.info("serving detector %s from %s", cur.version[:12] if cur else "?", self.config.detector_dir)

    async def stop(self) -> None:
        self.ready = False
        if self._watcher is not None:
            self._watcher.cancel()
        await asyncio.to_thread(self.batcher.stop)
        if self.decode_pool is not None:
            self.decode_pool.shutdown(wait=False, cancel_futures=True)
        if self.store is not None and self._own_store:
            await asyncio.to_thread(self.store.close)

    def _warmup(self, loaded: Loaded) -> None:
        """Run the backbone once at batch sizes 1, 2, 4 and 8 so that the first requests do not pay for the
        first passes (larger batches cost seconds on CPU and warm up in use)."""
        emb = loaded.detector.embedder
        size = emb.data_config["input_size"]
        for n in (1, 2, 4, 8):
            if n <= self.config.max_batch:
                emb.embed_tensor(torch.zeros((n, *size)))

    # --- helpers for the handlers ---------------------------------------------------------------------
    def version(self) -> str | None:
        cur = self.holder.current
        return cur.version if cur else None

    def loaded(self) -> Loaded:
        cur = self.holder.current
        if cur is None or not self.ready:
            raise ServiceError(503, "not_ready", "the detector is not loaded yet", {"Retry-After": "1"})
        return cur

    def check_token(self, presented: str | None, *, admin: bool = False) -> None:
        if not self.config.auth:
            return
        tokens = self.admin_tokens if admin else self.api_tokens
        if presented is None:
            raise ServiceError(
                401,
                "unauthorized",
                "missing bearer token (Authorization: Bearer <token>)",
                {"WWW-Authenticate": "Bearer"},
            )
        if tokens.accepts(presented):
            return
        if admin and self.api_tokens.accepts(presented):
            raise ServiceError(403, "forbidden", "this endpoint needs an admin token")
        raise ServiceError(
            401, "unauthorized", "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )

    def _prepare(self, loaded: Loaded, name: str, data: bytes) -> _Prepared:
        """Decode and preprocess one image (runs in the decoding pool, never on the event loop)."""
        emb = loaded.detector.embedder
        info: dict[str, Any] = {}
        max_pixels = self.config.max_pixels
        if emb.max_pixels is not None:
            max_pixels = min(max_pixels, emb.max_pixels)
        img = load_image(_Upload(name, data), min_size=emb.min_size, max_pixels=max_pixels, info=info)
        return _Prepared(emb.transform(img), info, sha256_bytes(data), len(data))

    async def prepare(self, loaded: Loaded, name: str, data: bytes) -> _Prepared:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.decode_pool, self._prepare, loaded, name, data)

    async def score_one(self, loaded: Loaded, name: str, data: bytes) -> dict[str, Any]:
        self.batcher.expect()
        try:
            prepared = await self.prepare(loaded, name, data)
        except BaseException:
            self.batcher.unexpect()
            raise
        try:
            verdict = await self.batcher.submit(loaded, prepared.tensor, name, expected=True)
        except OverloadedError as e:
            raise ServiceError(503, "overloaded", f"the model is busy: {e}", {"Retry-After": "1"}) from None
        self.metrics.inc("novelty_images_scored_total")
        if verdict.is_novel:
            self.metrics.inc("novelty_images_novel_total")
        self.recent_novel.append(verdict.is_novel)
        return verdict_json(verdict, loaded, prepared)


def verdict_json(v: Verdict, loaded: Loaded, prepared: _Prepared) -> dict[str, Any]:
    det = loaded.detector
    return {
        "detector_version": loaded.version,
        "novelty": v.novelty,
        "p_value": v.p_value,
        "is_novel": v.is_novel,
        "alpha": det.alpha,
        "score": v.score,
        "scores": dict(v.scores),
        "p_values": dict(v.p_values),
        "prediction": _plain(v.prediction),
        "probability": v.probability,
        "trusted": v.trusted,
        "neighbors": [{"id": n.id, "distance": float(n.distance)} for n in v.neighbors],
        "image": {
            "sha256": prepared.sha256,
            "bytes": prepared.size,
            "width": int(prepared.info.get("width", -1)),
            "height": int(prepared.info.get("height", -1)),
            "format": prepared.info.get("format"),
        },
    }


def _make_metrics(service: Service) -> Metrics:
    m = Metrics()
    m.counter(
        "novelty_requests_total", "HTTP requests answered, by route and status code", ("route", "status")
    )
    m.histogram(
        "novelty_request_duration_seconds", "time to answer a request, by route", LATENCY_BUCKETS, ("route",)
    )
    m.counter("novelty_images_scored_total", "images scored")
    m.counter("novelty_images_novel_total", "images scored as novel (p_value < alpha)")
    m.gauge(
        "novelty_novel_rate",
        "share of the last 1000 scored images that were novel",
        read=lambda: {(): float(np.mean(service.recent_novel)) if service.recent_novel else 0.0},
    )
    m.counter("novelty_flags_stored_total", "flags stored by this process (first time)")
    m.counter("novelty_flags_duplicate_total", "flags received again (already stored; not stored twice)")
    m.histogram("novelty_batch_size", "images per forward pass of the backbone", BATCH_BUCKETS)
    m.gauge(
        "novelty_queue_images",
        "images waiting for the model",
        read=lambda: {(): float(service.batcher.depth)},
    )
    m.gauge(
        "novelty_detector_info",
        "the detector being served (value 1; its version as a label)",
        ("version",),
        read=lambda: {(service.version() or "",): 1.0} if service.version() else {},
    )
    m.counter(
        "novelty_detector_reloads_total",
        "detector reloads (admin endpoint or a changed directory), by result",
        ("result",),
        read=lambda: {(k,): float(v) for k, v in service.holder.outcomes.items()},
    )
    return m


# --- the ASGI guard: body size limit and request metrics -------------------------------------------------
_ROUTES = {
    "/v1/score",
    "/v1/score:batch",
    "/v1/flag",
    "/v1/flags",
    "/v1/detector",
    "/v1/admin/reload",
    "/healthz",
    "/readyz",
    "/metrics",
}


def _route_label(path: str) -> str:
    if path in _ROUTES:
        return path
    if path.startswith("/v1/flags/"):
        return "/v1/flags/{id}/image" if path.endswith("/image") else "/v1/flags/{id}"
    return "other"  # bounded label values, whatever clients send


class _Guard:
    """Refuses bodies over the limit — from ``Content-Length`` before reading anything, and while
    streaming (a chunked body is cut off as soon as it passes the limit) — and records request metrics."""

    def __init__(self, app: ASGIApp, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        svc = self.service
        limit = svc.config.max_body_bytes
        t0 = time.perf_counter()
        status = 500
        route = _route_label(scope["path"])

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(k.lower() == VERSION_HEADER.lower().encode() for k, _ in headers):
                    version = svc.version()
                    if version:
                        headers.append((VERSION_HEADER.encode(), version.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            length = dict(scope.get("headers", [])).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                too_big = length.isdigit()
                err = (
                    ServiceError(
                        413, "too_large", f"the body has {int(length):,} bytes; the limit is {limit:,}"
                    )
                    if too_big
                    else ServiceError(400, "invalid_request", "invalid Content-Length header")
                )
                response = _error_response(err, svc.version())
                await response(scope, receive, send_wrapper)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise ServiceError(413, "too_large", f"the body passed the limit of {limit:,} bytes")
                return message

            await self.app(scope, limited_receive, send_wrapper)
        finally:
            svc.metrics.inc("novelty_requests_total", route, str(status))
            svc.metrics.observe("novelty_request_duration_seconds", time.perf_counter() - t0, route)


def _error_response(err: ServiceError, version: str | None) -> JSONResponse:
    headers = dict(err.headers)
    if err.status in (408, 413):  # the rest of the body is not wanted: end the connection
        headers["Connection"] = "close"
    if version:
        headers[VERSION_HEADER] = version
    return JSONResponse(_error_json(err.status, err.code, err.message, version), err.status, headers=headers)


# --- reading requests ------------------------------------------------------------------------------------
# raw image bytes; form-urlencoded too, because that is what `curl --data-binary @img.jpg` and urllib send
# unless told otherwise (the body is never parsed as a form)
_RAW_TYPES = ("application/octet-stream", "application/x-www-form-urlencoded")


async def _read_body(request: Request, timeout: float) -> bytes:
    chunks: list[bytes] = []

    async def read() -> None:
        async for chunk in request.stream():
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise ServiceError(
            408, "request_timeout", f"the request body did not arrive within {timeout:g} s"
        ) from None
    except ClientDisconnect:
        raise ServiceError(400, "client_disconnected", "the client went away while sending") from None
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _form(request: Request, body: bytes, max_files: int) -> Any:
    """Parse a multipart body that was already read (within the limits) into a form."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(
            max_files=max_files, max_fields=64, max_part_size=65536
        )
    except StarletteHTTPException as e:
        raise ServiceError(400, "invalid_request", f"malformed multipart body: {e.detail}") from None


async def _image_from_request(request: Request, service: Service) -> tuple[bytes, dict[str, str]]:
    """The image of a single-image request and the form's text fields (empty for a raw body)."""
    kind = _media_type(request)
    multipart = kind == "multipart/form-data"
    if not (multipart or kind == "" or kind.startswith("image/") or kind in _RAW_TYPES):
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"Content-Type {kind!r} is not accepted: send the image bytes (image/*, "
            "application/octet-stream) or multipart/form-data with a file field 'image'",
        )
    body = await _read_body(request, service.config.body_timeout_s)
    if not multipart:
        return body, {}
    form = await _form(request, body, max_files=1)
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if len(files) != 1:
        raise ServiceError(422, "invalid_request", f"the form must hold exactly one file, got {len(files)}")
    data = await files[0].read()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return data, fields


def _image_error(e: ImageError) -> ServiceError:
    return ServiceError(422, e.reason_code, f"{e.source}: {e.reason}")


# --- the app ---------------------------------------------------------------------------------------------
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "the encoded image (JPEG, PNG, WebP, …) as the raw body, or a multipart form with one file",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                }
            },
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["images"],
                }
            }
        },
    }
}
_FLAG_FIELDS = {
    "image": {"type": "string", "format": "binary"},
    "prediction": {"type": "string", "description": "what the production model predicted"},
    "report": {"type": "string", "description": "what the user reported"},
    "source": {
        "type": "string",
        "description": "the camera / car / device; with the image's hash it identifies the flag",
    },
    "captured_at": {"type": "string", "format": "date-time"},
    "metadata": {"type": "string", "description": "a JSON object (at most 16 KiB)"},
}
_FLAG_BODY = {
    "requestBody": {
        "required": True,
        "description": "multipart form with the image and the fields, or the raw image with the fields as query "
        "parameters",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": _FLAG_FIELDS, "required": ["image"]}
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


_BEARER = HTTPBearer(
    auto_error=False,
    description="a scoring token (--token-file, NOVELTY_API_TOKENS); the admin endpoint takes an admin token",
)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": schemas.ErrorOut} for c in codes}


def create_app(
    config: ServeConfig,
    *,
    loader: Callable[[Path], NoveltyDetector] | None = None,
    store: FlagStore | None = None,
) -> FastAPI:
    """The FastAPI app of a service. ``loader`` (``novelty.load`` by default) and ``store`` (opened from
    ``config.flag_store`` by default) can be injected, e.g. by tests."""
    service = Service(config, loader=loader, store=store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="novelty",
        version=__version__,
        summary="Score production images for novelty against a detector's training distribution; store flags.",
        description="Scores: higher = more novel. `p_value` is a conformal p-value against held-out "
        "in-distribution images; `is_novel` is `p_value < alpha`. Every answer names the detector version "
        "(sha256 of its manifest.json) in `detector_version` and the `X-Novelty-Detector-Version` header.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI would load its scripts from a CDN; the spec itself is at /openapi.json
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(_Guard, service=service)

    async def api_auth(creds: _Credentials) -> None:
        service.check_token(creds.credentials if creds else None)

    async def admin_auth(creds: _Credentials) -> None:
        service.check_token(creds.credentials if creds else None, admin=True)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, e: ServiceError) -> JSONResponse:
        return _error_response(e, service.version())

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()]
        return _error_response(ServiceError(422, "invalid_request", "; ".join(parts)), service.version())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "invalid_request")
        return _error_response(ServiceError(e.status_code, code, str(e.detail)), service.version())

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, e: Exception) -> JSONResponse:
        log.error(
            "internal error on %s %s: %s",
            request.method,
            _route_label(request.url.path),
            type(e).__name__,
            exc_info=e,
        )
        return _error_response(
            ServiceError(500, "internal", "internal error; see the server log"), service.version()
        )

    async def _timed(work: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(work, service.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(
                504, "timeout", f"the image was not scored within {service.config.request_timeout_s:g} s"
            ) from None

    # --- scoring ------------------------------------------------------------------------------------------
    @app.post(
        "/v1/score",
        dependencies=[Depends(api_auth)],
        response_model=None,
        responses={200: {"model": schemas.VerdictOut}, **_errors(400, 401, 408, 413, 415, 422, 503, 504)},
        openapi_extra=_IMAGE_BODY,
        summary="Score one image",
    )
    async def score(request: Request) -> JSONResponse:
        loaded = service.loaded()
        data, _ = await _image_from_request(request, service)
        try:
            result = await _timed(service.score_one(loaded, "body", data))
        except ImageError as e:
            raise _image_error(e) from None
        return JSONResponse(result, headers={VERSION_HEADER: loaded.version})

    @app.post(
        "/v1/score:batch",
        dependencies=[Depends(api_auth)],
        response_model=None,
        responses={200: {"model": schemas.BatchOut}, **_errors(400, 401, 408, 413, 415, 422, 503, 504)},
        openapi_extra=_BATCH_BODY,
        summary="Score several images (one verdict or error each, in order)",
    )
    async def score_batch(request: Request) -> JSONResponse:
        loaded = service.loaded()
        if _media_type(request) != "multipart/form-data":
            raise ServiceError(
                415, "unsupported_media_type", "send the images as multipart/form-data file fields 'images'"
            )
        body = await _read_body(request, service.config.body_timeout_s)
        limit = service.config.max_batch_images
        form = await _form(request, body, max_files=limit + 1)
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise ServiceError(422, "invalid_request", "the form holds no image file")
        if len(files) > limit:
            raise ServiceError(413, "too_large", f"{len(files)} images in one request; the limit is {limit}")
        blobs = [await f.read() for f in files]

        async def one(i: int, data: bytes) -> dict[str, Any]:
            try:
                return {"index": i, **await service.score_one(loaded, f"images[{i}]", data)}
            except ImageError as e:
                err = _image_error(e)
                return {"index": i, "error": {"code": err.code, "message": err.message, "status": err.status}}

        results = await _timed(asyncio.gather(*(one(i, b) for i, b in enumerate(blobs))))
        return JSONResponse(
            {"detector_version": loaded.version, "results": results}, headers={VERSION_HEADER: loaded.version}
        )

    # --- flags --------------------------------------------------------------------------------------------
    def _store() -> FlagStore:
        if service.store is None:
            raise ServiceError(503, "not_ready", "the flag store is not open yet", {"Retry-After": "1"})
        return service.store

    @app.post(
        "/v1/flag",
        dependencies=[Depends(api_auth)],
        status_code=201,
        response_model=None,
        responses={
            201: {"model": schemas.FlagOut, "description": "stored"},
            200: {"model": schemas.FlagOut, "description": "stored before (same image and source)"},
            **_errors(400, 401, 408, 413, 415, 422, 503, 504),
        },
        openapi_extra=_FLAG_BODY,
        summary="Flag an image for labelling (idempotent by image content and source)",
    )
    async def flag(request: Request) -> JSONResponse:
        store = _store()
        loaded = service.loaded()
        data, fields = await _image_from_request(request, service)
        for name in ("prediction", "report", "source", "captured_at", "metadata"):
            if name not in fields and name in request.query_params:
                fields[name] = request.query_params[name]
        metadata: Any = None
        if fields.get("metadata"):
            try:
                metadata = json.loads(fields["metadata"])
            except json.JSONDecodeError as e:
                raise ServiceError(422, "invalid_request", f"metadata is not valid JSON ({e.msg})") from None
        try:
            await _timed(service.prepare(loaded, "body", data))  # a flag must be a readable image
            stored, created = await _timed(
                asyncio.to_thread(
                    store.add,
                    data,
                    source=fields.get("source", ""),
                    prediction=fields.get("prediction") or None,
                    report=fields.get("report") or None,
                    captured_at=fields.get("captured_at") or None,
                    metadata=metadata,
                    detector_version=loaded.version,
                )
            )
        except ImageError as e:
            raise _image_error(e) from None
        except InvalidInputError as e:
            raise ServiceError(422, "invalid_request", str(e)) from None
        except FlagStoreError as e:
            log.error("flag store: %s", e)
            raise ServiceError(
                503, "store_unavailable", "the flag store is unavailable", {"Retry-After": "1"}
            ) from None
        service.metrics.inc("novelty_flags_stored_total" if created else "novelty_flags_duplicate_total")
        return JSONResponse({**stored.to_json(), "created": created}, status_code=201 if created else 200)

    @app.get(
        "/v1/flags",
        dependencies=[Depends(api_auth)],
        response_model=None,
        responses={200: {"model": schemas.FlagList}, **_errors(401, 422, 503)},
        summary="Stored flags, oldest first",
    )
    async def list_flags(
        since: str | None = None, after: str | None = None, limit: int = 100
    ) -> JSONResponse:
        store = _store()
        try:
            flags = await asyncio.to_thread(store.list, since, after=after, limit=limit)
        except InvalidInputError as e:
            raise ServiceError(422, "invalid_request", str(e)) from None
        except FlagStoreError as e:
            log.error("flag store: %s", e)
            raise ServiceError(
                503, "store_unavailable", "the flag store is unavailable", {"Retry-After": "1"}
            ) from None
        return JSONResponse(
            {
                "flags": [f.to_json() for f in flags],
                "next_after": flags[-1].id if len(flags) == limit else None,
                "detector_version": service.version(),
            }
        )

    async def _get_flag(flag_id: str) -> Any:
        store = _store()
        try:
            found = await asyncio.to_thread(store.get, flag_id)
        except FlagStoreError as e:
            log.error("flag store: %s", e)
            raise ServiceError(
                503, "store_unavailable", "the flag store is unavailable", {"Retry-After": "1"}
            ) from None
        if found is None:
            raise ServiceError(404, "not_found", f"no flag with id {flag_id[:40]!r}")
        return found

    @app.get(
        "/v1/flags/{flag_id}",
        dependencies=[Depends(api_auth)],
        response_model=None,
        responses={200: {"model": schemas.FlagOut}, **_errors(401, 404, 503)},
        summary="One stored flag",
    )
    async def get_flag(flag_id: str) -> JSONResponse:
        return JSONResponse((await _get_flag(flag_id)).to_json())

    @app.get(
        "/v1/flags/{flag_id}/image",
        dependencies=[Depends(api_auth)],
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}, **_errors(401, 404, 503)},
        summary="The image bytes of a stored flag",
    )
    async def get_flag_image(flag_id: str) -> Response:
        found = await _get_flag(flag_id)
        data = await asyncio.to_thread(_store().image, found.id)
        return Response(
            data, media_type="application/octet-stream", headers={"X-Content-SHA256": found.sha256}
        )

    # --- the detector -------------------------------------------------------------------------------------
    @app.get(
        "/v1/detector",
        dependencies=[Depends(api_auth)],
        response_model=None,
        responses={200: {"model": schemas.DetectorOut}, **_errors(401, 503)},
        summary="What the service runs",
    )
    async def detector_info() -> JSONResponse:
        loaded = service.loaded()
        det = loaded.detector
        return JSONResponse(
            {
                "detector_version": loaded.version,
                "directory": str(service.config.detector_dir),
                "backbone": det.backbone,
                "scorers": [s.name for s in det.scorers_],
                "alpha": det.alpha,
                "classes": None if det.head_ is None else [_plain(c) for c in det.head_.classes_],
                "n_train": int(det.index_.ntotal),
                "n_calibration": int(det.calibrator_.n),
            },
            headers={VERSION_HEADER: loaded.version},
        )

    @app.post(
        "/v1/admin/reload",
        dependencies=[Depends(admin_auth)],
        response_model=None,
        responses={200: {"model": schemas.ReloadOut}, **_errors(401, 403, 500)},
        summary="Load the detector directory again and switch to it atomically (admin token)",
    )
    async def reload() -> JSONResponse:
        previous = service.version()
        try:
            loaded, switched = await service.holder.reload()
        except (NoveltyError, OSError) as e:
            raise ServiceError(
                500, "reload_failed", f"the detector could not be loaded; still serving {previous}: {e}"
            ) from None
        return JSONResponse(
            {"detector_version": loaded.version, "previous": previous, "switched": switched},
            headers={VERSION_HEADER: loaded.version},
        )

    # --- operations ---------------------------------------------------------------------------------------
    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "detector_version": service.version()}

    @app.get(
        "/readyz",
        response_model=None,
        responses={503: {"model": schemas.ErrorOut}},
        summary="Ready to score: detector loaded and flag store reachable",
    )
    async def readyz() -> JSONResponse:
        service.loaded()
        try:
            n = await asyncio.wait_for(asyncio.to_thread(_store().count), 5.0)
        except (FlagStoreError, asyncio.TimeoutError):
            raise ServiceError(
                503, "store_unavailable", "the flag store is unreachable", {"Retry-After": "1"}
            ) from None
        return JSONResponse(
            {
                "status": "ready",
                "detector_version": service.version(),
                "detector": service.holder.describe(),
                "batcher": service.batcher.describe(),
                "flags": n,
            }
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
        summary="Prometheus metrics (series prefixed novelty_)",
    )
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
