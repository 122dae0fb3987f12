"""One call from a detector and results files to the whole drift analysis (what ``novelty drift`` runs).

    a = analyze(det, ["results.parquet"], window="1d")
    print(a.run.table()); a.recommendation.action; a.to_json()

Steps: read the stream (:mod:`novelty.drift.stream`), test every window against the detector's reference with
the correction over windows and tests (:func:`~novelty.drift.monitor.monitor`, predictions of the head
included), cluster the novel images of the stream (:func:`~novelty.drift.missing.what_is_missing`), measure
drift by lag (with at least three windows) and turn it all into a recommendation
(:func:`~novelty.drift.horizon.recommend`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.clock import iso_seconds
from novelty.drift.horizon import HorizonCurve, Recommendation, drift_by_lag, recommend
from novelty.drift.missing import MissingCluster, what_is_missing
from novelty.drift.monitor import DriftRun, WindowResult, monitor, parse_window, split_windows
from novelty.drift.reference import DriftReference
from novelty.drift.stream import Stream, load_stream

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector

__all__ = ["DriftAnalysis", "analyze"]

#: novel images clustered at most (a seeded sample beyond that)
MAX_MISSING = 4000


@dataclass
class DriftAnalysis:
    stream: Stream
    reference: DriftReference
    run: DriftRun
    missing: list[MissingCluster]
    horizon: HorizonCurve | None
    recommendation: Recommendation
    results: list[str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        s = self.stream
        finite = s.times[np.isfinite(s.times)]
        return {
            "results": self.results,
            "detector_id": s.detector_id,
            "rows": s.n_rows,
            "scored": len(s),
            "unreadable_or_without_embedding": s.n_errors,
            "alpha": s.alpha,
            "time_range": [iso_seconds(float(finite.min())), iso_seconds(float(finite.max()))]
            if finite.size
            else None,
            "reference": "the detector's fitting embeddings (its index): calibration embeddings are not stored",
            "drift": self.run.to_json(),
            "missing": [c.to_json() for c in self.missing],
            "horizon": None if self.horizon is None else self.horizon.to_json(),
            "recommendation": self.recommendation.to_json(),
            "seconds": round(self.seconds, 1),
        }


def analyze(
    detector: NoveltyDetector,
    results: Sequence[str | os.PathLike[str]],
    *,
    window: str = "1d",
    tests: Sequence[str] | None = None,
    correction: str = "holm",
    level: float = 0.05,
    permutations: dict[str, int] | None = None,
    n_clusters: int = 16,
    max_reference: int = 1000,
    missing_method: str = "kmeans",
    horizon: bool = True,
    seed: int = 0,
    on_window: Callable[[int, int, WindowResult], None] | None = None,
) -> DriftAnalysis:
    """The drift analysis of ``results`` (files of ``novelty score --embeddings``) scored by ``detector``."""
    t0 = time.perf_counter()
    spec = parse_window(window)
    stream = load_stream(results, detector_id=detector.artifact_id_, dim=detector.dim_)
    ref = DriftReference.from_detector(
        detector, n_clusters=n_clusters, max_reference=max_reference, permutations=permutations, seed=seed
    )
    times = stream.times if np.isfinite(stream.times).all() else None
    run = monitor(
        ref,
        stream.embeddings,
        p_values=stream.p_values,
        times=stream.times if spec.kind == "time" else times,  # a time window names the rows without a time
        predictions=stream.predictions if detector.head_ is not None else None,
        window=spec,
        tests=tests,
        correction=correction,
        level=level,
        on_window=on_window,
    )
    novel = np.flatnonzero(stream.is_novel)
    missing: list[MissingCluster] = []
    if novel.size:
        rng = np.random.default_rng(seed)
        pick = novel if novel.size <= MAX_MISSING else np.sort(rng.choice(novel, MAX_MISSING, replace=False))
        found = what_is_missing(
            ref,
            stream.embeddings[pick].astype(np.float32),
            times=stream.times[pick],
            keys=[stream.keys[i] for i in pick],
            method=missing_method,
            seed=seed,
        )
        for c in found:  # positions in the stream, not in the sample
            c.members = pick[c.members]
            c.medoid = int(pick[c.medoid])
        missing = found
    curve = None
    if horizon:
        wins = split_windows(len(stream), spec, times)
        if sum(1 for w in wins if w.index.size >= 2) >= 3:
            curve = drift_by_lag(stream.embeddings, wins, level=level, seed=seed)
    rec = recommend(run, curve)
    return DriftAnalysis(
        stream=stream,
        reference=ref,
        run=run,
        missing=missing,
        horizon=curve,
        recommendation=rec,
        results=[str(r) for r in results],
        seconds=time.perf_counter() - t0,
    )
