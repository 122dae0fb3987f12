"""Micro-batching: concurrent requests share one forward pass of the backbone.

Each request decodes its image (in a thread pool), then :meth:`MicroBatcher.submit` puts the preprocessed
tensor on a queue and awaits the verdict. One worker thread takes the first waiting image, waits at most
``max_wait_s`` for more (up to ``max_batch``), embeds them in one pass and scores them with the detector each
request began with — but does not wait at all when no other request is on its way (none is being
decoded and none is queued), so a lone client pays no batching delay. The event loop never runs the model; a full queue answers "overloaded" at once instead
of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from novelty.detector import Verdict
from novelty.serve.detectors import Loaded

log = logging.getLogger("novelty.serve")

__all__ = ["MicroBatcher", "OverloadedError"]


class OverloadedError(RuntimeError):
    """The queue of images waiting for the model is full."""


@dataclass
class _Job:
    loaded: Loaded
    tensor: torch.Tensor
    source: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Verdict]
    enqueued: float = field(default_factory=time.monotonic)
    patch: torch.Tensor | None = None  # the patch scorer's view, for a detector with one


def _resolve(fut: asyncio.Future[Verdict], result: Verdict | None, error: BaseException | None) -> None:
    if fut.done():  # the request gave up (timeout, client gone)
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)  # type: ignore[arg-type]


class MicroBatcher:
    """Collects images from concurrent requests into batches for one model worker thread."""

    def __init__(
        self,
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 512,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if max_batch < 1 or max_wait_s < 0 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be ≥ 1 and max_wait_s ≥ 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._incoming = 0  # requests being decoded that will submit an image soon
        self._incoming_lock = threading.Lock()
        self.batches = 0
        self.images = 0

    @property
    def depth(self) -> int:
        """Images waiting for the model."""
        return self._queue.qsize()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="novelty-model", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the queued images, then stop the worker."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def expect(self) -> None:
        """Announce an image that is being decoded; :meth:`submit` (``expected=True``) or :meth:`unexpect`
        must follow. While images are announced, a batch waits up to ``max_wait_s`` for them."""
        with self._incoming_lock:
            self._incoming += 1

    def unexpect(self) -> None:
        """The announced image will not come (its decoding failed)."""
        with self._incoming_lock:
            self._incoming -= 1

    async def submit(
        self,
        loaded: Loaded,
        tensor: torch.Tensor,
        source: str = "body",
        *,
        expected: bool = False,
        patch: torch.Tensor | None = None,
    ) -> Verdict:
        """Score one preprocessed image ``(3, H, W)`` with ``loaded``'s detector; await its verdict.
        ``expected``: the image was announced with :meth:`expect`."""
        try:
            if self._thread is None:
                raise RuntimeError("the batcher is not running")
            if self._queue.qsize() >= self.max_queue:
                raise OverloadedError(f"{self._queue.qsize()} images are waiting for the model")
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[Verdict] = loop.create_future()
            self._queue.put(_Job(loaded, tensor, source, loop, fut, patch=patch))
        finally:
            if expected:
                self.unexpect()
        return await fut

    # --- the worker thread ----------------------------------------------------------------------------
    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(jobs) < self.max_batch:
            if self._incoming <= 0 and self._queue.empty():
                break  # nobody else is on the way: do not make this request wait
            timeout = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            jobs, stopping = self._collect(first)
            jobs = [j for j in jobs if not j.future.done()]  # requests that gave up while waiting
            # one pass per detector: requests that began before a reload finish on the old one
            groups: dict[int, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(id(j.loaded), []).append(j)
            for group in groups.values():
                self._score(group)

    def _score(self, jobs: list[_Job]) -> None:
        t0 = time.monotonic()
        det = jobs[0].loaded.detector
        try:
            emb = det.embedder.embed_tensor(torch.stack([j.tensor for j in jobs]))
            patches = None
            if getattr(det, "needs_patches", False):  # as score_batch: patch features beside the embeddings
                patches = det.patch_extractor().features_tensor(
                    torch.stack([j.patch for j in jobs if j.patch is not None])
                )
            verdicts = det.score_embeddings(emb, sources=[j.source for j in jobs], patches=patches)
            results: list[tuple[Verdict | None, BaseException | None]] = [
                (verdicts[i], None) for i in range(len(jobs))
            ]
        except Exception as e:  # a failure of the model must answer every waiting request, not hang them
            log.exception("scoring a batch of %d images failed", len(jobs))
            results = [(None, e)] * len(jobs)
        self.batches += 1
        self.images += len(jobs)
        if self._on_batch is not None:
            self._on_batch(len(jobs), time.monotonic() - t0)
        for job, (verdict, error) in zip(jobs, results, strict=True):
            with contextlib.suppress(RuntimeError):  # a closed loop: the server is gone
                job.loop.call_soon_threadsafe(_resolve, job.future, verdict, error)

    def describe(self) -> dict[str, Any]:
        return {
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait_s * 1000,
            "queue": self.depth,
            "batches": self.batches,
            "images": self.images,
        }
