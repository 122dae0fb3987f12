"""Read the results of ``novelty score --embeddings`` as a stream for the drift tests.

    stream = load_stream(["monday.parquet", "tuesday.parquet"], detector_id=det.artifact_id_)
    stream.embeddings      # (n, d) float16, one row per scored image (2 bytes per dimension)
    stream.times, stream.p_values, stream.is_novel, stream.keys, stream.predictions

Files are read in batches of rows (:func:`~novelty.batch.results.iter_result_columns`): only the columns the
drift tests need, never the whole table at once; embeddings are kept as float16. Unreadable inputs (rows with
an ``error``) are counted and left out. Results written without ``--embeddings`` raise
:class:`~novelty.drift.errors.MissingEmbeddingsError`; results of another detector raise
:class:`~novelty.drift.errors.DriftError`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from novelty.batch.results import iter_result_columns, result_columns
from novelty.batch.schema import decode_embedding
from novelty.clock import check_epoch_seconds
from novelty.drift.errors import DriftError, EmptyWindowError, MissingEmbeddingsError
from novelty.errors import InvalidInputError

__all__ = ["Stream", "load_stream"]

_COLUMNS = (
    "key",
    "path",
    "member",
    "p_value",
    "is_novel",
    "error",
    "alpha",
    "detector_id",
    "timestamp",
    "embedding",
)


@dataclass
class Stream:
    keys: list[str]
    paths: list[str]
    members: list[str]
    times: np.ndarray  # seconds since the epoch, NaN where unknown
    p_values: np.ndarray
    is_novel: np.ndarray
    embeddings: np.ndarray  # float16 (n, d)
    predictions: list[str] | None
    alpha: float | None
    detector_id: str | None
    n_errors: int
    n_rows: int

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, i: int) -> dict[str, Any]:
        """A minimal result row of image ``i`` (enough to make its thumbnail)."""
        return {"key": self.keys[i], "path": self.paths[i], "member": self.members[i]}


def _time(path: str | os.PathLike[str], key: Any, value: Any) -> float:
    """A row's ``timestamp`` (NaN when unknown), or :class:`DriftError` naming the file and the row when it is
    not a time the package accepts (``1e300``, year 10000, ±inf: written by hand or by an old version)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    try:
        return check_epoch_seconds(value, "timestamp")
    except InvalidInputError as e:
        raise DriftError(
            f"{os.fspath(path)}: row {str(key)[:200]!r}: {e} (an empty cell means an unknown time)"
        ) from None


def load_stream(
    paths: Sequence[str | os.PathLike[str]],
    *,
    detector_id: str | None = None,
    dim: int | None = None,
    batch_rows: int = 4096,
) -> Stream:
    """The scored images of one or more results files, in file order (see the module docstring)."""
    if not paths:
        raise InvalidInputError("no results files given")
    keys: list[str] = []
    rpaths: list[str] = []
    members: list[str] = []
    times: list[float] = []
    pvals: list[float] = []
    novel: list[bool] = []
    preds: list[str] | None = None
    chunks: list[np.ndarray] = []
    alphas: set[float] = set()
    ids: set[str] = set()
    n_err = n_rows = 0
    for p in paths:
        names = result_columns(p)
        if "embedding" not in names:
            raise MissingEmbeddingsError(
                f"{p} has no embeddings: it was scored without --embeddings. Score the images again with "
                "`novelty score DETECTOR INPUTS… --out RESULTS --embeddings` to test it for drift"
            )
        has_pred = "prediction" in names
        if preds is None and has_pred and not keys:
            preds = []
        cols = list(_COLUMNS) + (["prediction"] if has_pred else [])
        for batch in iter_result_columns(p, cols, batch_rows=batch_rows):
            n = len(batch["key"])
            n_rows += n
            buf = []
            for i in range(n):
                if batch["error"][i]:
                    n_err += 1
                    continue
                try:
                    vec = decode_embedding(batch["embedding"][i], dim)
                except InvalidInputError as e:
                    raise DriftError(f"{p}: row {batch['key'][i]!r}: {e}") from None
                if vec is None:
                    n_err += 1
                    continue
                if dim is None:
                    dim = int(vec.shape[0])
                buf.append(vec)
                keys.append(str(batch["key"][i]))
                rpaths.append(str(batch["path"][i] or ""))
                members.append(str(batch["member"][i] or ""))
                times.append(_time(p, batch["key"][i], batch["timestamp"][i]))
                pvals.append(float(batch["p_value"][i]))
                novel.append(batch["is_novel"][i] is True)
                if batch["alpha"][i] is not None and math.isfinite(batch["alpha"][i]):
                    alphas.add(float(batch["alpha"][i]))
                if batch["detector_id"][i]:
                    ids.add(str(batch["detector_id"][i]))
                if preds is not None:
                    preds.append(str(batch["prediction"][i] or "") if has_pred else "")
            if buf:
                chunks.append(np.stack(buf))
    if len(ids) > 1:
        raise DriftError(f"the results mix {len(ids)} detectors ({', '.join(sorted(i[:12] for i in ids))}…)")
    scored_by = next(iter(ids), None)
    if detector_id is not None and scored_by is not None and scored_by != detector_id:
        raise DriftError(
            f"the results were scored by detector {scored_by[:20]}…, not by the detector given "
            f"({detector_id[:20]}…): pass the detector that scored them"
        )
    if not keys:
        raise EmptyWindowError(
            f"the results hold no scored image with an embedding ({n_rows} rows, {n_err} unreadable)"
        )
    return Stream(
        keys=keys,
        paths=rpaths,
        members=members,
        times=np.asarray(times, dtype=np.float64),
        p_values=np.asarray(pvals, dtype=np.float64),
        is_novel=np.asarray(novel, dtype=bool),
        embeddings=np.concatenate(chunks).astype(np.float16, copy=False),
        predictions=preds,
        alpha=next(iter(alphas)) if len(alphas) == 1 else None,
        detector_id=scored_by,
        n_errors=n_err,
        n_rows=n_rows,
    )
