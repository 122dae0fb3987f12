"""The windshield story end to end: fit the detector (kNN + autoencoder + condition head) on clean daytime
frames, then measure what happens on held-out clean frames and on the never-seen production conditions.

    python -m novelty.training.windshield --out checkpoints/windshield     # regenerates the shipped detector + metrics

The same functions drive ``novelty demo windshield``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import novelty
from novelty.datasets.windshield import PRODUCTION_CONDITIONS, WindshieldScenario, windshield_scenario
from novelty.detector import NoveltyDetector
from novelty.metrics import auroc

log = logging.getLogger(__name__)

LABELS = ("dry", "wet")
ALPHA = 0.05
SEED = 0


@dataclass
class Embedded:
    """Embeddings of every part of the scenario (one backbone pass, reused by fitting and evaluation)."""

    fit_x: np.ndarray  # train + calibration parts (the detector splits off its calibration blocks itself)
    fit_y: np.ndarray
    fit_groups: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    production: dict[str, tuple[np.ndarray, np.ndarray]]


def embed_scenario(
    scenario: WindshieldScenario, embedder: novelty.Embedder, progress: bool = False
) -> Embedded:
    fit_images = np.concatenate([scenario.train.images, scenario.calibration.images])
    fit_y = np.concatenate([scenario.train.labels, scenario.calibration.labels])
    fit_groups = np.concatenate([scenario.train.groups, scenario.calibration.groups])
    return Embedded(
        fit_x=embedder.embed(fit_images, progress=progress),
        fit_y=fit_y,
        fit_groups=fit_groups,
        test_x=embedder.embed(scenario.test.images, progress=progress),
        test_y=scenario.test.labels,
        production={
            name: (embedder.embed(cs.images, progress=progress), cs.labels)
            for name, cs in scenario.production.items()
        },
    )


def fit_detector(emb: Embedded, detector: NoveltyDetector) -> tuple[NoveltyDetector, float]:
    """Fit index, scorers, calibration (grouped by frame block) and the dry/wet head; returns training time."""
    t0 = time.perf_counter()
    detector.fit_embeddings(emb.fit_x, list(np.array(LABELS)[emb.fit_y]), groups=list(emb.fit_groups))
    return detector, time.perf_counter() - t0


def evaluate(det: NoveltyDetector, emb: Embedded, alpha: float = ALPHA) -> dict[str, Any]:
    """Head accuracy, share flagged and per-scorer AUROC (clean test frames vs each condition)."""
    names = np.array(LABELS)
    clean = det.score_embeddings(emb.test_x)
    out: dict[str, Any] = {}

    def summarise(res: novelty.BatchVerdicts, y: np.ndarray) -> dict[str, Any]:
        pred = np.array(res.predictions)
        correct = pred == names[y]
        trusted = res.trusted
        row = {
            "n": len(res),
            "head_accuracy": float(correct.mean()),
            "head_mean_confidence": float(np.mean(res.probabilities.max(axis=1)))
            if res.probabilities is not None
            else None,
            "flagged": float(res.is_novel.mean()),
            "trusted_share": float(trusted.mean()),
            "accuracy_of_trusted": float(correct[trusted].mean()) if trusted.any() else None,
        }
        return row

    out["clean"] = summarise(clean, emb.test_y)
    for name in PRODUCTION_CONDITIONS:
        x, y = emb.production[name]
        res = det.score_embeddings(x)
        row = summarise(res, y)
        row["auroc"] = {s: auroc(clean.scores[s], res.scores[s]) for s in clean.scores}
        row["auroc"]["combined"] = auroc(clean.score, res.score)
        out[name] = row
    return out


def run(
    *,
    out_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    progress: bool = False,
    seed: int = SEED,
) -> dict[str, Any]:
    """Build the scenario, embed it, fit, evaluate; optionally save the detector and the numbers."""
    t0 = time.perf_counter()
    scenario = windshield_scenario(seed=seed)
    t_data = time.perf_counter() - t0
    embedder = novelty.Embedder()
    t0 = time.perf_counter()
    emb = embed_scenario(scenario, embedder, progress=progress)
    t_embed = time.perf_counter() - t0
    det = NoveltyDetector(scorers=("knn", "autoencoder"), alpha=ALPHA, calibration_fraction=1 / 3, seed=seed)
    det._embedder = embedder  # same backbone object: no second load
    det, t_train = fit_detector(emb, det)
    metrics = evaluate(det, emb)
    summary: dict[str, Any] = {
        "detector": repr(det),
        "seed": seed,
        "alpha": ALPHA,
        "frames": {
            "fit": len(emb.fit_y),
            "calibration": det.calibrator_.n,
            "test": len(emb.test_y),
        },
        "seconds": {
            "scenario": round(t_data, 1),
            "embedding": round(t_embed, 1),
            "training": round(t_train, 1),
        },
        "head": {
            "temperature": det.head_.temperature_ if det.head_ else None,
            "epochs": det.head_.epochs_ if det.head_ else None,
        },
        "metrics": metrics,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
    }
    if out_dir is not None:
        det.save(out_dir)
        summary["saved_to"] = str(out_dir)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(summary, indent=2))
    return summary


def format_story(summary: dict[str, Any]) -> str:
    m = summary["metrics"]
    lines = [
        f"{'condition':<10} {'head acc':>8} {'conf':>6} {'flagged':>8} {'trusted':>8}  AUROC knn / ae / combined",
    ]
    for name in ("clean", *PRODUCTION_CONDITIONS):
        r = m[name]
        au = r.get("auroc")
        au_s = "" if au is None else f"{au['knn']:.3f} / {au['autoencoder']:.3f} / {au['combined']:.3f}"
        lines.append(
            f"{name:<10} {r['head_accuracy']:8.3f} {r['head_mean_confidence'] or 0:6.2f} {r['flagged']:8.3f} "
            f"{r['trusted_share']:8.3f}  {au_s}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate the shipped windshield detector and its metrics.")
    ap.add_argument("--out", default="checkpoints/windshield", help="detector directory to write")
    ap.add_argument("--json", default=None, help="metrics JSON (default: OUT/../windshield_metrics.json)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out.parent / "windshield_metrics.json"
    summary = run(out_dir=out, json_path=json_path, progress=sys.stderr.isatty())
    print(format_story(summary))
    print(f"saved {out} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
