"""Batch scoring of image archives: folders, globs, zip/tar files and path lists → one result row per input.

    summary = score_inputs(detector, ["archive.zip", "photos/"], "results.parquet")

Results are written in chunks as scoring goes; after an interrupt (even ``kill -9``) the same call skips the
inputs already written, and the final file holds every input exactly once, in input order. Unreadable
inputs get a row whose ``error`` says why; they never stop the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from novelty.batch.results import ResultWriter
from novelty.batch.sources import InputItem, expand_inputs
from novelty.detector import BatchVerdicts, NoveltyDetector

log = logging.getLogger(__name__)

__all__ = ["BatchSummary", "result_rows", "score_inputs"]


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


def result_rows(
    items: Sequence[InputItem], verdicts: BatchVerdicts, sizes: np.ndarray, scorer_names: Sequence[str]
) -> list[dict[str, Any]]:
    """One flat row per input (the schema of the results file)."""
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
        row["neighbors"] = _json_list([n.id for n in v.neighbors])
        row["neighbor_distances"] = _json_list([round(n.distance, 6) for n in v.neighbors])
        row["error"] = v.error or ""
        rows.append(row)
    return rows


def _run_meta(detector: NoveltyDetector, items: Sequence[InputItem]) -> dict[str, Any]:
    h = hashlib.sha256()
    for it in items:
        h.update(it.key.encode("utf-8", "surrogateescape") + b"\0")
    return {
        "backbone_fingerprint": detector.embedder.fingerprint,
        "calibration_n": detector.calibrator_.n,
        "scorers": [s.name for s in detector.scorers_],
        "inputs_sha256": h.hexdigest(),
        "n_inputs": len(items),
    }


def score_inputs(
    detector: NoveltyDetector,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    chunk_rows: int = 512,
    resume: bool = True,
    progress: bool | None = None,
) -> BatchSummary:
    """Score every image found in ``inputs`` and write ``out`` (``.parquet``, ``.csv`` or ``.jsonl``)."""
    t0 = time.perf_counter()
    items = expand_inputs([str(p) for p in inputs])
    scorer_names = [s.name for s in detector.scorers_]
    writer = ResultWriter(out, chunk_rows=chunk_rows, resume=resume, run_meta=_run_meta(detector, items))
    done = writer.done_keys()
    todo = [it for it in items if it.key not in done]
    if done:
        log.info("resuming: %d of %d inputs already scored", len(items) - len(todo), len(items))
    unreadable = [it for it in todo if it.error]
    readable = [it for it in todo if not it.error]
    if unreadable:
        reasons: list[str | None] = [f"unreadable: {it.error}" for it in unreadable]
        empty = np.full((len(unreadable), detector.dim_), np.nan, dtype=np.float32)
        v = detector.score_embeddings(empty, sources=[it.key for it in unreadable], errors=reasons)
        writer.write(result_rows(unreadable, v, np.full((len(unreadable), 2), -1), scorer_names))
    for b in detector.embedder.iter_batches(readable, progress=progress):
        batch_items = [readable[i] for i in b.indices]
        errors = [None if e is None else f"{e.reason_code}: {e.reason}" for e in b.errors]
        v = detector.score_embeddings(b.embeddings, sources=[it.key for it in batch_items], errors=errors)
        writer.write(result_rows(batch_items, v, b.sizes, scorer_names))
    final = writer.finalize(expected_keys=[it.key for it in items])
    seconds = time.perf_counter() - t0
    from novelty.batch.results import read_results

    rows = read_results(final)
    return BatchSummary(
        out=Path(final),
        n_inputs=len(items),
        n_scored_now=len(todo),
        n_errors=sum(1 for r in rows if r.get("error")),
        n_novel=sum(1 for r in rows if r.get("is_novel")),
        seconds=seconds,
    )
