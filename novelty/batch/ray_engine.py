"""Batch scoring on a Ray cluster: the same job as :func:`~novelty.batch.engine.score_inputs`, across machines.

    summary = score_inputs_ray("detector/", ["/shared/archive/2026-12-01/"], "results.parquet",
                               address="auto", actors=8)

The driver lists the inputs (as the local engine does) and splits those not yet scored into **blocks** of
``block_size``. A Ray Data pipeline (``from_items`` → ``map_batches`` with an actor class) hands each block to
an actor; every actor loads the detector **once** from ``detector_path`` — a path every node can read (a
shared file system), never a FAISS index captured in a closure — and reads, decodes, embeds and scores the
block's images itself, through the same code as the local engine
(:func:`~novelty.batch.engine.score_items`), so the rows are the local engine's rows, value for value.

The driver writes each finished block's rows through the local engine's crash-safe
:class:`~novelty.batch.results.ResultWriter`: parquet parts next to ``out`` with a manifest of what they
cover. An interrupted run (driver killed, cluster lost) resumes with the same call: blocks already written
are skipped. A worker that dies mid-block is restarted by Ray and its block retried (actors are created
with unlimited restarts and task retries); a block's rows reach the writer once, when the block finishes,
so every input is written exactly once.

Needs the ``ray`` extra (``pip install 'novelty[ray]'``). Without ``address`` a local Ray instance is started
with the cores of this machine; ``address="auto"`` joins the cluster this node belongs to (``ray start``),
``"ray://host:10001"`` connects a remote client.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from novelty.batch.engine import BatchSummary, open_run, score_items, summarize
from novelty.batch.items import DEFAULT_MAX_MEMBER_BYTES, InputItem
from novelty.detector import NoveltyDetector
from novelty.errors import InvalidInputError, NoveltyError
from novelty.runtimes import AUTO

log = logging.getLogger(__name__)

__all__ = ["RayEngineError", "score_inputs_ray"]


class RayEngineError(NoveltyError):
    """Ray is missing, the cluster cannot be reached, or the pipeline failed."""


def _require_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RayEngineError(
            "the Ray engine needs the ray package: pip install 'novelty[ray]' (or use the local engine)"
        ) from e
    return ray


def _item_to_json(it: InputItem) -> dict[str, Any]:
    return dataclasses.asdict(it)


def _item_from_json(d: Mapping[str, Any]) -> InputItem:
    d = dict(d)
    if d.get("archive_stamp") is not None:
        d["archive_stamp"] = tuple(d["archive_stamp"])
    return InputItem(**d)


class BlockScorer:
    """The Ray actor: loads the detector once, then scores whole blocks of inputs."""

    def __init__(
        self,
        detector_path: str,
        det_id: str,
        *,
        batch_size: int | None = None,
        device: str | None = "cpu",
        runtime: str | None = None,
        embeddings: bool = False,
        timestamps: Mapping[str, float] | None = None,
        maps: bool = False,
    ):
        # decoding happens in this actor's own process: one actor per core, no decoding sub-processes
        self.detector = NoveltyDetector.load(detector_path, device=device, num_workers=0, runtime=runtime)
        if batch_size:
            self.detector.embedder.batch_size = batch_size
        self.det_id = det_id
        if self.detector.artifact_id_ != det_id:
            raise RayEngineError(
                f"{detector_path} on this node is detector {self.detector.artifact_id_}, the driver loaded "
                f"{det_id}: every node must read the same detector (a shared path)"
            )
        self.embeddings, self.timestamps, self.maps = embeddings, timestamps, maps

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        blocks, payloads = [], []
        for block, items_json in zip(batch["block"], batch["items"], strict=True):
            items = [_item_from_json(d) for d in json.loads(items_json)]
            rows: list[dict[str, Any]] = []
            for _, r in score_items(
                self.detector,
                items,
                det_id=self.det_id,
                progress=False,
                embeddings=self.embeddings,
                timestamps=self.timestamps,
                maps=self.maps,
            ):
                rows.extend(r)
            blocks.append(int(block))
            payloads.append(json.dumps(rows))  # JSON keeps every float exactly (NaN included)
        return {"block": np.asarray(blocks, dtype=np.int64), "rows": np.asarray(payloads, dtype=object)}


def score_inputs_ray(
    detector_path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    block_size: int = 256,
    batch_size: int | None = None,
    runtime: str | None = None,
    chunk_rows: int = 512,
    resume: bool = True,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    embeddings: bool = False,
    timestamps: Mapping[str, float] | None = None,
    maps: bool = False,
    progress: bool | None = None,
    init_kwargs: Mapping[str, Any] | None = None,
) -> BatchSummary:
    """Score every image in ``inputs`` on Ray and write ``out``, as :func:`~novelty.batch.engine.score_inputs`.

    ``actors``: scoring actors (default: the cluster's CPUs / ``cpus_per_actor``); ``block_size``: inputs per
    Ray task (the unit of retry and of progress); ``batch_size``: images per forward pass in an actor;
    ``runtime``: the actors' backbone runtime (default: the one the detector records).
    ``init_kwargs`` go to ``ray.init`` when this call starts or joins Ray (e.g. ``num_cpus``,
    ``object_store_memory``); a Ray already initialised in this process is used as it is."""
    t0 = time.perf_counter()
    for name, value, low in (("block_size", block_size, 1), ("chunk_rows", chunk_rows, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise InvalidInputError(f"actors must be a positive integer, got {actors!r}")
    if not cpus_per_actor or cpus_per_actor <= 0:
        raise InvalidInputError(f"cpus_per_actor must be > 0, got {cpus_per_actor!r}")
    if runtime == AUTO:
        raise InvalidInputError(
            "runtime 'auto' is measured by each process: Ray's actors could choose differently and mix runtimes "
            "in one results file; name the runtime"
        )
    path = Path(detector_path).resolve()
    detector = NoveltyDetector.load(path, device="cpu", num_workers=0)
    if detector.artifact_id_ is None:
        raise InvalidInputError(f"{path}: not a saved detector")
    items, det_id, writer = open_run(
        detector,
        inputs,
        out,
        chunk_rows=chunk_rows,
        resume=resume,
        max_member_bytes=max_member_bytes,
        embeddings=embeddings,
        timestamps=timestamps,
        maps=maps,
        runtime=runtime,
    )
    # blocks are whole embedder batches: an actor then runs the model on exactly the batches the local engine
    # would, so the rows are bit for bit the same (a batch's composition can move a float32 in its last digit)
    per_batch = batch_size or detector.embedder.batch_size
    block_size = -(-block_size // per_batch) * per_batch
    del detector  # the actors load their own; the driver only writes
    ray = _require_ray()
    started_here = False
    if not ray.is_initialized():
        kwargs = dict(init_kwargs or {})
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("log_to_driver", False)
        try:
            ray.init(address=address, **kwargs)
        except (
            ConnectionError,
            RuntimeError,
            ValueError,
            SystemExit,
        ) as e:  # Ray exits when no cluster answers
            raise RayEngineError(
                f"cannot start or reach Ray at {address or 'a new local instance'}: {e}"
            ) from e
        started_here = True
    try:
        with writer:
            done = writer.done_keys()
            todo = [it for it in items if it.key not in done]
            if done:
                log.info("resuming: %d of %d inputs already scored", len(items) - len(todo), len(items))
            bad, ok = [it for it in todo if it.error], [it for it in todo if not it.error]
            blocks = ([bad] if bad else []) + [ok[s : s + block_size] for s in range(0, len(ok), block_size)]
            if blocks:
                _run_blocks(
                    ray,
                    blocks,
                    writer,
                    detector_path=str(path),
                    det_id=det_id,
                    actors=actors,
                    cpus_per_actor=cpus_per_actor,
                    batch_size=batch_size,
                    runtime=runtime,
                    options={"embeddings": embeddings, "timestamps": dict(timestamps or {}), "maps": maps},
                    progress=progress,
                )
            final = writer.finalize(expected_keys=[it.key for it in items])
    finally:
        if started_here:
            ray.shutdown()
    return summarize(final, len(items), len(todo), time.perf_counter() - t0)


def _run_blocks(
    ray: Any,
    blocks: list[list[InputItem]],
    writer: Any,
    *,
    detector_path: str,
    det_id: str,
    actors: int | None,
    cpus_per_actor: float,
    batch_size: int | None,
    runtime: str | None,
    options: dict[str, Any],
    progress: bool | None,
) -> None:
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))
    actors = min(actors, len(blocks))
    rows_in = [
        {"block": i, "items": json.dumps([_item_to_json(it) for it in b])} for i, b in enumerate(blocks)
    ]
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(progress)
    ds = ray.data.from_items(rows_in, override_num_blocks=len(rows_in))
    ds = ds.map_batches(
        BlockScorer,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        fn_constructor_kwargs={
            "detector_path": detector_path,
            "det_id": det_id,
            "batch_size": batch_size,
            **options,
        },
    )
    seen: set[int] = set()
    n_done = 0
    n_total = sum(len(b) for b in blocks)
    try:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for block, payload in zip(out["block"], out["rows"], strict=True):
                b = int(block)
                if b in seen:  # a retried task whose first result also arrived: written once
                    continue
                seen.add(b)
                rows = json.loads(payload)
                items = blocks[b]
                if [r["key"] for r in rows] != [it.key for it in items]:
                    raise RayEngineError(f"block {b} came back with rows that do not match its inputs")
                writer.write(rows, stamps=[it.stamp for it in items])
                n_done += len(items)
                log.info("ray: %d/%d inputs scored (%d/%d blocks)", n_done, n_total, len(seen), len(blocks))
    except NoveltyError:
        raise
    except Exception as e:  # Ray wraps worker failures in its own exception types
        raise RayEngineError(f"the Ray pipeline failed: {type(e).__name__}: {e}") from e
    missing = sorted(set(range(len(blocks))) - seen)
    if missing:
        raise RayEngineError(f"{len(missing)} block(s) never came back from Ray (first: {missing[:5]})")
