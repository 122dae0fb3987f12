"""The state of a running service: its settings, the detector holder, the micro-batcher, the flag store,
tokens and metrics — and what a request asks of them (decode, score, answer)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from novelty.detector import NoveltyDetector, Verdict
from novelty.errors import InvalidInputError
from novelty.fileio import sha256_bytes
from novelty.flags import FlagStore, open_flag_store
from novelty.images import load_image
from novelty.runtimes import DEFAULT_RUNTIME, runtime_info
from novelty.serve.auth import TokenSet
from novelty.serve.batcher import MicroBatcher, OverloadedError
from novelty.serve.detectors import DetectorHolder, Loaded
from novelty.serve.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics

log = logging.getLogger("novelty.serve")

__all__ = ["VERSION_HEADER", "ServeConfig", "Service", "ServiceError", "verdict_json"]

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
    # how long the first image of a batch waits for images still decoding; None: the runtime's own
    # (novelty.runtimes.RuntimeInfo.serve_wait_ms: 5 ms, 20 for openvino-bf16)
    max_wait_ms: float | None = None
    max_queue: int = 512  # images waiting for the model before requests are refused (503)
    decode_threads: int = 2
    watch_interval_s: float = 2.0  # poll MANIFEST.sha256; 0 turns hot reload on change off
    device: str = "auto"
    # score with another runtime than the one the detector was calibrated with (None: the recorded one); the
    # load warns, and refuses one whose embeddings differ beyond the tolerance (novelty.runtimes)
    runtime: str | None = None
    torch_threads: int | None = (
        None  # intra-op threads of the model (process-wide); None leaves torch's default
    )
    # fewer compute threads while other processes keep cores busy and fewer are measured faster
    # (Embedder(threads="auto"), novelty.threads); scores may then differ in their last bits
    adaptive_threads: bool = False
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


def error_json(status: int, code: str, message: str, version: str | None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}, "detector_version": version}


def plain(x: Any) -> Any:
    """numpy scalars (head classes, float32 distances) → JSON-able Python values."""
    return x.item() if isinstance(x, np.generic) else x


# --- the service state ---------------------------------------------------------------------------------
class Upload:
    """Bytes with a name for error messages (a :class:`novelty.images.ByteSource`)."""

    def __init__(self, key: str, data: bytes):
        self.key, self._data = key, data

    def read_bytes(self) -> bytes:
        return self._data


@dataclass
class Prepared:
    tensor: torch.Tensor
    info: dict[str, Any]
    sha256: str
    size: int
    patch: torch.Tensor | None = None  # the patch scorer's view of the image, when the detector has one


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
            loader=loader or self._load,
            warmup=self._warmup if config.warmup else None,
        )
        self.store = store
        self._own_store = store is None
        self.metrics = _make_metrics(self)
        self.batcher = MicroBatcher(
            max_batch=config.max_batch,
            max_wait_s=(
                config.max_wait_ms
                if config.max_wait_ms is not None
                else runtime_info(DEFAULT_RUNTIME).serve_wait_ms  # until the detector loads
            )
            / 1000.0,
            max_queue=config.max_queue,
            on_batch=lambda n, dt: self.metrics.observe("novelty_batch_size", n),
        )
        self.decode_pool: ThreadPoolExecutor | None = None
        self.recent_novel: deque[bool] = deque(maxlen=1000)
        self.ready = False
        self._watcher: asyncio.Task[None] | None = None

    def _load(self, path: Path) -> NoveltyDetector:
        det = NoveltyDetector.load(path, device=self.config.device, runtime=self.config.runtime)
        if self.config.adaptive_threads:
            det.embedder.threads = "auto"
        if self.config.max_wait_ms is None:  # the wait measured best for the runtime that scores
            self.batcher.max_wait_s = runtime_info(det.runtime).serve_wait_ms / 1000.0
        return det

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

    def _prepare(self, loaded: Loaded, name: str, data: bytes) -> Prepared:
        """Decode and preprocess one image (runs in the decoding pool, never on the event loop)."""
        emb = loaded.detector.embedder
        info: dict[str, Any] = {}
        max_pixels = self.config.max_pixels
        if emb.max_pixels is not None:
            max_pixels = min(max_pixels, emb.max_pixels)
        img = load_image(Upload(name, data), min_size=emb.min_size, max_pixels=max_pixels, info=info)
        patch = None
        det = loaded.detector
        if det.needs_patches:  # decoded as the library decodes for patches (its own draft size), then resized
            ex = det.patch_extractor()
            pimg = load_image(
                Upload(name, data), min_size=ex.image_size if emb.draft else None, max_pixels=max_pixels
            )
            patch = ex.to_tensor(pimg)
        return Prepared(emb.transform(img), info, sha256_bytes(data), len(data), patch)

    async def prepare(self, loaded: Loaded, name: str, data: bytes) -> Prepared:
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
            verdict = await self.batcher.submit(
                loaded, prepared.tensor, name, expected=True, patch=prepared.patch
            )
        except OverloadedError as e:
            raise ServiceError(503, "overloaded", f"the model is busy: {e}", {"Retry-After": "1"}) from None
        self.metrics.inc("novelty_images_scored_total")
        if verdict.is_novel:
            self.metrics.inc("novelty_images_novel_total")
        self.recent_novel.append(verdict.is_novel)
        return verdict_json(verdict, loaded, prepared)


def verdict_json(v: Verdict, loaded: Loaded, prepared: Prepared) -> dict[str, Any]:
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
        "prediction": plain(v.prediction),
        "probability": v.probability,
        "trusted": v.trusted,
        "competence": v.competence,
        "trust_rule": v.trust_rule,
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
