"""kNN vs autoencoder vs their combination, AUROC per condition, on the same embeddings.

    python benchmarks/bench_scorers.py [--severities 1 3] [--json out.json]

Windshield scenario (novelty.datasets.windshield): the detector is fitted on clean train + calibration frames
(grouped calibration split), and each scorer's raw score separates the clean held-out test frames from the
same frames under each production condition (tunnel, ice, fog, snow) — at several corruption severities,
since severity 3 is separated perfectly by every scorer. Textile (conformal-clip-data): fit on 700 nominal
images, held-out nominal vs global / local defects, over 3 seeds. Also reports the training time of the
head + autoencoder (embedding excluded) and the share of clean frames flagged at alpha = 0.05.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import novelty
from novelty.datasets import textile_splits
from novelty.datasets.windshield import windshield_scenario
from novelty.metrics import auroc
from novelty.training.windshield import embed_scenario, evaluate, fit_detector

SCORERS = ("knn", "autoencoder", "combined")


def windshield_rows(embedder: novelty.Embedder, severity: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sc = windshield_scenario(severity=severity)
    emb = embed_scenario(sc, embedder)
    det = novelty.NoveltyDetector(scorers=("knn", "autoencoder"), calibration_fraction=1 / 3)
    det, seconds = fit_detector(emb, det)
    m = evaluate(det, emb)
    rows = []
    for cond in ("tunnel", "ice", "fog", "snow"):
        rows.append({"scenario": f"windshield sev {severity}", "condition": cond, **m[cond]["auroc"]})
    extra = {
        "severity": severity,
        "train_seconds": seconds,
        "clean_flagged": m["clean"]["flagged"],
        "clean_head_accuracy": m["clean"]["head_accuracy"],
        "head_accuracy": {c: m[c]["head_accuracy"] for c in ("tunnel", "ice", "fog", "snow")},
        "flagged": {c: m[c]["flagged"] for c in ("tunnel", "ice", "fog", "snow")},
    }
    return rows, extra


def textile_rows(embedder: novelty.Embedder, seeds: int = 3) -> list[dict[str, Any]]:
    sp = textile_splits()
    nominal = embedder.embed(sp.train + sp.test_nominal)
    sets = {"global": embedder.embed(sp.global_), "local": embedder.embed(sp.local)}
    acc: dict[tuple[str, str], list[float]] = {}
    for seed in range(seeds):
        perm = np.random.default_rng(seed).permutation(len(nominal))
        fit, test = nominal[perm[:700]], nominal[perm[700:]]
        det = novelty.NoveltyDetector(scorers=("knn", "autoencoder"), calibration_fraction=0.3, seed=seed)
        det.fit_embeddings(fit)
        ref = det.score_embeddings(test)
        for name, x in sets.items():
            res = det.score_embeddings(x)
            for s in SCORERS:
                a = auroc(ref.score, res.score) if s == "combined" else auroc(ref.scores[s], res.scores[s])
                acc.setdefault((name, s), []).append(a)
    return [
        {
            "scenario": "textile (3 seeds)",
            "condition": f"{name} defects",
            **{s: statistics.mean(acc[(name, s)]) for s in SCORERS},
        }
        for name in sets
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--severities", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    embedder = novelty.Embedder()
    rows: list[dict[str, Any]] = []
    extras = []
    t0 = time.perf_counter()
    for sev in args.severities:
        r, e = windshield_rows(embedder, sev)
        rows += r
        extras.append(e)
    rows += textile_rows(embedder)
    print("| scenario | condition | kNN | autoencoder | combined | best single | combined ≥ best? |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        best = max(r["knn"], r["autoencoder"])
        ok = "yes" if r["combined"] >= best - 1e-9 else f"no ({r['combined'] - best:+.3f})"
        print(
            f"| {r['scenario']} | {r['condition']} | {r['knn']:.3f} | {r['autoencoder']:.3f} | {r['combined']:.3f} "
            f"| {best:.3f} | {ok} |"
        )
    mean = {s: statistics.mean(r[s] for r in rows) for s in SCORERS}
    print(f"| **mean** | | {mean['knn']:.3f} | {mean['autoencoder']:.3f} | {mean['combined']:.3f} | | |")
    for e in extras:
        print(
            f"windshield severity {e['severity']}: head + autoencoder trained in {e['train_seconds']:.1f} s; "
            f"clean frames flagged {e['clean_flagged']:.3f}; head accuracy clean {e['clean_head_accuracy']:.3f}, "
            + ", ".join(f"{c} {a:.3f}" for c, a in e["head_accuracy"].items())
            + "; flagged "
            + ", ".join(f"{c} {a:.3f}" for c, a in e["flagged"].items())
        )
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "windshield": extras, "mean": mean}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
