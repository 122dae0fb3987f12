"""The flywheel benchmark: which images should a human label, under a budget, to fix the windshield head?

    .venv/bin/python -m benchmarks.flywheel          # → benchmarks/results/flywheel.json and flywheel.md
    .venv/bin/python -m benchmarks.flywheel --pool-mix 0.1,0.4,0.86 --jobs 2   # → flywheel_pools.json and .md

The windshield scenario (:mod:`novelty.datasets.windshield`): the street video cut into 25-frame blocks dealt
to train / calibration / test parts; half the frames of every block wet (water drops), the rest dry.

- **Champion**: kNN + the dry/wet condition head with the demo's parameters (``alpha`` 0.05, a third of the
  blocks held out to calibrate, default head), fitted on the *train* part (400 clean frames, dry and wet,
  16 blocks; groups = blocks).
- **Production pool**: the *test* part's 195 frames under tunnel, ice, fog and snow at severities 1, 3 and 5
  (each frame dry or wet by its own label: half the pool of every condition is wet), beside the same frames
  clean, both dry and wet: 2,730 images. Each seed draws 80 % of them as that seed's pool.
- **Evaluation set**: the *calibration* part's 200 frames under the same conditions and severities, clean
  dry and wet (2,800 images): no frame of it is in the training data or the pool.
- **Annotator**: the ground truth (an oracle that labels every selected image dry or wet correctly).

One turn: each strategy selects ``budget`` ∈ {25, 50, 100, 200} images from the pool, the oracle labels them,
and the **head alone is refitted** — ``ConditionHead(**champion.head_.get_params())`` on the champion's own
fitting embeddings plus the labelled selection (groups: the champion's blocks; a labelled image is grouped
with the other conditions of its frame), so every bought label reaches the head. Index and calibration stay the
champion's, so the calibration is untouched, held-out clean blocks, and the false-alarm rate on clean frames is
the champion's. Measured: head accuracy per condition on the evaluation set and overall (the mean of the five
conditions clean, tunnel, ice, fog, snow), mean ± std over 5 seeds; the number of labels ``random`` needs to
reach ``hybrid``'s accuracy at 50 labels (linear interpolation between budgets, 0 = the champion); the share of
the selected images whose pre-annotation (the champion head's answer) was already right.

Hybrid's weights and oversample are tuned on seeds 100–102 (budget 50) and then used as they are on the
reported seeds 0–4.

Five turns: hybrid, 50 labels per turn from the pool less what is labelled; after each turn the **whole
detector** is refitted with the champion's parameters (``NoveltyDetector(...).fit_embeddings`` on the training
frames plus every label so far; a third of the groups held out to calibrate, as ``novelty retrain`` does), so
novelty and uncertainty are recomputed for the next turn. Per turn: accuracy per condition, the false-alarm
rate at alpha on the clean evaluation frames, the share flagged per condition, the pre-annotations that were
right, and the auto-accepted labels (pool images with ``p ≥ alpha`` and head probability ≥ 0.9: how many, and
how many of them right).

Pool mixes (``--pool-mix``): the pool above is 86 % condition images; a production pool is mostly clean. Per
mix (a target share of condition images) and seed, the pool is the seed's draw above with all its clean images
and only the first of its condition images in a random order of the seed (:func:`mix_indices`; nested, and a
share above the draw's own keeps it whole). On each: random, novelty, uncertainty (least confidence and
competence), diversity and hybrid (the library's defaults) at budgets 25, 50, 100 (random also at 200), one
turn as above except that the labelled images join the head's training rows in pool order, so a labelled set
two strategies both choose is refitted once. Candidates for a default that use only what the flywheel knows at
selection time (the pool's p-values; no label, no condition) are tuned on seeds 100–102 at 50 labels, by the
least worst-mix regret (the best candidate's mean accuracy on a mix minus the candidate's): hybrid with
oversample 2, 4, 8; hybrid whose k-center step chooses among the ``c × n_flagged`` most novel images
(``oversample = max(1, c · n_flagged / budget)``, c = 1, 2); a rule, diversity when the share of flagged images
in the pool is at least a threshold (0.25, 0.5, 0.75), else novelty. Each family's best is then reported on
seeds 0–4 beside the strategies. The head refits run in ``--jobs`` spawned processes with one torch thread each
(the head's short epochs run several times slower with two threads on a shared two-core machine).

Embeddings are made once (``$NOVELTY_CACHE/flywheel``, keyed by the backbone's fingerprint).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import cpu_flags

LABELS = np.array(["dry", "wet"])
CONDITIONS = ("tunnel", "ice", "fog", "snow")
ALL_CONDITIONS = ("clean", *CONDITIONS)
SEVERITIES = (1, 3, 5)
BUDGETS = (25, 50, 100, 200)
STRATEGIES = ("random", "novelty", "uncertainty", "diversity", "hybrid")
SEEDS = (0, 1, 2, 3, 4)
TUNE_SEEDS = (100, 101, 102)
TUNE_BUDGET = 50
TUNE_WEIGHTS = ((1.0, 0.0), (0.75, 0.25), (0.5, 0.5))
TUNE_OVERSAMPLE = (4.0, 8.0, 16.0, 32.0)
POOL_SHARE = 0.8
TURNS = 5
TURN_BUDGET = 50
ALPHA = 0.05
AUTO_PROBABILITY = 0.9
DATA_VERSION = 1  # bump when the images of a part change
RESULTS = Path(__file__).resolve().parent / "results"

log = logging.getLogger("benchmarks.flywheel")
_T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.0f} s] {msg}", flush=True)


# --- data -------------------------------------------------------------------------------------------------
@dataclass
class Part:
    """Embedded images of one part of the benchmark, one row per image."""

    x: np.ndarray  # float32 (n, d)
    y: np.ndarray  # 0 dry, 1 wet
    condition: np.ndarray  # "clean", "tunnel", …
    severity: np.ndarray  # 0 for clean
    frame: np.ndarray  # frame id in the video
    block: np.ndarray  # 25-frame block id

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: np.ndarray) -> Part:
        return Part(*(getattr(self, f)[idx] for f in ("x", "y", "condition", "severity", "frame", "block")))


_FIELDS = ("x", "y", "condition", "severity", "frame", "block")


def _variants(frames: np.ndarray, ids: np.ndarray, labels: np.ndarray, blocks: np.ndarray) -> list[tuple]:
    """(name, images-maker, y, condition, severity, frame, block) chunks of one part: clean dry and wet of every
    frame, then every condition × severity with each frame's own label."""
    from novelty.datasets.windshield import apply_condition

    chunks: list[tuple] = []
    n = ids.shape[0]
    chunks.append(("clean/dry", lambda: frames[ids].copy(), np.zeros(n, int), "clean", 0, ids, blocks))
    chunks.append(
        (
            "clean/wet",
            lambda: apply_condition(frames[ids], "wet", 3, 0, frame_ids=ids),
            np.ones(n, int),
            "clean",
            0,
            ids,
            blocks,
        )
    )
    for cond in CONDITIONS:
        for sev in SEVERITIES:

            def make(cond: str = cond, sev: int = sev) -> np.ndarray:
                out = np.empty((n, *frames.shape[1:]), dtype=np.uint8)
                for lab, name in ((0, cond), (1, f"{cond}+wet")):
                    sel = labels == lab
                    if sel.any():
                        out[sel] = apply_condition(frames[ids[sel]], name, sev, 0, frame_ids=ids[sel])
                return out

            chunks.append((f"{cond}/sev{sev}", make, labels.copy(), cond, sev, ids, blocks))
    return chunks


def build_data(embedder: Any, cache_dir: Path | None = None) -> tuple[dict[str, Part], dict[str, Any]]:
    """The train, pool and evaluation parts, embedded (from the cache when it holds them)."""
    from novelty.datasets.cache import cache_root, write_cache
    from novelty.datasets.windshield import find_video, street_frames, windshield_scenario

    video = find_video()
    root = cache_dir or cache_root("flywheel")
    key = f"v{DATA_VERSION}-{embedder.backbone_name}-{embedder.cache_key}-{video.stat().st_size}"
    path = root / f"windshield-{key}.npz"
    info: dict[str, Any] = {"cache": str(path)}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                parts = {
                    name: Part(*(z[f"{name}__{f}"] for f in _FIELDS)) for name in ("train", "pool", "eval")
                }
            info.update(from_cache=True, embedded=0, seconds=0.0)
            return parts, info
        except (OSError, ValueError, KeyError):
            say(f"unreadable cache {path}: embedding again")
    t0 = time.perf_counter()
    sc = windshield_scenario(seed=0)
    frames = street_frames()
    tr = sc.train
    parts = {
        "train": Part(
            embedder.embed(tr.images),
            tr.labels.astype(int),
            np.array(["clean"] * len(tr)),
            np.zeros(len(tr), int),
            tr.frames,
            tr.groups,
        )
    }
    say(f"embedded the train part ({len(tr)} frames)")
    for name, cs in (("pool", sc.test), ("eval", sc.calibration)):
        chunks = []
        for title, make, y, cond, sev, ids, blocks in _variants(frames, cs.frames, cs.labels, cs.groups):
            x = embedder.embed(make())
            n = x.shape[0]
            chunks.append(Part(x, y, np.array([cond] * n), np.full(n, sev), ids.copy(), blocks.copy()))
            say(f"embedded {name} {title} ({n} images)")
        parts[name] = Part(*(np.concatenate([getattr(c, f) for c in chunks]) for f in _FIELDS))
    arrays = {f"{name}__{f}": getattr(p, f) for name, p in parts.items() for f in _FIELDS}

    def write(fh: Any) -> None:
        np.savez(fh, **arrays)

    write_cache(path, write, owner="benchmarks.flywheel")
    n_img = sum(len(p) for p in parts.values())
    info.update(from_cache=False, embedded=n_img, seconds=round(time.perf_counter() - t0, 1))
    return parts, info


# --- models -----------------------------------------------------------------------------------------------
def make_detector() -> Any:
    """A detector with the demo's parameters, without the autoencoder: kNN + the default condition head."""
    from novelty.detector import NoveltyDetector

    return NoveltyDetector(scorers=("knn",), alpha=ALPHA, calibration_fraction=1 / 3, seed=0)


def fit_detector(x: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> tuple[Any, list[str]]:
    """A detector fitted on embeddings with labels 0/1 and groups; the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = make_detector().fit_embeddings(x, list(LABELS[y]), groups=list(groups))
    return det, sorted({str(w.message) for w in caught})


def train_groups(part: Part) -> list[str]:
    return [f"block:{b}" for b in part.block]


def label_groups(part: Part) -> list[str]:
    """A labelled production image is grouped with the other versions of its frame (near-duplicates)."""
    return [f"frame:{f}" for f in part.frame]


def accuracy(pred: Sequence[Any], part: Part) -> dict[str, float]:
    ok = np.asarray(pred) == LABELS[part.y]
    out = {c: float(ok[part.condition == c].mean()) for c in ALL_CONDITIONS}
    out["overall"] = float(np.mean([out[c] for c in ALL_CONDITIONS]))
    return out


# --- one seed's pool --------------------------------------------------------------------------------------
def pool_indices(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(n, size=int(round(POOL_SHARE * n)), replace=False))


def as_pool(det: Any, part: Part, idx: np.ndarray) -> Any:
    """The candidates ``part[idx]`` as a selection pool scored by ``det`` (ids = positions in ``part``)."""
    from novelty.fileio import sha256_bytes
    from novelty.flywheel.pools import score_pool

    ids = [f"p{i}" for i in idx]
    return score_pool(
        det,
        part.x[idx],
        ids=ids,
        paths=[f"/windshield/{part.condition[i]}/s{part.severity[i]}/frame{part.frame[i]}.png" for i in idx],
        sha256=[sha256_bytes(i.encode()) for i in ids],
        sources=[("benchmark",)] * len(ids),
    )


def auto_accept(pool: Any, truth: np.ndarray) -> dict[str, Any]:
    """Labels the head would give without a human: ``p ≥ alpha`` and probability ≥ 0.9."""
    prob = pool.probability
    auto = (~pool.is_novel) & (prob >= AUTO_PROBABILITY)
    right = np.asarray(pool.predictions, dtype=object) == LABELS[truth]
    return {
        "n_pool": len(pool),
        "n_auto": int(auto.sum()),
        "share_auto": float(auto.mean()),
        "accuracy_auto": float(right[auto].mean()) if auto.any() else None,
        "accuracy_rest": float(right[~auto].mean()) if (~auto).any() else None,
    }


# --- experiments ------------------------------------------------------------------------------------------
def refit_head_on(base: Part, pool: Part, chosen: np.ndarray, params: dict[str, Any]) -> Any:
    """A head with ``params`` fitted on ``base`` (the champion's fitting rows) plus the labelled ``pool[chosen]``."""
    from novelty.head import ConditionHead

    new = pool.take(chosen)
    x = np.concatenate([base.x, new.x])
    y = np.concatenate([base.y, new.y])
    groups = train_groups(base) + label_groups(new)
    return ConditionHead(**params).fit(x, list(LABELS[y]), groups=groups)


@dataclass
class Bench:
    train: Part
    pool: Part
    eval: Part
    champion: Any
    fit_idx: np.ndarray  # rows of train the champion's index and head were fitted on

    def refit_head(self, chosen: np.ndarray) -> Any:
        """The champion's head refitted (same parameters) on its own fitting rows plus the labelled pool rows."""
        return refit_head_on(
            self.train.take(self.fit_idx), self.pool, chosen, self.champion.head_.get_params()
        )

    def one_turn(
        self, pool_idx: np.ndarray, strategy: str, budget: int, seed: int, **kw: Any
    ) -> dict[str, Any]:
        from novelty.flywheel.selection import select

        pool = as_pool(self.champion, self.pool, pool_idx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the results were measured with the head's least confidence (the measure before competence)
            sel = select(pool, budget, strategy, seed=seed, **{"measure": "least-confidence", **kw})
        chosen = pool_idx[np.asarray(sel.positions, dtype=np.int64)]
        head = self.refit_head(chosen)
        acc = accuracy(head.predict(self.eval.x), self.eval)
        champ_pred = np.asarray(pool.predictions, dtype=object)[sel.positions]
        picked = self.pool.take(chosen)
        return {
            "accuracy": acc,
            "n_selected": int(chosen.shape[0]),
            "preannotation_right": float(np.mean(champ_pred == LABELS[picked.y])),
            "selected_conditions": {c: int((picked.condition == c).sum()) for c in ALL_CONDITIONS},
            "selected_wet": int(picked.y.sum()),
            "selected_mean_severity": float(picked.severity[picked.condition != "clean"].mean())
            if (picked.condition != "clean").any()
            else None,
        }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def labels_to_match(curve: dict[int, float], target: float) -> float | None:
    """Labels at which a piecewise-linear accuracy curve (budget → accuracy) first reaches ``target``;
    ``None`` when it never does within the budgets measured."""
    pts = sorted(curve.items())
    for (b0, a0), (b1, a1) in itertools.pairwise(pts):
        if a0 >= target:
            return float(b0)
        if a1 >= target:
            return float(b0 + (target - a0) / (a1 - a0) * (b1 - b0))
    return None


def run(
    seeds: Sequence[int] = SEEDS, tune_seeds: Sequence[int] = TUNE_SEEDS, quick: bool = False
) -> dict[str, Any]:
    import torch

    import novelty
    from benchmarks.ood.runner import machine_description

    t_start = time.perf_counter()
    embedder = novelty.Embedder()
    parts, data_info = build_data(embedder)
    how = "from the cache" if data_info["from_cache"] else f"embedded in {data_info['seconds']} s"
    say(
        f"data: train {len(parts['train'])}, pool {len(parts['pool'])}, eval {len(parts['eval'])} images ({how})"
    )
    train = parts["train"]
    t0 = time.perf_counter()
    champion, champ_warnings = fit_detector(train.x, train.y, train_groups(train))
    # fit_embeddings without ids names the rows "#<position>"
    fit_idx = np.array([int(s[1:]) for s in champion.train_ids_], dtype=np.int64)
    say(f"champion fitted in {time.perf_counter() - t0:.1f} s: {champion!r}")
    bench = Bench(train, parts["pool"], parts["eval"], champion, fit_idx)
    ev = bench.eval
    v = champion.score_embeddings(ev.x)
    before: dict[str, Any] = {
        "accuracy": accuracy(v.predictions or [], ev),
        "flagged": {c: float(v.is_novel[ev.condition == c].mean()) for c in ALL_CONDITIONS},
        "false_alarm_clean": float(v.is_novel[ev.condition == "clean"].mean()),
        "mean_confidence": {c: float(v.probability[ev.condition == c].mean()) for c in ALL_CONDITIONS}
        if v.probability is not None
        else {},
    }
    say(
        f"champion: accuracy {fmt_acc(before['accuracy'])}; clean false alarms {before['false_alarm_clean']:.3f}"
    )

    budgets = BUDGETS if not quick else (25, 50)
    # tuning hybrid on seeds apart from the reported ones
    tuning: list[dict[str, Any]] = []
    grid = [(w, o) for w in TUNE_WEIGHTS for o in TUNE_OVERSAMPLE] if not quick else [((0.75, 0.25), 4.0)]
    for (wn, wu), over in grid:
        accs = []
        for s in tune_seeds:
            idx = pool_indices(len(bench.pool), s)
            r = bench.one_turn(
                idx, "hybrid", TUNE_BUDGET, s, weights={"novelty": wn, "uncertainty": wu}, oversample=over
            )
            accs.append(r["accuracy"]["overall"])
        tuning.append({"weights": {"novelty": wn, "uncertainty": wu}, "oversample": over, **mean_std(accs)})
        say(f"tuning hybrid w_n={wn} w_u={wu} oversample={over:g}: {np.mean(accs):.4f}")
    best = max(tuning, key=lambda t: t["mean"])
    hybrid_kw: dict[str, Any] = {"weights": dict(best["weights"]), "oversample": best["oversample"]}
    say(f"hybrid tuned: {hybrid_kw}")

    # one turn: every strategy × budget × seed
    runs: list[dict[str, Any]] = []
    pools_auto = []
    for s in seeds:
        idx = pool_indices(len(bench.pool), s)
        pools_auto.append(auto_accept(as_pool(champion, bench.pool, idx), bench.pool.y[idx]))
        for strategy in STRATEGIES:
            for b in budgets:
                kw = hybrid_kw if strategy == "hybrid" else {}
                r = bench.one_turn(idx, strategy, b, s, **kw)
                runs.append({"seed": s, "strategy": strategy, "budget": b, **r})
            say(
                f"seed {s} {strategy:<11} "
                + " ".join(
                    f"{r['budget']}:{r['accuracy']['overall']:.3f}"
                    for r in runs
                    if r["seed"] == s and r["strategy"] == strategy
                )
            )
    summary: dict[str, dict[int, Any]] = {}
    for strategy in STRATEGIES:
        summary[strategy] = {}
        for b in budgets:
            rs = [r for r in runs if r["strategy"] == strategy and r["budget"] == b]
            summary[strategy][b] = {
                "accuracy": {
                    k: mean_std([r["accuracy"][k] for r in rs]) for k in (*ALL_CONDITIONS, "overall")
                },
                "preannotation_right": mean_std([r["preannotation_right"] for r in rs]),
                "n_selected": mean_std([r["n_selected"] for r in rs]),
                "selected_conditions": {
                    c: float(np.mean([r["selected_conditions"][c] for r in rs])) for c in ALL_CONDITIONS
                },
            }
    random_curve = {0: before["accuracy"]["overall"]}
    random_curve.update({b: summary["random"][b]["accuracy"]["overall"]["mean"] for b in budgets})
    target = summary["hybrid"][50]["accuracy"]["overall"]["mean"]
    need = labels_to_match(random_curve, target)
    per_seed_need = []
    for s in seeds:
        curve = {0: before["accuracy"]["overall"]}
        curve.update(
            {
                r["budget"]: r["accuracy"]["overall"]
                for r in runs
                if r["seed"] == s and r["strategy"] == "random"
            }
        )
        tgt = next(
            r["accuracy"]["overall"]
            for r in runs
            if r["seed"] == s and r["strategy"] == "hybrid" and r["budget"] == 50
        )
        per_seed_need.append(labels_to_match(curve, tgt))
    say(f"random needs {need} labels to match hybrid@50 ({target:.4f}); per seed {per_seed_need}")

    # five turns of hybrid, the whole detector refitted each turn
    turns: list[dict[str, Any]] = []
    for s in seeds:
        idx = pool_indices(len(bench.pool), s)
        labelled = np.zeros(0, dtype=np.int64)
        det = champion
        for turn in range(1, TURNS + 1):
            avail = np.setdiff1d(idx, labelled)
            pool = as_pool(det, bench.pool, avail)
            auto = auto_accept(pool, bench.pool.y[avail])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from novelty.flywheel.selection import select

                sel = select(
                    pool, TURN_BUDGET, "hybrid", seed=s, **{"measure": "least-confidence", **hybrid_kw}
                )
            chosen = avail[np.asarray(sel.positions, dtype=np.int64)]
            pre = np.asarray(pool.predictions, dtype=object)[sel.positions] == LABELS[bench.pool.y[chosen]]
            labelled = np.concatenate([labelled, chosen])
            new = bench.pool.take(labelled)
            t1 = time.perf_counter()
            det, _ = fit_detector(
                np.concatenate([train.x, new.x]),
                np.concatenate([train.y, new.y]),
                train_groups(train) + label_groups(new),
            )
            fit_s = time.perf_counter() - t1
            vv = det.score_embeddings(ev.x)
            turns.append(
                {
                    "seed": s,
                    "turn": turn,
                    "labels": int(labelled.shape[0]),
                    "accuracy": accuracy(vv.predictions or [], ev),
                    "false_alarm_clean": float(vv.is_novel[ev.condition == "clean"].mean()),
                    "flagged": {c: float(vv.is_novel[ev.condition == c].mean()) for c in ALL_CONDITIONS},
                    "preannotation_right": float(pre.mean()),
                    "auto_accept": auto,
                    "selected_conditions": {
                        c: int((bench.pool.condition[chosen] == c).sum()) for c in ALL_CONDITIONS
                    },
                    "fit_seconds": round(fit_s, 2),
                }
            )
        say(
            f"turns seed {s}: "
            + " ".join(
                f"{t['accuracy']['overall']:.3f}/{t['false_alarm_clean']:.3f}"
                for t in turns
                if t["seed"] == s
            )
        )
    turn_summary = []
    for turn in range(1, TURNS + 1):
        ts = [t for t in turns if t["turn"] == turn]
        turn_summary.append(
            {
                "turn": turn,
                "labels": ts[0]["labels"],
                "accuracy": {
                    k: mean_std([t["accuracy"][k] for t in ts]) for k in (*ALL_CONDITIONS, "overall")
                },
                "false_alarm_clean": mean_std([t["false_alarm_clean"] for t in ts]),
                "flagged": {c: mean_std([t["flagged"][c] for t in ts]) for c in ALL_CONDITIONS},
                "preannotation_right": mean_std([t["preannotation_right"] for t in ts]),
                "auto_share": mean_std([t["auto_accept"]["share_auto"] for t in ts]),
                "auto_accuracy": mean_std(
                    [
                        t["auto_accept"]["accuracy_auto"]
                        for t in ts
                        if t["auto_accept"]["accuracy_auto"] is not None
                    ]
                ),
            }
        )
    total = time.perf_counter() - t_start
    return {
        "benchmark": "flywheel",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "command": command_line(quick),
        "machine": {**machine_description(), "torch_threads": torch.get_num_threads()},
        "seconds": round(total, 1),
        "data": {
            **data_info,
            "train": len(train),
            "pool": len(bench.pool),
            "pool_per_seed": int(round(POOL_SHARE * len(bench.pool))),
            "eval": len(ev),
            "eval_per_condition": {c: int((ev.condition == c).sum()) for c in ALL_CONDITIONS},
            "severities": list(SEVERITIES),
        },
        "config": {
            "alpha": ALPHA,
            "detector": "kNN + condition head (demo parameters), calibration_fraction 1/3 by block",
            "budgets": list(budgets),
            "seeds": list(seeds),
            "tune_seeds": list(tune_seeds),
            "tune_budget": TUNE_BUDGET,
            "turns": TURNS,
            "turn_budget": TURN_BUDGET,
            "auto_accept": {"p_value_at_least": ALPHA, "probability_at_least": AUTO_PROBABILITY},
            "refit_one_turn": "head alone (champion's head parameters) on the champion's fitting rows + labels",
            "refit_turns": "whole detector (fit_embeddings, champion's parameters) on train + every label so far",
        },
        "champion": {
            "repr": repr(champion),
            "calibration_images": champion.calibrator_.n,
            "warnings": champ_warnings,
            **before,
        },
        "tuning": tuning,
        "hybrid": hybrid_kw,
        "summary": {s: {str(b): v for b, v in d.items()} for s, d in summary.items()},
        "random_labels_to_match_hybrid_50": need,
        "random_labels_to_match_hybrid_50_per_seed": per_seed_need,
        "hybrid_50_overall": target,
        "auto_accept_champion": {
            "per_seed": pools_auto,
            "share": mean_std([a["share_auto"] for a in pools_auto]),
            "accuracy": mean_std([a["accuracy_auto"] for a in pools_auto if a["accuracy_auto"] is not None]),
        },
        "turn_summary": turn_summary,
        "runs": runs,
        "turns": turns,
    }


def command_line(quick: bool) -> str:
    import os

    threads = os.environ.get("OMP_NUM_THREADS")
    env = f"OMP_NUM_THREADS={threads} " if threads else ""
    return env + ".venv/bin/python -m benchmarks.flywheel" + (" --quick" if quick else "")


# --- report -----------------------------------------------------------------------------------------------
def fmt_acc(acc: dict[str, float]) -> str:
    return " ".join(f"{k} {acc[k]:.3f}" for k in (*ALL_CONDITIONS, "overall"))


def _ms(d: dict[str, float], digits: int = 3) -> str:
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def _match_text(curve: dict[int, float], target: float, top: int) -> str:
    if target <= curve[0]:
        return "0 (not above the champion)"
    x = labels_to_match(curve, target)
    return f"> {top}" if x is None else f"{x:.0f}"


def _same_as_diversity(r: dict[str, Any]) -> str:
    """A note for the budgets at which hybrid's accuracy equals diversity's on every seed."""
    same = []
    for b in r["summary"]["hybrid"]:
        acc = {
            s: sorted(
                (x["seed"], x["accuracy"]["overall"])
                for x in r["runs"]
                if x["strategy"] == s and str(x["budget"]) == b
            )
            for s in ("hybrid", "diversity")
        }
        if acc["hybrid"] == acc["diversity"]:
            same.append(b)
    if not same:
        return ""
    return (
        f" At {' and '.join(same)} labels hybrid's accuracy equals diversity's on every seed: they chose the same "
        "images (k-center's picks from the training coverage all lie among hybrid's oversample × budget most novel "
        "candidates)."
    )


def to_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Flywheel benchmark: selection under a budget on the windshield scenario",
        "",
        f"Command: `{r['command']}` · {r['date']} · {r['seconds']:.0f} s in all "
        f"(embedding {'from the cache' if r['data']['from_cache'] else str(r['data']['seconds']) + ' s'}) · "
        f"{m['cpu']}, {m['cpus_usable']} usable CPUs, torch {m['torch']} with {m['torch_threads']} threads, "
        f"Python {m['python']}." + (f" {r['note']}" if r.get("note") else ""),
        "",
        f"Data: champion fitted on {r['data']['train']} clean train frames (dry + wet); pool of "
        f"{r['data']['pool']} production images ({r['data']['pool_per_seed']} drawn per seed): test frames under "
        f"tunnel/ice/fog/snow at severities {r['data']['severities']} and clean; evaluation set of "
        f"{r['data']['eval']} images from the calibration part's frames "
        f"({', '.join(f'{c} {n}' for c, n in r['data']['eval_per_condition'].items())}). Oracle labels. "
        f"Overall accuracy = the mean over the five conditions. One turn refits the head alone; the five turns refit "
        f"the whole detector (see the docstring of `benchmarks/flywheel.py`).",
        "",
        "## Before: the champion",
        "",
        "| condition | head accuracy | mean confidence | flagged at alpha |",
        "|---|---|---|---|",
    ]
    ch = r["champion"]
    for c in ALL_CONDITIONS:
        lines.append(
            f"| {c} | {ch['accuracy'][c]:.3f} | {ch['mean_confidence'].get(c, float('nan')):.2f} | "
            f"{ch['flagged'][c]:.3f} |"
        )
    lines += [
        f"| **overall** | **{ch['accuracy']['overall']:.3f}** | | |",
        "",
        f"False-alarm rate at alpha = {r['config']['alpha']} on the clean evaluation frames: "
        f"{ch['false_alarm_clean']:.3f} (calibrated on {ch['calibration_images']} frames"
        + (f"; warning: {ch['warnings'][0]}" if ch["warnings"] else "")
        + "). The one-turn runs keep the champion's index and calibration, so this rate holds for them.",
        "",
        f"## One turn: head accuracy after labelling the selection (mean ± std over seeds {r['config']['seeds']})",
        "",
        "| strategy | labels | overall | clean | tunnel | ice | fog | snow | pre-annotation right |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, per_b in r["summary"].items():
        for b, v in per_b.items():
            a = v["accuracy"]
            lines.append(
                f"| {s} | {b} | {_ms(a['overall'])} | "
                + " | ".join(f"{a[c]['mean']:.3f}" for c in ALL_CONDITIONS)
                + f" | {v['preannotation_right']['mean']:.2f} |"
            )
    need = r["random_labels_to_match_hybrid_50"]
    top = max(int(b) for b in r["summary"]["random"])
    curve = {0: ch["accuracy"]["overall"]}
    curve.update({int(b): v["accuracy"]["overall"]["mean"] for b, v in r["summary"]["random"].items()})
    lines += [
        "",
        f"**Labels `random` needs to reach hybrid@50 ({r['hybrid_50_overall']:.3f})**: "
        + (
            f"{need:.0f}"
            if need is not None
            else f"more than {top} (not reached within the budgets measured)"
        )
        + " (linear interpolation of random's mean accuracy between budgets); per seed: "
        + ", ".join(
            "> " + str(top) if x is None else f"{x:.0f}"
            for x in r["random_labels_to_match_hybrid_50_per_seed"]
        )
        + ".",
        "",
        "Labels `random` needs to reach each strategy's mean accuracy at 50 labels: "
        + "; ".join(
            f"{s} {per_b['50']['accuracy']['overall']['mean']:.3f} → "
            + _match_text(curve, per_b["50"]["accuracy"]["overall"]["mean"], top)
            for s, per_b in r["summary"].items()
            if s != "random" and "50" in per_b
        )
        + "."
        + _same_as_diversity(r),
        "",
        "What each strategy picked at 50 labels (mean count per condition):",
        "",
        "| strategy | " + " | ".join(ALL_CONDITIONS) + " |",
        "|---|" + "---|" * len(ALL_CONDITIONS),
    ]
    for s, per_b in r["summary"].items():
        if "50" in per_b:
            sc = per_b["50"]["selected_conditions"]
            lines.append(f"| {s} | " + " | ".join(f"{sc[c]:.1f}" for c in ALL_CONDITIONS) + " |")
    lines += [
        "",
        f"## Hybrid's weights, tuned on seeds {r['config']['tune_seeds']} (budget {r['config']['tune_budget']})",
        "",
        "| w_novelty | w_uncertainty | oversample | overall accuracy |",
        "|---|---|---|---|",
    ]
    for t in r["tuning"]:
        lines.append(
            f"| {t['weights']['novelty']} | {t['weights']['uncertainty']} | {t['oversample']:g} | {_ms(t)} |"
        )
    lines += [
        "",
        f"Chosen: {r['hybrid']} (used on the reported seeds).",
        "",
        f"## Five turns of hybrid, {r['config']['turn_budget']} labels each, the detector refitted every turn",
        "",
        "| turn | labels | overall | clean | tunnel | ice | fog | snow | false alarms (clean) | "
        "flagged (4 conditions) | pre-annotation right | auto-accepted share | auto-accepted accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| 0 | 0 | {ch['accuracy']['overall']:.3f} | "
        + " | ".join(f"{ch['accuracy'][c]:.3f}" for c in ALL_CONDITIONS)
        + f" | {ch['false_alarm_clean']:.3f} | {np.mean([ch['flagged'][c] for c in CONDITIONS]):.3f} | | "
        f"{r['auto_accept_champion']['share']['mean']:.3f} | {r['auto_accept_champion']['accuracy']['mean']:.3f} |",
    ]
    for t in r["turn_summary"]:
        a = t["accuracy"]
        lines.append(
            f"| {t['turn']} | {t['labels']} | {_ms(a['overall'])} | "
            + " | ".join(f"{a[c]['mean']:.3f}" for c in ALL_CONDITIONS)
            + f" | {_ms(t['false_alarm_clean'])} | "
            f"{np.mean([t['flagged'][c]['mean'] for c in CONDITIONS]):.3f} | {t['preannotation_right']['mean']:.2f} | "
            f"{t['auto_share']['mean']:.3f} | {_ms(t['auto_accuracy'])} |"
        )
    lines += [
        "",
        "Pre-annotation right: the share of the turn's selected images on which the head that selected them "
        "already answered right. Auto-accepted: the share of the turn's pool with p ≥ alpha and head "
        f"probability ≥ {r['config']['auto_accept']['probability_at_least']} (accepted without a human), and how "
        "many of those answers were right. The auto-accepted share and accuracy on the row of turn *t* are "
        "those of the detector of turn *t − 1* (the one that selected), on the pool it selected from. Flagged: the "
        "share of the evaluation frames under tunnel, ice, fog and snow with p < alpha after the turn's refit.",
        "",
    ]
    return "\n".join(lines)


# --- pool mixes: the share of condition frames in the pool ------------------------------------------------
POOL_MIXES = (0.1, 0.4, 0.86)
MIX_BUDGETS = (25, 50, 100)
MIX_RANDOM_EXTRA = 200  # random alone also at this budget, so "labels random needs" can reach past 100
MIX_TUNE_OVERSAMPLE = (2.0, 4.0, 8.0)
MIX_TUNE_FLAGGED = (1.0, 2.0)
# thresholds on the share of flagged images; listed middle first, as a tie (the three mixes pin a threshold only
# to the interval between their flagged shares) goes to the candidate listed first
MIX_TUNE_THRESHOLD = (0.5, 0.25, 0.75)


@dataclass(frozen=True)
class Policy:
    """How a pool is turned into a call of :func:`~novelty.flywheel.selection.select`, from what the flywheel
    knows at selection time (the pool's scores; no label, no condition).

    ``fixed``: ``strategy`` with ``kw``; ``flagged``: hybrid (novelty rank) whose k-center step chooses among the
    ``param × n_flagged`` most novel images (``oversample = max(1, param × n_flagged / budget)``; ``n_flagged``:
    the pool's images with p < alpha); ``rule``: ``diversity`` when the share of flagged images in the pool is at
    least ``param``, else ``novelty``."""

    name: str
    kind: str = "fixed"
    strategy: str = ""
    kw: tuple[tuple[str, Any], ...] = ()
    param: float = 0.0

    def choose(self, pool: Any, budget: int) -> tuple[str, dict[str, Any]]:
        if self.kind == "flagged":
            n_flagged = int(np.asarray(pool.is_novel).sum())
            return "hybrid", {"oversample": max(1.0, self.param * n_flagged / budget)}
        if self.kind == "rule":
            return ("diversity", {}) if float(np.mean(pool.is_novel)) >= self.param else ("novelty", {})
        return self.strategy, dict(self.kw)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "strategy": self.strategy,
            "kw": dict(self.kw),
            "param": self.param,
        }


MIX_BASE = (
    Policy("random", strategy="random"),
    Policy("novelty", strategy="novelty"),
    Policy("uncertainty (least-confidence)", strategy="uncertainty", kw=(("measure", "least-confidence"),)),
    Policy("uncertainty (competence)", strategy="uncertainty", kw=(("measure", "competence"),)),
    Policy("diversity", strategy="diversity"),
    Policy("hybrid", strategy="hybrid"),  # the library's defaults: weights 1/0, oversample 8
)


def hybrid_policy(oversample: float) -> Policy:
    return Policy(f"hybrid (oversample {oversample:g})", strategy="hybrid", kw=(("oversample", oversample),))


def flagged_policy(c: float) -> Policy:
    return Policy(f"hybrid (oversample {c:g} × flagged / budget)", kind="flagged", param=c)


def rule_policy(threshold: float) -> Policy:
    return Policy(
        f"rule: diversity if flagged share ≥ {threshold:g}, else novelty", kind="rule", param=threshold
    )


MIX_TUNE = (
    MIX_BASE[1],
    MIX_BASE[4],
    *(hybrid_policy(o) for o in MIX_TUNE_OVERSAMPLE),
    *(flagged_policy(c) for c in MIX_TUNE_FLAGGED),
    *(rule_policy(t) for t in MIX_TUNE_THRESHOLD),
)


def mix_indices(part: Part, seed: int, share: float) -> np.ndarray:
    """One seed's pool with about ``share`` condition images: the seed's pool draw (:func:`pool_indices`), all of
    its clean images and the first of its condition images in a random order of the seed (so the pools of one
    seed are nested: a smaller share is a subset of a larger one). A share above the draw's own keeps it all."""
    base = pool_indices(len(part), seed)
    clean = base[part.condition[base] == "clean"]
    cond = base[part.condition[base] != "clean"]
    want = int(round(share / (1.0 - share) * clean.shape[0])) if share < 1 else cond.shape[0]
    order = np.random.default_rng([seed, 11]).permutation(cond.shape[0])
    return np.sort(np.concatenate([clean, cond[order[: min(want, cond.shape[0])]]]))


# The head refits run in worker processes (spawned: each one gets the parts once, then only the chosen rows).
_WORKER: dict[str, Any] = {}


def _worker_init(base: Part, pool: Part, ev: Part, params: dict[str, Any], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    _WORKER.update(base=base, pool=pool, eval=ev, params=params)


def _refit_eval(chosen: np.ndarray) -> dict[str, float]:
    w = _WORKER
    head = refit_head_on(w["base"], w["pool"], chosen, w["params"])
    return accuracy(head.predict(w["eval"].x), w["eval"])


class Refits:
    """Head refits keyed by the labelled set (sorted pool rows): a set two policies both choose is fitted once."""

    def __init__(self, jobs: int, base: Part, pool: Part, ev: Part, params: dict[str, Any]) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.cache: dict[bytes, Any] = {}
        args = (base, pool, ev, params, 1)
        self.ex: ProcessPoolExecutor | None = None
        if jobs > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            self.ex = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=args)
        else:
            _worker_init(*args)

    def submit(self, chosen: np.ndarray) -> Any:
        from concurrent.futures import Future

        key = chosen.tobytes()
        if key not in self.cache:
            if self.ex is not None:
                self.cache[key] = self.ex.submit(_refit_eval, chosen)
            else:
                f: Future[dict[str, float]] = Future()
                f.set_result(_refit_eval(chosen))
                self.cache[key] = f
        return self.cache[key]

    @property
    def fitted(self) -> int:
        return len(self.cache)

    def close(self) -> None:
        if self.ex is not None:
            self.ex.shutdown()


def mix_select(
    bench: Bench, pool: Any, pool_idx: np.ndarray, policy: Policy, budget: int, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """The policy's selection: the chosen pool rows (sorted: the labels join the training rows in pool order, so
    the refit depends on the set alone) and what was chosen."""
    from novelty.flywheel.selection import select

    strategy, kw = policy.choose(pool, budget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel = select(pool, budget, strategy, seed=seed, **{"measure": "least-confidence", **kw})
    pos = np.asarray(sel.positions, dtype=np.int64)
    chosen = pool_idx[pos]
    picked = bench.pool.take(chosen)
    champ_pred = np.asarray(pool.predictions, dtype=object)[pos]
    return np.sort(chosen), {
        "strategy": strategy,
        "kw": kw,
        "n_selected": int(chosen.shape[0]),
        "preannotation_right": float(np.mean(champ_pred == LABELS[picked.y])) if len(pos) else None,
        "selected_conditions": {c: int((picked.condition == c).sum()) for c in ALL_CONDITIONS},
    }


def _criterion(per_mix: dict[str, float], best: dict[str, float]) -> dict[str, float]:
    regret = {m: best[m] - a for m, a in per_mix.items()}
    return {"max_regret": max(regret.values()), "mean": float(np.mean(list(per_mix.values())))}


def run_pools(
    mixes: Sequence[float] = POOL_MIXES,
    seeds: Sequence[int] = SEEDS,
    tune_seeds: Sequence[int] = TUNE_SEEDS,
    budgets: Sequence[int] = MIX_BUDGETS,
    jobs: int = 2,
    quick: bool = False,
) -> dict[str, Any]:
    """Every strategy on pools of several condition shares; the tuned candidates for a default (see
    :func:`main`'s ``--pool-mix``)."""
    import torch

    import novelty
    from benchmarks.ood.runner import machine_description
    from novelty.flywheel.selection import DEFAULT_OVERSAMPLE

    t_start = time.perf_counter()
    # one torch thread: the head's many short epochs run several times slower with two on a shared machine
    torch.set_num_threads(1)
    parts, data_info = build_data(novelty.Embedder())
    train = parts["train"]
    t0 = time.perf_counter()
    champion, champ_warnings = fit_detector(train.x, train.y, train_groups(train))
    fit_idx = np.array([int(s[1:]) for s in champion.train_ids_], dtype=np.int64)
    say(f"champion fitted in {time.perf_counter() - t0:.1f} s: {champion!r}")
    bench = Bench(train, parts["pool"], parts["eval"], champion, fit_idx)
    ev = bench.eval
    v = champion.score_embeddings(ev.x)
    champ_acc = accuracy(v.predictions or [], ev)
    refits = Refits(jobs, train.take(fit_idx), bench.pool, ev, champion.head_.get_params())

    pools: dict[tuple[float, int], tuple[np.ndarray, Any]] = {}
    pool_info: list[dict[str, Any]] = []
    for m in mixes:
        for s in (*tune_seeds, *seeds):
            idx = mix_indices(bench.pool, s, m)
            pool = as_pool(champion, bench.pool, idx)
            pools[(m, s)] = (idx, pool)
            cond = bench.pool.condition[idx]
            pool_info.append(
                {
                    "mix": m,
                    "seed": s,
                    "n": int(idx.shape[0]),
                    "condition_share": float((cond != "clean").mean()),
                    "flagged_share": float(np.mean(pool.is_novel)),
                    "flagged": int(np.sum(pool.is_novel)),
                    "flagged_share_condition": float(np.mean(pool.is_novel[cond != "clean"]))
                    if (cond != "clean").any()
                    else None,
                    "flagged_share_clean": float(np.mean(pool.is_novel[cond == "clean"])),
                }
            )
        say(
            f"mix {m}: pools "
            + ", ".join(
                f"{p['n']} ({p['condition_share']:.2f} condition, {p['flagged_share']:.2f} flagged)"
                for p in pool_info
                if p["mix"] == m and p["seed"] in seeds
            )
        )

    pending: list[tuple[dict[str, Any], Any]] = []

    def queue(phase: str, policy: Policy, m: float, s: int, b: int) -> None:
        idx, pool = pools[(m, s)]
        chosen, info = mix_select(bench, pool, idx, policy, b, s)
        rec = {"phase": phase, "policy": policy.name, "mix": m, "seed": s, "budget": b, **info}
        pending.append((rec, refits.submit(chosen)))

    tune_budget = TUNE_BUDGET if TUNE_BUDGET in budgets else budgets[len(budgets) // 2]
    for policy in MIX_TUNE:
        for m in mixes:
            for s in tune_seeds:
                queue("tune", policy, m, s, tune_budget)
    say(f"tuning queued: {len(pending)} selections, {refits.fitted} refits")
    for policy in MIX_BASE:
        for m in mixes:
            for s in seeds:
                for b in (*budgets, MIX_RANDOM_EXTRA) if policy.name == "random" else budgets:
                    queue("report", policy, m, s, b)
    say(f"report queued: {len(pending)} selections, {refits.fitted} refits")

    def collect(phase: str) -> list[dict[str, Any]]:
        out = []
        done = 0
        for rec, fut in pending:
            if rec["phase"] == phase and "accuracy" not in rec:
                rec["accuracy"] = fut.result()
                done += 1
                if done % 25 == 0:
                    say(f"{phase}: {done} results")
            if rec["phase"] == phase:
                out.append(rec)
        return out

    # tuning on the tuning seeds at one budget: per family the candidate of least worst-mix regret
    tune_runs = collect("tune")
    tuning: list[dict[str, Any]] = []
    for policy in MIX_TUNE:
        per_mix = {
            str(m): mean_std(
                [r["accuracy"]["overall"] for r in tune_runs if r["policy"] == policy.name and r["mix"] == m]
            )
            for m in mixes
        }
        tuning.append({**policy.describe(), "per_mix": per_mix})
    best = {str(m): max(t["per_mix"][str(m)]["mean"] for t in tuning) for m in mixes}
    for t in tuning:
        t.update(_criterion({m: v["mean"] for m, v in t["per_mix"].items()}, best))

    def rank(t: dict[str, Any]) -> tuple[float, float]:
        return (round(t["max_regret"], 6), -t["mean"])

    by_name = {p.name: p for p in MIX_TUNE}
    families = {
        "hybrid oversample": [hybrid_policy(o).name for o in MIX_TUNE_OVERSAMPLE],
        "flagged": [flagged_policy(c).name for c in MIX_TUNE_FLAGGED],
        "rule": [rule_policy(x).name for x in MIX_TUNE_THRESHOLD],
    }
    chosen_family = {
        fam: min((t for t in tuning if t["name"] in names), key=rank)["name"]
        for fam, names in families.items()
    }
    default_name = min(tuning, key=rank)["name"]
    say(f"tuned: {chosen_family}; least worst-mix regret overall: {default_name}")
    extra = [by_name[n] for n in chosen_family.values() if n not in {p.name for p in MIX_BASE}]
    if hybrid_policy(DEFAULT_OVERSAMPLE).name in [p.name for p in extra]:
        extra = [p for p in extra if p.name != hybrid_policy(DEFAULT_OVERSAMPLE).name]
    for policy in extra:
        for m in mixes:
            for s in seeds:
                for b in budgets:
                    queue("report", policy, m, s, b)
    report_policies = [*MIX_BASE, *extra]
    runs = collect("report")
    say(f"report: {len(runs)} selections, {refits.fitted} refits in all")
    refits.close()

    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for policy in report_policies:
        summary[policy.name] = {}
        for m in mixes:
            per_b: dict[str, Any] = {}
            for b in (*budgets, MIX_RANDOM_EXTRA) if policy.name == "random" else budgets:
                rs = [r for r in runs if r["policy"] == policy.name and r["mix"] == m and r["budget"] == b]
                per_b[str(b)] = {
                    "accuracy": {
                        k: mean_std([r["accuracy"][k] for r in rs]) for k in (*ALL_CONDITIONS, "overall")
                    },
                    "n_selected": mean_std([r["n_selected"] for r in rs]),
                    "preannotation_right": mean_std(
                        [r["preannotation_right"] for r in rs if r["preannotation_right"] is not None]
                    ),
                    "selected_conditions": {
                        c: float(np.mean([r["selected_conditions"][c] for r in rs])) for c in ALL_CONDITIONS
                    },
                    "strategies": sorted({r["strategy"] for r in rs}),
                }
            summary[policy.name][str(m)] = per_b
    # labels random needs to match each cell (random's mean curve of that mix, 0 labels = the champion)
    random_need: dict[str, dict[str, dict[str, Any]]] = {}
    for m in mixes:
        curve = {0: champ_acc["overall"]}
        curve.update({int(k): c["accuracy"]["overall"]["mean"] for k, c in summary["random"][str(m)].items()})
        for name, by_mix in summary.items():
            for key, cell in by_mix[str(m)].items():
                tgt = cell["accuracy"]["overall"]["mean"]
                x = labels_to_match(curve, tgt)
                random_need.setdefault(name, {}).setdefault(str(m), {})[key] = {
                    "labels": 0.0 if tgt <= curve[0] else x,
                    "beyond": x is None and tgt > curve[0],
                }
    wins = {
        name: all(
            summary[name][str(m)][str(b)]["accuracy"]["overall"]["mean"]
            >= max(summary[o][str(m)][str(b)]["accuracy"]["overall"]["mean"] for o in summary) - 1e-12
            for m in mixes
            for b in budgets
        )
        for name in summary
    }
    total = time.perf_counter() - t_start
    cmd = command_line(quick).replace(
        "benchmarks.flywheel",
        f"benchmarks.flywheel --pool-mix {','.join(f'{m:g}' for m in mixes)} --jobs {jobs}",
    )
    return {
        "benchmark": "flywheel-pools",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "command": cmd,
        "machine": {
            **machine_description(),
            "torch_threads_refit": 1,
            "jobs": jobs,
            "cpu_flags": " ".join(cpu_flags(simd_only=False)),
        },
        "seconds": round(total, 1),
        "data": {**data_info, "pool": len(bench.pool), "eval": len(ev)},
        "config": {
            "mixes": list(mixes),
            "budgets": list(budgets),
            "random_extra_budget": MIX_RANDOM_EXTRA,
            "seeds": list(seeds),
            "tune_seeds": list(tune_seeds),
            "tune_budget": tune_budget,
            "alpha": ALPHA,
            "criterion": "least worst-mix regret (best mean accuracy among the tuned candidates on that mix minus "
            "the candidate's), ties by the mean over mixes",
            "refit": "head alone (champion's head parameters) on the champion's fitting rows + the labelled "
            "selection in pool order",
        },
        "champion": {"accuracy": champ_acc, "warnings": champ_warnings},
        "pools": pool_info,
        "tuning": tuning,
        "tuned": chosen_family,
        "default": default_name,
        "policies": [p.describe() for p in report_policies],
        "summary": summary,
        "random_needs": random_need,
        "best_everywhere": [n for n, w in wins.items() if w],
        "refits": refits.fitted,
        "runs": [{k: v for k, v in r.items()} for r in tune_runs + runs],
    }


def _need_text(n: dict[str, Any], top: int) -> str:
    if n["beyond"]:
        return f"> {top}"
    return f"{n['labels']:.0f}"


def pools_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    cfg = r["config"]
    mixes = [str(x) for x in cfg["mixes"]]
    budgets = [str(b) for b in cfg["budgets"]]
    top = cfg["random_extra_budget"]
    seeds = set(cfg["seeds"])
    lines = [
        "# Flywheel benchmark: which strategy on pools of more or fewer condition frames",
        "",
        f"Command: `{r['command']}` · {r['date']} · {r['seconds']:.0f} s in all "
        f"({r['refits']} head refits; embeddings "
        f"{'from the cache' if r['data']['from_cache'] else 'made in ' + str(r['data']['seconds']) + ' s'}) · "
        f"{m['cpu']}, {m['cpus_usable']} usable CPUs, {m['jobs']} refit processes with "
        f"{m['torch_threads_refit']} torch thread each, torch {m['torch']}, Python {m['python']}.",
        "",
        f"CPU flags: `{m['cpu_flags']}`",
        "",
        "Protocol as in `flywheel.md` (one turn: select, oracle labels, the champion's head refitted on its own "
        "fitting rows plus the labels; overall = mean head accuracy over clean, tunnel, ice, fog, snow on the "
        f"evaluation set), except the pool: per seed, the seed's {POOL_SHARE:.0%} draw of the production images "
        "keeps all its clean images and only a random share of its condition images (tunnel/ice/fog/snow, "
        "severities 1, 3, 5; nested: the smaller mixes of a seed are subsets of the larger). The labelled images "
        "join the training rows in pool order. Mean ± sd over seeds "
        f"{', '.join(map(str, cfg['seeds']))}; candidates tuned on seeds {', '.join(map(str, cfg['tune_seeds']))} "
        f"at {cfg['tune_budget']} labels. Champion: overall {r['champion']['accuracy']['overall']:.3f}.",
        "",
        "| mix (target condition share) | pool images | condition share | flagged share (p < alpha) | "
        "flagged among condition / clean images |",
        "|---|---|---|---|---|",
    ]
    for mx in mixes:
        ps = [p for p in r["pools"] if str(p["mix"]) == mx and p["seed"] in seeds]
        fc = [p["flagged_share_condition"] for p in ps if p["flagged_share_condition"] is not None]
        lines.append(
            f"| {mx} | {np.mean([p['n'] for p in ps]):.0f} | {np.mean([p['condition_share'] for p in ps]):.3f} | "
            f"{np.mean([p['flagged_share'] for p in ps]):.3f} (seeds: "
            + ", ".join(f"{p['flagged_share']:.2f}" for p in ps)
            + f") | {np.mean(fc):.3f} / {np.mean([p['flagged_share_clean'] for p in ps]):.3f} |"
        )
    lines += [
        "",
        "## Overall accuracy after one turn, and the labels `random` needs to match it",
        "",
        "Each cell: mean ± sd over the seeds (→ labels `random` needs to reach that mean on the same mix, "
        f"interpolating its mean accuracy between 0 (the champion), {', '.join(budgets)} and {top} labels). "
        "**Bold**: the best mean of the column.",
        "",
    ]
    summ = r["summary"]
    need = r["random_needs"]
    for mx in mixes:
        lines += [f"### Mix {mx}", "", "| strategy | " + " | ".join(f"{b} labels" for b in budgets) + " |"]
        lines.append("|---|" + "---|" * len(budgets))
        best = {b: max(summ[n][mx][b]["accuracy"]["overall"]["mean"] for n in summ) for b in budgets}
        for name in summ:
            cells = []
            for b in budgets:
                a = summ[name][mx][b]["accuracy"]["overall"]
                txt = _ms(a)
                if a["mean"] >= best[b] - 1e-12:
                    txt = f"**{txt}**"
                cells.append(f"{txt} (→ {_need_text(need[name][mx][b], top)})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        ra = summ["random"][mx][str(top)]["accuracy"]["overall"]
        lines += ["", f"random at {top} labels: {_ms(ra)}.", ""]
    lines += [
        "Strategies equal to the best mean on every mix and budget: "
        + (", ".join(r["best_everywhere"]) if r["best_everywhere"] else "none")
        + ".",
        "",
        f"## Candidates for a default, tuned on seeds {', '.join(map(str, cfg['tune_seeds']))} "
        f"({cfg['tune_budget']} labels)",
        "",
        f"Criterion: {cfg['criterion']}.",
        "",
        "| candidate | " + " | ".join(f"mix {mx}" for mx in mixes) + " | worst-mix regret | mean |",
        "|---|" + "---|" * (len(mixes) + 2),
    ]
    for t in r["tuning"]:
        lines.append(
            f"| {t['name']} | "
            + " | ".join(_ms(t["per_mix"][mx]) for mx in mixes)
            + f" | {t['max_regret']:.3f} | {t['mean']:.3f} |"
        )
    lines += [
        "",
        "Chosen per family: " + "; ".join(f"{k}: {v}" for k, v in r["tuned"].items()) + f". Least worst-mix "
        f"regret of all: **{r['default']}**.",
        "",
    ]
    if "50" in budgets:
        lines += [
            "## Per condition at 50 labels",
            "",
            "| mix | strategy | overall | "
            + " | ".join(ALL_CONDITIONS)
            + " | picked ("
            + "/".join(ALL_CONDITIONS)
            + ") |",
            "|---|---|---|" + "---|" * len(ALL_CONDITIONS) + "---|",
        ]
        for mx in mixes:
            for name in summ:
                v = summ[name][mx]["50"]
                a = v["accuracy"]
                lines.append(
                    f"| {mx} | {name} | {a['overall']['mean']:.3f} | "
                    + " | ".join(f"{a[c]['mean']:.3f}" for c in ALL_CONDITIONS)
                    + " | "
                    + "/".join(f"{v['selected_conditions'][c]:.0f}" for c in ALL_CONDITIONS)
                    + " |"
                )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(RESULTS), help="folder for flywheel.json and flywheel.md")
    ap.add_argument(
        "--quick", action="store_true", help="2 seeds, budgets 25/50, no tuning grid (a smoke run)"
    )
    ap.add_argument(
        "--render", metavar="JSON", help="only write the Markdown of an earlier run's JSON beside it"
    )
    ap.add_argument(
        "--pool-mix",
        metavar="SHARES",
        help="instead: pools of these shares of condition images (e.g. 0.1,0.4,0.86), every strategy and the "
        "tuned candidates for a default → flywheel_pools.json and .md",
    )
    ap.add_argument(
        "--budgets", metavar="B", help=f"with --pool-mix: budgets (default {','.join(map(str, MIX_BUDGETS))})"
    )
    ap.add_argument("--jobs", type=int, default=2, help="with --pool-mix: processes for the head refits")
    args = ap.parse_args(argv)
    if args.render:
        from novelty.fileio import atomic_write_text

        src = Path(args.render)
        doc = json.loads(src.read_text())
        md = pools_markdown(doc) if doc.get("benchmark") == "flywheel-pools" else to_markdown(doc)
        atomic_write_text(src.with_suffix(".md"), md)
        say(f"written {src.with_suffix('.md')}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    seeds = SEEDS if not args.quick else SEEDS[:2]
    tune = TUNE_SEEDS if not args.quick else TUNE_SEEDS[:1]
    if args.pool_mix:
        mixes = tuple(float(x) for x in args.pool_mix.split(","))
        if not all(0 < x < 1 for x in mixes):
            ap.error("--pool-mix: shares must lie between 0 and 1")
        budgets = tuple(int(b) for b in args.budgets.split(",")) if args.budgets else MIX_BUDGETS
        if args.quick and not args.budgets:
            budgets = (25, 50)
        r = run_pools(mixes, seeds, tune, budgets, jobs=max(1, args.jobs), quick=args.quick)
        stem = "flywheel_pools" if not args.quick else "flywheel_pools-quick"
        render = pools_markdown
    else:
        r = run(seeds, tune, quick=args.quick)
        stem = "flywheel" if not args.quick else "flywheel-quick"
        render = to_markdown
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from novelty.fileio import atomic_write_text

    atomic_write_text(out / f"{stem}.json", json.dumps(r, indent=1, default=_json_default) + "\n")
    atomic_write_text(out / f"{stem}.md", render(r))
    say(f"written {out / (stem + '.json')} and {out / (stem + '.md')} ({r['seconds']:.0f} s)")
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


if __name__ == "__main__":
    sys.exit(main())
