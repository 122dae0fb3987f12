"""HTTP mechanics of the service: the ASGI guard (body size limit, request metrics, version header), JSON
error answers, and reading a request's image within the limits."""

from __future__ import annotations

import asyncio
import re
import time

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from novelty.errors import ImageError
from novelty.serve.service import VERSION_HEADER, Service, ServiceError, error_json

__all__ = [
    "BodyGuard",
    "error_response",
    "image_error",
    "image_from_request",
    "media_type",
    "parse_form",
    "read_body",
    "route_label",
]

# --- the ASGI guard: body size limit and request metrics -------------------------------------------------
ROUTES = {
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


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    if path.startswith("/v1/flags/"):
        return "/v1/flags/{id}/image" if path.endswith("/image") else "/v1/flags/{id}"
    return "other"  # bounded label values, whatever clients send


class BodyGuard:
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
        route = route_label(scope["path"])

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
                response = error_response(err, svc.version())
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


def error_response(err: ServiceError, version: str | None) -> JSONResponse:
    headers = dict(err.headers)
    if err.status in (408, 413):  # the rest of the body is not wanted: end the connection
        headers["Connection"] = "close"
    if version:
        headers[VERSION_HEADER] = version
    return JSONResponse(error_json(err.status, err.code, err.message, version), err.status, headers=headers)


# --- reading requests ------------------------------------------------------------------------------------
# raw image bytes; form-urlencoded too, because that is what `curl --data-binary @img.jpg` and urllib send
# unless told otherwise (the body is never parsed as a form)
RAW_TYPES = ("application/octet-stream", "application/x-www-form-urlencoded")


async def read_body(request: Request, timeout: float) -> bytes:
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


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


_CHARSET = re.compile(r";\s*charset\s*=\s*(\"[^\"]*\"|[^;]*)", re.IGNORECASE)
MAX_FORM_FIELDS = 64  # text fields of a form, besides its images


async def parse_form(
    request: Request, body: bytes, limit: int, image_fields: tuple[str, ...]
) -> tuple[list[bytes], dict[str, str]]:
    """Parse a multipart body that was already read (within the limits): ``(images, text fields)``.

    Images are the file parts (a part with a filename) and the parts named in ``image_fields`` that name no
    filename (RFC 7578 allows it; ``curl -F 'images=<a.jpg'`` sends them so), in order. The form may hold one
    image more than ``limit``, so that the caller can say how many there were; more is refused here (413).
    Text fields must be UTF-8 (else 422). The parts are read as latin-1, which keeps every byte, and the
    text fields decoded here: so an image part without a filename arrives intact."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [
        (k, _CHARSET.sub("", v.decode("latin-1")).encode("latin-1") + b"; charset=latin-1")
        if k.lower() == b"content-type"
        else (k, v)
        for k, v in request.scope["headers"]
    ]
    scope = {**request.scope, "headers": headers}
    try:
        form = await Request(scope, replay).form(
            max_files=limit + 1, max_fields=MAX_FORM_FIELDS + limit + 1, max_part_size=max(len(body), 1)
        )
    except StarletteHTTPException as e:
        detail = str(e.detail).lower()
        if "too many files" in detail or "too many fields" in detail:  # a size refusal, not a bad body
            raise ServiceError(
                413,
                "too_large",
                f"more than {limit + 1} images or fields in one request; the limit is {limit}",
            ) from None
        raise ServiceError(400, "invalid_request", f"malformed multipart body: {e.detail}") from None
    images: list[bytes] = []
    fields: dict[str, str] = {}
    try:
        for raw_name, value in form.multi_items():
            name = raw_name.encode("latin-1").decode("utf-8", errors="replace")
            if isinstance(value, UploadFile):
                images.append(await value.read())
            elif name in image_fields:
                images.append(value.encode("latin-1"))
            else:
                try:
                    fields[name] = value.encode("latin-1").decode("utf-8")
                except UnicodeDecodeError:
                    raise ServiceError(
                        422, "invalid_request", f"form field {name[:64]!r} is not valid UTF-8 text"
                    ) from None
    finally:
        await form.close()
    if len(images) > limit:
        raise ServiceError(413, "too_large", f"{len(images)} images in one request; the limit is {limit}")
    return images, fields


async def image_from_request(request: Request, service: Service) -> tuple[bytes, dict[str, str]]:
    """The image of a single-image request and the form's text fields (empty for a raw body)."""
    kind = media_type(request)
    multipart = kind == "multipart/form-data"
    if not (multipart or kind == "" or kind.startswith("image/") or kind in RAW_TYPES):
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"Content-Type {kind!r} is not accepted: send the image bytes (image/*, "
            "application/octet-stream) or multipart/form-data with a file field 'image'",
        )
    body = await read_body(request, service.config.body_timeout_s)
    if not multipart:
        return body, {}
    images, fields = await parse_form(request, body, limit=1, image_fields=("image",))
    if not images:
        raise ServiceError(422, "invalid_request", "the form holds no image: send it as a file field 'image'")
    return images[0], fields


def image_error(e: ImageError) -> ServiceError:
    return ServiceError(422, e.reason_code, f"{e.source}: {e.reason}")
