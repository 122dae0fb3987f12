"""Batch scoring of image archives: folders, globs, zip/tar files and path lists → one result row per input.

    summary = score_inputs(detector, ["archive.zip", "photos/"], "results.parquet")

Results are written in chunks as scoring goes; after an interrupt (even ``kill -9``) the same call skips the
inputs already written, and the final file holds every input exactly once, in input order. Unreadable
inputs get a row whose ``error`` says why; they never stop the job.

A resume is refused (:class:`~novelty.batch.errors.ResumeMismatchError`, saying what differs and how to start
over) unless it continues *the same run*: the same detector (its artifact id; for a detector never saved, a
fingerprint of its fitted state), the same ``alpha``, the same list of inputs, and every input already
scored still the same file (size and modification time; for an archive member, those of its archive and
the member's size and offset). The rows carry the run's ``alpha`` and ``detector_id``, so a report can tell
which detector produced them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from novelty.batch.errors import ResultsError, ResumeMismatchError
from novelty.batch.formats import require_pyarrow
from novelty.batch.items import DEFAULT_MAX_MEMBER_BYTES, InputItem
from novelty.batch.maps import encode_map_png
from novelty.batch.results import ResultWriter, format_of, read_results, start_over_hint
from novelty.batch.schema import ResultSchema, encode_embedding, result_schema
from novelty.batch.sources import expand_inputs
from novelty.batch.timestamps import image_timestamp
from novelty.detector import BatchVerdicts, NoveltyDetector
from novelty.errors import InvalidInputError
from novelty.identity import detector_id

log = logging.getLogger(__name__)

__all__ = [
    "BatchSummary",
    "check_results_path",
    "detector_id",
    "result_rows",
    "results_schema",
    "score_inputs",
]


@dataclass
class BatchSummary:
    out: Path
    n_inputs: int
    n_scored_now: int  # inputs scored by this call (the rest were done by an earlier, interrupted call)
    n_errors: int
    n_novel: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.n_scored_now / self.seconds if self.seconds > 0 else math.nan


def _json_list(values: Sequence[Any]) -> str:
    return json.dumps(list(values), ensure_ascii=False)


def results_schema(
    detector: NoveltyDetector, *, embeddings: bool = False, maps: bool = False
) -> ResultSchema:
    """The columns of this detector's results (:func:`~novelty.batch.schema.result_schema`)."""
    return result_schema(
        [s.name for s in detector.scorers_],
        head=detector.head_ is not None,
        embeddings=embeddings,
        maps=maps,
    )


def result_rows(
    items: Sequence[InputItem],
    verdicts: BatchVerdicts,
    sizes: np.ndarray,
    scorer_names: Sequence[str],
    *,
    alpha: float,
    detector_id: str,
    embeddings: np.ndarray | None = None,
    times: Sequence[tuple[float, str]] | None = None,
    maps: bool = False,
) -> list[dict[str, Any]]:
    """One flat row per input, in the columns of :func:`results_schema` (with ``embeddings`` and ``times``:
    those of ``results_schema(detector, embeddings=True)``; with ``maps``: ``anomaly_map``, the PNG of each
    novel image's map in ``verdicts.anomaly_maps``)."""
    rows = []
    for i, item in enumerate(items):
        v = verdicts[i]
        row: dict[str, Any] = {
            "key": item.key,
            "path": item.path,
            "member": item.member or "",
            "bytes": -1 if item.size is None else int(item.size),
            "width": int(sizes[i, 0]),
            "height": int(sizes[i, 1]),
            "novelty": v.novelty,
            "p_value": v.p_value,
            "is_novel": v.is_novel,
            "score": v.score,
        }
        for name in scorer_names:
            row[f"score_{name}"] = v.scores[name]
            row[f"p_value_{name}"] = v.p_values[name]
        if verdicts.predictions is not None:
            row["prediction"] = "" if v.prediction is None else str(v.prediction)
            row["probability"] = math.nan if v.probability is None else v.probability
            row["trusted"] = bool(v.trusted)
            row["competence"] = math.nan if v.competence is None else v.competence
        row["neighbors"] = _json_list([n.id for n in v.neighbors])
        row["neighbor_distances"] = _json_list([round(n.distance, 6) for n in v.neighbors])
        row["error"] = v.error or ""
        row["alpha"] = float(alpha)
        row["detector_id"] = detector_id
        if embeddings is not None:
            row["timestamp"], row["timestamp_source"] = times[i] if times is not None else (math.nan, "")
            row["embedding"] = encode_embedding(embeddings[i]) if v.error is None else ""
        if maps:
            m = verdicts.anomaly_maps
            row["anomaly_map"] = (
                encode_map_png(m[i], (int(sizes[i, 0]), int(sizes[i, 1])))
                if m is not None and v.is_novel and v.error is None
                else ""
            )
        rows.append(row)
    return rows


def _run_meta(
    detector: NoveltyDetector,
    items: Sequence[InputItem],
    det_id: str,
    timestamps: str | None = None,
    runtime: str = "torch",
) -> dict[str, Any]:
    h = hashlib.sha256()
    for it in items:
        h.update(it.key.encode("utf-8", "surrogateescape") + b"\0")
    meta = {
        "detector_id": det_id,
        "alpha": detector.alpha,
        "n_neighbors": detector.n_neighbors,
        "inputs": f"{len(items)} inputs, key list sha256 {h.hexdigest()}",
        # another runtime makes other embeddings: a resume must not mix them (torch: the meta as before)
        **({"runtime": runtime} if runtime != "torch" else {}),
    }
    if timestamps is not None:  # only with --embeddings: runs without them keep their earlier meta
        meta["timestamps"] = timestamps
    return meta


def check_results_path(out: str | os.PathLike[str]) -> Path:
    """``out`` as a results path, or the error why it cannot be one (before any scoring starts): an
    unknown suffix (:class:`~novelty.batch.errors.ResultsFormatError`), an existing directory, or Parquet
    without pyarrow (:class:`~novelty.batch.errors.ResultsDependencyError`)."""
    path = Path(out)
    if path.is_dir():
        raise ResultsError(
            f"{path} is a directory; give the results file to write, e.g. {path / 'results.parquet'}"
        )
    if format_of(path) == "parquet":
        require_pyarrow()  # a missing dependency is found now, not after the detector is loaded
    return path


def _check_stamps(writer: ResultWriter, items: Sequence[InputItem]) -> None:
    """Refuse to resume when an input that already has a row changed since it was scored."""
    now = {it.key: it.stamp for it in items}
    changed = [k for k, s in writer.done_stamps().items() if k in now and s is not None and s != now[k]]
    if changed:
        shown = ", ".join(repr(k) for k in changed[:3]) + (
            f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        raise ResumeMismatchError(
            f"{len(changed)} input(s) changed since the interrupted run scored them (size or modification "
            f"time differ): {shown}; their rows in {writer.parts_dir} would be stale. "
            + start_over_hint(writer.parts_dir)
        )


def score_items(
    detector: NoveltyDetector,
    items: Sequence[InputItem],
    *,
    det_id: str,
    progress: bool | None = None,
    embeddings: bool = False,
    timestamps: Mapping[str, float] | None = None,
    maps: bool = False,
) -> Iterator[tuple[list[InputItem], list[dict[str, Any]]]]:
    """Score ``items`` batch by batch: ``(items of the batch, their result rows)``. Unreadable inputs first
    (one batch), then the readable ones in the embedder's batches. Every engine goes through here, so the
    local and the Ray engine write the same rows for the same inputs."""
    scorer_names = [s.name for s in detector.scorers_]

    def rows_for(
        batch: Sequence[InputItem], v: BatchVerdicts, sizes: np.ndarray, emb: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        times = [image_timestamp(it, timestamps) for it in batch] if embeddings else None
        return result_rows(
            batch,
            v,
            sizes,
            scorer_names,
            alpha=detector.alpha,
            detector_id=det_id,
            embeddings=(emb if emb is not None else np.full((len(batch), 1), np.nan)) if embeddings else None,
            times=times,
            maps=maps,
        )

    unreadable = [it for it in items if it.error]
    readable = [it for it in items if not it.error]
    if unreadable:
        reasons: list[str | None] = [f"{it.error_code or 'unreadable'}: {it.error}" for it in unreadable]
        empty = np.full((len(unreadable), detector.dim_), np.nan, dtype=np.float32)
        v = detector.score_embeddings(empty, sources=[it.key for it in unreadable], errors=reasons)
        yield unreadable, rows_for(unreadable, v, np.full((len(unreadable), 2), -1))
    keys = [it.key for it in readable]
    for b in detector.iter_score(readable, names=keys, progress=progress, anomaly_maps=maps):
        batch_items = [readable[i] for i in b.indices]
        yield batch_items, rows_for(batch_items, b.verdicts, b.sizes, b.embeddings)


def open_run(
    detector: NoveltyDetector,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    chunk_rows: int = 512,
    resume: bool = True,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    embeddings: bool = False,
    timestamps: Mapping[str, float] | None = None,
    maps: bool = False,
    runtime: str | None = None,
) -> tuple[list[InputItem], str, ResultWriter]:
    """Check the arguments, list the inputs and open the crash-safe writer of a run (resuming the parts of
    an interrupted run of the same detector, runtime, alpha and inputs): ``(items, detector id, writer)``.
    ``runtime``: the backbone runtime that scores (default: the detector's)."""
    out = check_results_path(out)
    if maps and not detector.needs_patches:
        raise InvalidInputError(
            "anomaly maps come from a patch scorer and this detector has none; fit one with scorers "
            "including 'patch-knn', or drop --maps"
        )
    items = expand_inputs([os.fspath(p) for p in inputs], max_member_bytes=max_member_bytes)
    det_id = detector_id(detector)
    if timestamps and not embeddings:
        raise InvalidInputError(
            "timestamps are written with the embeddings: pass embeddings=True (--embeddings)"
        )
    stamp_meta = None
    if embeddings:
        stamp_meta = (
            "csv sha256 "
            + hashlib.sha256(json.dumps(sorted((timestamps or {}).items())).encode()).hexdigest()[:16]
            if timestamps
            else "exif or mtime"
        )
    writer = ResultWriter(
        out,
        schema=results_schema(detector, embeddings=embeddings, maps=maps),
        chunk_rows=chunk_rows,
        resume=resume,
        run_meta=_run_meta(detector, items, det_id, stamp_meta, runtime or detector.runtime),
    )
    return items, det_id, writer


def score_inputs(
    detector: NoveltyDetector,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    chunk_rows: int = 512,
    resume: bool = True,
    progress: bool | None = None,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    embeddings: bool = False,
    timestamps: Mapping[str, float] | None = None,
    maps: bool = False,
) -> BatchSummary:
    """Score every image found in ``inputs`` and write ``out`` (``.parquet``, ``.csv`` or ``.jsonl``).

    ``max_member_bytes``: archive members larger than this get a ``too_large`` row instead of being read
    (see :func:`~novelty.batch.sources.expand_inputs`). ``embeddings``: also write each image's embedding and
    when it was taken (``timestamps``: ``{path: seconds since the epoch}`` that win over EXIF and file times;
    see :mod:`novelty.batch.timestamps`), for ``novelty drift``. ``maps``: also write the anomaly map of each
    novel image as a small PNG (column ``anomaly_map``; needs a patch scorer such as ``patch-knn``)."""
    t0 = time.perf_counter()
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
    )
    with writer:  # an exception keeps the rows written so far (and the buffered ones) for a resume
        _check_stamps(writer, items)
        done = writer.done_keys()
        todo = [it for it in items if it.key not in done]
        if done:
            log.info("resuming: %d of %d inputs already scored", len(items) - len(todo), len(items))

        for batch, rows in score_items(
            detector,
            todo,
            det_id=det_id,
            progress=progress,
            embeddings=embeddings,
            timestamps=timestamps,
            maps=maps,
        ):
            writer.write(rows, stamps=[it.stamp for it in batch])
        final = writer.finalize(expected_keys=[it.key for it in items])
    return summarize(final, len(items), len(todo), time.perf_counter() - t0)


def summarize(
    final: str | os.PathLike[str], n_inputs: int, n_scored_now: int, seconds: float
) -> BatchSummary:
    """The :class:`BatchSummary` of a finished run, counted from its results file."""
    rows = read_results(final)
    return BatchSummary(
        out=Path(final),
        n_inputs=n_inputs,
        n_scored_now=n_scored_now,
        n_errors=sum(1 for r in rows if r.get("error")),
        n_novel=sum(1 for r in rows if r.get("is_novel")),
        seconds=seconds,
    )
