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
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from novelty.detector import NoveltyDetector
from novelty.errors import ImageError, InvalidInputError, NoveltyError
from novelty.flags import FlagImageMissingError, FlagStore, FlagStoreError, parse_metadata
from novelty.serve import schemas
from novelty.serve.http import (
    BodyGuard,
    error_response,
    image_error,
    image_from_request,
    media_type,
    parse_form,
    read_body,
    route_label,
)
from novelty.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from novelty.serve.schemas import FLAG_BODY, IMAGE_BODY
from novelty.serve.service import VERSION_HEADER, ServeConfig, Service, ServiceError, plain
from novelty.version import __version__

log = logging.getLogger("novelty.serve")

__all__ = ["ServeConfig", "ServiceError", "create_app"]


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
    app.add_middleware(BodyGuard, service=service)

    async def api_auth(creds: _Credentials) -> None:
        service.check_token(creds.credentials if creds else None)

    async def admin_auth(creds: _Credentials) -> None:
        service.check_token(creds.credentials if creds else None, admin=True)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, e: ServiceError) -> JSONResponse:
        return error_response(e, service.version())

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()]
        return error_response(ServiceError(422, "invalid_request", "; ".join(parts)), service.version())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "invalid_request")
        headers = dict(e.headers or {})  # a 405 names the allowed methods in Allow (RFC 9110)
        return error_response(ServiceError(e.status_code, code, str(e.detail), headers), service.version())

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, e: Exception) -> JSONResponse:
        log.error(
            "internal error on %s %s: %s",
            request.method,
            route_label(request.url.path),
            type(e).__name__,
            exc_info=e,
        )
        return error_response(
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
        openapi_extra=IMAGE_BODY,
        summary="Score one image",
    )
    async def score(request: Request) -> JSONResponse:
        loaded = service.loaded()
        data, _ = await image_from_request(request, service)
        try:
            result = await _timed(service.score_one(loaded, "body", data))
        except ImageError as e:
            raise image_error(e) from None
        return JSONResponse(result, headers={VERSION_HEADER: loaded.version})

    @app.post(
        "/v1/score:batch",
        dependencies=[Depends(api_auth)],
        response_model=None,
        responses={200: {"model": schemas.BatchOut}, **_errors(400, 401, 408, 413, 415, 422, 503, 504)},
        openapi_extra=schemas.batch_body(config.max_batch_images),
        summary="Score several images (one verdict or error each, in order)",
    )
    async def score_batch(request: Request) -> JSONResponse:
        loaded = service.loaded()
        if media_type(request) != "multipart/form-data":
            raise ServiceError(
                415, "unsupported_media_type", "send the images as multipart/form-data file fields 'images'"
            )
        body = await read_body(request, service.config.body_timeout_s)
        limit = service.config.max_batch_images
        blobs, _ = await parse_form(request, body, limit=limit, image_fields=("images",))
        if not blobs:
            raise ServiceError(
                422, "invalid_request", "the form holds no image: send them as file fields 'images'"
            )

        async def one(i: int, data: bytes) -> dict[str, Any]:
            try:
                return {"index": i, **await service.score_one(loaded, f"images[{i}]", data)}
            except ImageError as e:
                err = image_error(e)
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
        openapi_extra=FLAG_BODY,
        summary="Flag an image for labelling (idempotent by image content and source)",
    )
    async def flag(request: Request) -> JSONResponse:
        store = _store()
        loaded = service.loaded()
        data, fields = await image_from_request(request, service)
        for name in ("prediction", "report", "source", "captured_at", "metadata"):
            if name not in fields and name in request.query_params:
                fields[name] = request.query_params[name]
        try:
            # size and nesting are checked before the JSON is parsed: no RecursionError from deep input
            metadata = parse_metadata(fields["metadata"]) if fields.get("metadata") else None
        except InvalidInputError as e:
            raise ServiceError(422, "invalid_request", str(e)) from None
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
            raise image_error(e) from None
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
        responses={200: {"model": schemas.FlagList}, **_errors(401, 404, 422, 503)},
        summary="Stored flags, oldest first",
    )
    async def list_flags(
        since: Annotated[
            str | None,
            Query(
                description="ISO-8601 time (e.g. 2026-11-28T10:00:00Z; UTC when it names no offset), from "
                "1900-01-01 to 2199-12-31 UTC: flags received at or after it. Empty: from the first flag",
                json_schema_extra=schemas.TIME_SCHEMA,
            ),
        ] = None,
        after: Annotated[
            str | None,
            Query(
                description="the id of a stored flag, usually the last one of the previous page (its "
                "next_after): the flags after it. Empty: from the first flag. An id that is not stored: 404",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="flags per page")] = 100,
    ) -> JSONResponse:
        store = _store()
        after = after or None  # an empty ?after= is the first page, as an empty ?since= is no bound
        try:
            if after is not None and await asyncio.to_thread(store.get, after) is None:
                raise ServiceError(404, "not_found", f"after={after[:40]!r} is not the id of a stored flag")
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
        try:
            data = await asyncio.to_thread(_store().image, found.id)
        except FlagImageMissingError:
            log.error("flag store: the image file of flag %s is missing", found.id)
            raise ServiceError(
                404,
                "image_missing",
                f"flag {found.id}: its image file is missing from the flag store (flagging the image again "
                "restores it)",
            ) from None
        except FlagStoreError as e:
            log.error("flag store: %s", e)
            raise ServiceError(
                503, "store_unavailable", "the flag store is unavailable", {"Retry-After": "1"}
            ) from None
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
                "runtime": det.runtime,
                "scorers": [s.name for s in det.scorers_],
                "alpha": det.alpha,
                "classes": None if det.head_ is None else [plain(c) for c in det.head_.classes_],
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
            loaded, switched = await service.holder.reload(trigger="POST /v1/admin/reload")
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
        return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    return app
