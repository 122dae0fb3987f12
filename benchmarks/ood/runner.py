"""Run the scenarios: embed once (cached), fit novelty's scorers and the peers on the same embeddings,
measure AUROC / AUPR-in / AUPR-out / FPR@95 per novel set and the false-alarm rate at ``alpha`` on the
held-out in-distribution images.

novelty's side is one :class:`~novelty.NoveltyDetector` per scenario with the ``knn``, ``knn-local`` and
``autoencoder`` scorers, fitted with :meth:`~novelty.NoveltyDetector.fit_embeddings` exactly as a user
would: it holds out ``calibration_fraction`` of the fitting images (whole groups for video) to calibrate.
Its methods are each scorer alone (with its own conformal p-values) and ``combined`` (the detector's one
score — the mean of the three robust z-scores — and its p-value). Every peer is fitted on the same fitting part the detector's
scorers saw. For peers the false-alarm rate is given twice: at their own default threshold (``native``)
and after the same conformal calibration on the detector's calibration images (``conformal``).

Embeddings are cached per image pool under ``$NOVELTY_CACHE/embeddings/<backbone>-<weights
fingerprint>/<pool>.npz`` (only the rows used so far; new rows are embedded and merged), written
atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import cpu_flags, cpu_model
from benchmarks.ood.peers import PEERS, PeerNotInstalledError, run_peer
from benchmarks.ood.scenarios import Pool, Scenario
from novelty.calibration import ConformalCalibrator
from novelty.datasets.cache import cache_root, write_cache
from novelty.detector import NoveltyDetector
from novelty.embedder import Embedder
from novelty.errors import InvalidInputError
from novelty.metrics import detection_metrics, false_alarm_rate

__all__ = [
    "OUR_METHODS",
    "BenchmarkRun",
    "EmbeddingCache",
    "ScenarioResult",
    "fit_ours",
    "resplit_false_alarm",
    "run_benchmark",
    "run_scenario",
    "scenario_embeddings",
]

log = logging.getLogger(__name__)

OUR_SCORERS: tuple[str, ...] = ("knn", "knn-local", "autoencoder")
OUR_METHODS: tuple[str, ...] = (*OUR_SCORERS, "combined")


class EmbeddingCache:
    """Embeddings of pool images by one backbone, embedded on first use and kept on disk."""

    def __init__(self, embedder: Embedder, root: Path | None = None, *, progress: bool | None = None):
        self.embedder = embedder
        tag = f"{embedder.backbone_name}-{embedder.fingerprint[:12]}" + ("" if embedder.draft else "-nodraft")
        self.root = (root or cache_root("embeddings")) / tag
        self.progress = progress
        self.embedded = 0  # images embedded by this object (not read from the cache)
        self._memory: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # pool → (index, embeddings) read or made

    def _path(self, pool: Pool) -> Path:
        return self.root / f"{pool.name}.npz"

    def _read(self, pool: Pool) -> tuple[np.ndarray, np.ndarray]:
        if pool.name in self._memory:  # scenarios share pools: read each file once
            return self._memory[pool.name]
        path = self._path(pool)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    index, emb = z["index"], z["embeddings"]
                if index.ndim == 1 and emb.shape == (index.shape[0], self.embedder.dim):
                    return index.astype(np.int64), emb.astype(np.float32)
            except (OSError, ValueError, KeyError):
                log.warning("unreadable embedding cache %s: embedding again", path)
        return np.zeros(0, dtype=np.int64), np.zeros((0, self.embedder.dim), dtype=np.float32)

    def get(self, pool: Pool, index: np.ndarray) -> np.ndarray:
        """Embeddings of ``pool``'s images at positions ``index`` (rows in that order)."""
        index = np.asarray(index, dtype=np.int64)
        known, emb = self._read(pool)
        missing = np.setdiff1d(index, known)
        if missing.size:
            log.info("embedding %d images of %s", missing.size, pool.name)
            new = self.embedder.embed(pool.images(missing), progress=self.progress)
            self.embedded += int(missing.size)
            known = np.concatenate([known, missing])
            emb = np.concatenate([emb, new])
            order = np.argsort(known)
            known, emb = known[order], emb[order]

            def write(fh: Any, k: np.ndarray = known, e: np.ndarray = emb) -> None:
                np.savez(fh, index=k, embeddings=e)

            write_cache(self._path(pool), write, owner="benchmarks.ood")
        self._memory[pool.name] = (known, emb)
        pos = np.searchsorted(known, index)
        return emb[pos]


@dataclass
class MethodResult:
    name: str
    kind: str  # "novelty" or "peer"
    metrics: dict[str, dict[str, float]]  # novel set → auroc, aupr_in, aupr_out, fpr95
    false_alarm: float  # share of held-out in-distribution flagged at alpha (conformal p-values)
    native_false_alarm: float | None = None  # peers: at their own default threshold
    false_alarm_resplit: dict[str, float] = field(default_factory=dict)  # mean, q05, q95 over re-splits
    seconds: float = 0.0
    scores_in: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    scores_out: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metrics": self.metrics,
            "false_alarm": self.false_alarm,
            "native_false_alarm": self.native_false_alarm,
            "false_alarm_resplit": self.false_alarm_resplit,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ScenarioResult:
    scenario: str
    family: str
    description: str
    sizes: dict[str, int]
    alpha: float
    methods: dict[str, MethodResult]
    skipped: dict[str, str]  # peer → why it did not run
    embed_seconds: float

    def best(self, kind: str, novel_set: str) -> MethodResult | None:
        cands = [m for m in self.methods.values() if m.kind == kind]
        return max(cands, key=lambda m: m.metrics[novel_set]["auroc"], default=None)

    @property
    def novel_sets(self) -> list[str]:
        return [k for k in self.sizes if k not in ("fit", "calibration", "test_in")]

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "family": self.family,
            "description": self.description,
            "sizes": self.sizes,
            "alpha": self.alpha,
            "embed_seconds": round(self.embed_seconds, 3),
            "methods": {k: m.to_json() for k, m in self.methods.items()},
            "skipped": self.skipped,
        }


RESPLITS = 200


def resplit_false_alarm(
    cal_scores: np.ndarray,
    test_scores: np.ndarray,
    alpha: float,
    *,
    cal_groups: np.ndarray | None = None,
    test_groups: np.ndarray | None = None,
    n_splits: int = RESPLITS,
    seed: int = 0,
) -> dict[str, float]:
    """The false-alarm rate at ``alpha`` over ``n_splits`` random re-divisions of calibration ∪ test images
    into parts of the original sizes (by whole groups when groups are given): is one split's number luck?

    Returns the mean and the 5 % / 95 % quantiles of the share of "test" scores with conformal p < alpha.
    """
    cal = np.asarray(cal_scores, dtype=np.float64)
    test = np.asarray(test_scores, dtype=np.float64)
    scores = np.concatenate([cal, test])
    if cal_groups is None or test_groups is None:
        groups = np.arange(scores.size)
    else:
        # groups of the two parts are disjoint by construction; offset so equal ids cannot collide
        tg = np.asarray(test_groups)
        groups = np.concatenate([np.asarray(cal_groups), tg + (int(np.max(cal_groups)) + 1)])
    uniq, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse)
    rng = np.random.default_rng(seed)
    rates = np.empty(n_splits)
    for r in range(n_splits):
        order = rng.permutation(uniq.size)
        filled = np.cumsum(sizes[order])
        n_groups = int(np.searchsorted(filled, cal.size)) + 1  # first groups until the calibration size
        is_cal = np.isin(inverse, order[:n_groups])
        c, t = np.sort(scores[is_cal]), scores[~is_cal]
        p = (1.0 + (c.size - np.searchsorted(c, t, side="left"))) / (c.size + 1.0)
        rates[r] = float(np.mean(p < alpha)) if t.size else np.nan
    return {
        "mean": float(np.nanmean(rates)),
        "q05": float(np.nanquantile(rates, 0.05)),
        "q95": float(np.nanquantile(rates, 0.95)),
        "splits": float(n_splits),
    }


def _method(
    name: str,
    kind: str,
    s_in: np.ndarray,
    s_out: dict[str, np.ndarray],
    p_in: np.ndarray,
    alpha: float,
    seconds: float,
    native: float | None = None,
    resplit: dict[str, float] | None = None,
) -> MethodResult:
    return MethodResult(
        name=name,
        kind=kind,
        metrics={k: detection_metrics(s_in, v) for k, v in s_out.items()},
        false_alarm=false_alarm_rate(p_in, alpha),
        native_false_alarm=native,
        false_alarm_resplit=resplit or {},
        seconds=seconds,
        scores_in=s_in,
        scores_out=s_out,
    )


def scenario_embeddings(
    scenario: Scenario, cache: EmbeddingCache
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The embeddings of a scenario's fitting images, in-distribution test images and each novel set (cached)."""
    x_all = cache.get(scenario.fit.pool, scenario.fit.index)
    x_in = cache.get(scenario.test_in.pool, scenario.test_in.index)
    x_out = {k: cache.get(p.pool, p.index) for k, p in scenario.test_out.items()}
    return x_all, x_in, x_out


def fit_ours(scenario: Scenario, x_all: np.ndarray, backbone: str, alpha: float) -> NoveltyDetector:
    """novelty's detector of a scenario (:data:`OUR_SCORERS`), fitted on its embeddings as a user would: the
    scenario's calibration fraction, by group where it has groups."""
    det = NoveltyDetector(
        backbone,
        scorers=OUR_SCORERS,
        alpha=alpha,
        calibration_fraction=scenario.calibration_fraction,
        seed=scenario.seed,
    )
    return det.fit_embeddings(
        x_all,
        groups=None if scenario.fit.groups is None else list(scenario.fit.groups),
        ids=[str(i) for i in range(x_all.shape[0])],
    )


def run_scenario(
    scenario: Scenario,
    cache: EmbeddingCache,
    *,
    alpha: float = 0.05,
    peers: Sequence[str] | None = None,
    require_peers: bool = False,
) -> ScenarioResult:
    """Embed (cached), fit, score and measure one scenario; ``peers`` default to all of :data:`PEERS`."""
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"alpha must lie in (0, 1), got {alpha}")
    t0 = time.perf_counter()
    x_all, x_in, x_out = scenario_embeddings(scenario, cache)
    embed_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    det = fit_ours(scenario, x_all, cache.embedder.backbone_name, alpha)
    fit_idx = np.array([int(i) for i in det.train_ids_], dtype=np.int64)
    cal_idx = np.array([int(i) for i in det.calibration_ids_], dtype=np.int64)
    v_in = det.score_embeddings(x_in)
    v_out = {k: det.score_embeddings(v) for k, v in x_out.items()}
    ours_seconds = time.perf_counter() - t0

    groups = None if scenario.fit.groups is None else np.asarray(scenario.fit.groups)
    cal_groups = None if groups is None else groups[cal_idx]
    test_groups = None if scenario.test_in.groups is None else np.asarray(scenario.test_in.groups)

    def resplit(cal_scores: np.ndarray, test_scores: np.ndarray) -> dict[str, float]:
        return resplit_false_alarm(
            cal_scores, test_scores, alpha, cal_groups=cal_groups, test_groups=test_groups, seed=scenario.seed
        )

    raw_cal = det.calibrator_.raw_
    methods: dict[str, MethodResult] = {}
    for name in OUR_SCORERS:
        methods[name] = _method(
            name,
            "novelty",
            v_in.scores[name],
            {k: v.scores[name] for k, v in v_out.items()},
            v_in.p_values[name],
            alpha,
            ours_seconds,
            resplit=resplit(raw_cal[name], v_in.scores[name]),
        )
    # the combined score's robust scaling stays the one fitted on the original calibration part
    methods["combined"] = _method(
        "combined",
        "novelty",
        v_in.score,
        {k: v.score for k, v in v_out.items()},
        v_in.p_value,
        alpha,
        ours_seconds,
        resplit=resplit(det.calibrator_.combined_scores(raw_cal), v_in.score),
    )

    skipped: dict[str, str] = {}
    x_fit, x_cal = x_all[fit_idx], x_all[cal_idx]
    out_names = list(x_out)
    for name in list(PEERS) if peers is None else list(peers):
        t0 = time.perf_counter()
        try:
            res = run_peer(name, x_fit, [x_cal, x_in, *x_out.values()], seed=scenario.seed)
        except PeerNotInstalledError as e:
            if require_peers:
                raise
            skipped[name] = str(e)
            log.warning("skipping peer %s: %s", name, e)
            continue
        seconds = time.perf_counter() - t0
        s_cal, s_in, s_out = res.scores[0], res.scores[1], res.scores[2:]
        p_in = ConformalCalibrator().fit(s_cal).p_values(s_in)
        native = None if res.native is None else float(np.mean(res.native[1]))
        methods[name] = _method(
            name,
            "peer",
            s_in,
            dict(zip(out_names, s_out, strict=True)),
            p_in,
            alpha,
            seconds,
            native,
            resplit(s_cal, s_in),
        )

    sizes = {"fit": int(fit_idx.size), "calibration": int(cal_idx.size), "test_in": int(x_in.shape[0])}
    sizes.update({k: int(v.shape[0]) for k, v in x_out.items()})
    return ScenarioResult(
        scenario=scenario.name,
        family=scenario.family,
        description=scenario.description,
        sizes=sizes,
        alpha=alpha,
        methods=methods,
        skipped=skipped,
        embed_seconds=embed_seconds,
    )


@dataclass
class BenchmarkRun:
    results: list[ScenarioResult]
    config: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "seconds": round(self.seconds, 1),
            "scenarios": [r.to_json() for r in self.results],
        }

    def to_markdown(self) -> str:
        from benchmarks.ood.report import markdown

        return markdown(self)

    def write(self, out_dir: str | Path, stem: str = "ood_benchmark") -> tuple[Path, Path]:
        """Write ``<stem>.md`` and ``<stem>.json`` into ``out_dir`` (atomically); returns both paths."""
        out = Path(out_dir)
        md, js = out / f"{stem}.md", out / f"{stem}.json"
        text = self.to_markdown()
        payload = json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n"
        write_cache(md, lambda fh: fh.write(text.encode()), owner="benchmarks.ood")
        write_cache(js, lambda fh: fh.write(payload.encode()), owner="benchmarks.ood")
        if not (md.is_file() and js.is_file()):
            raise OSError(f"could not write the benchmark results into {out}")
        return md, js


def machine_description() -> dict[str, Any]:
    import os

    import torch

    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def run_benchmark(
    scenarios: Sequence[Scenario],
    *,
    backbone: str | None = None,
    alpha: float = 0.05,
    peers: Sequence[str] | None = None,
    require_peers: bool = False,
    cache_dir: Path | None = None,
    progress: bool | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> BenchmarkRun:
    """Run ``scenarios`` with one embedder (default backbone unless ``backbone``) and collect the results."""
    from novelty.weights import DEFAULT_BACKBONE

    t0 = time.perf_counter()
    embedder = Embedder(backbone or DEFAULT_BACKBONE)
    cache = EmbeddingCache(embedder, cache_dir, progress=progress)
    results = []
    for sc in scenarios:
        log.info("scenario %s (%s, size %s)", sc.name, sc.family, sc.size)
        res = run_scenario(sc, cache, alpha=alpha, peers=peers, require_peers=require_peers)
        results.append(res)
        if on_result is not None:
            on_result(res)
    config = {
        "backbone": embedder.backbone_name,
        "weights_fingerprint": embedder.fingerprint,
        "alpha": alpha,
        "sizes": sorted({sc.size for sc in scenarios}),
        "seeds": sorted({sc.seed for sc in scenarios}),
        "peers": list(PEERS) if peers is None else list(peers),
        "images_embedded_this_run": cache.embedded,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
    }
    return BenchmarkRun(results=results, config=config, seconds=time.perf_counter() - t0)
