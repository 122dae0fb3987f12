"""The flywheel benchmark: which images should a human label, under a budget, to fix the windshield head?

    .venv/bin/python -m benchmarks.flywheel          # → benchmarks/results/flywheel.json and flywheel.md

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
    key = f"v{DATA_VERSION}-{embedder.backbone_name}-{embedder.fingerprint[:12]}-{video.stat().st_size}"
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
@dataclass
class Bench:
    train: Part
    pool: Part
    eval: Part
    champion: Any
    fit_idx: np.ndarray  # rows of train the champion's index and head were fitted on

    def refit_head(self, chosen: np.ndarray) -> Any:
        """The champion's head refitted (same parameters) on its own fitting rows plus the labelled pool rows."""
        from novelty.head import ConditionHead

        base = self.train.take(self.fit_idx)
        new = self.pool.take(chosen)
        x = np.concatenate([base.x, new.x])
        y = np.concatenate([base.y, new.y])
        groups = train_groups(base) + label_groups(new)
        return ConditionHead(**self.champion.head_.get_params()).fit(x, list(LABELS[y]), groups=groups)

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(RESULTS), help="folder for flywheel.json and flywheel.md")
    ap.add_argument(
        "--quick", action="store_true", help="2 seeds, budgets 25/50, no tuning grid (a smoke run)"
    )
    ap.add_argument(
        "--render", metavar="JSON", help="only write the Markdown of an earlier run's JSON beside it"
    )
    args = ap.parse_args(argv)
    if args.render:
        from novelty.fileio import atomic_write_text

        src = Path(args.render)
        atomic_write_text(src.with_suffix(".md"), to_markdown(json.loads(src.read_text())))
        say(f"written {src.with_suffix('.md')}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    seeds = SEEDS if not args.quick else SEEDS[:2]
    tune = TUNE_SEEDS if not args.quick else TUNE_SEEDS[:1]
    r = run(seeds, tune, quick=args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "flywheel" if not args.quick else "flywheel-quick"
    from novelty.fileio import atomic_write_text

    atomic_write_text(out / f"{stem}.json", json.dumps(r, indent=1, default=_json_default) + "\n")
    atomic_write_text(out / f"{stem}.md", to_markdown(r))
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
