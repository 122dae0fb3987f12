"""Batch scoring of image archives (the batch layer): input discovery, resumable results, the HTML report.

    from novelty.batch import score_inputs
    summary = score_inputs(detector, ["archive.zip", "photos/"], "results.parquet")

Modules: :mod:`~novelty.batch.sources` (inputs → :class:`~novelty.batch.items.InputItem`: folders, globs,
path lists; :mod:`~novelty.batch.listing` and :mod:`~novelty.batch.archives` for zip/tar members),
:mod:`~novelty.batch.schema` and :mod:`~novelty.batch.formats` (the typed columns and the file formats),
:mod:`~novelty.batch.results` (crash-safe chunked results), :mod:`~novelty.batch.engine` (the scoring loop),
:mod:`~novelty.batch.report` (the self-contained HTML report). Not imported by ``import novelty``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BatchSummary", "detector_id", "result_rows", "results_schema", "score_inputs"]


def __getattr__(name: str) -> Any:
    # ``novelty.batch.results`` and ``.sources`` are usable without loading the detector (and torch)
    if name in __all__:
        from novelty.batch import engine  # lazy: pulls in torch

        return getattr(engine, name)
    raise AttributeError(f"module 'novelty.batch' has no attribute {name!r}")
