"""Judge each runtime by what the detector does with it: a detector fitted and calibrated with the runtime's own
embeddings, on every scenario of the OOD benchmark, against the same detector on fp32 PyTorch embeddings.

    python -m benchmarks.runtime_quality [--size full] [--runtimes openvino,openvino-int8,openvino-bf16]
                                         [--scenarios NAME,...] [--json out.json] [--md out.md]

Rule (a runtime *passes* when it holds on every scenario):
- AUROC within :data:`AUROC_TOLERANCE` of fp32's, or higher, on every novel set, for both detectors judged
  (the default ``NoveltyDetector()``, kNN; and the benchmark's ``knn + knn-local + autoencoder`` combined);
- false alarms at alpha = 0.05 on the held-out in-distribution images within :data:`FALSE_ALARM_TOLERANCE` of
  fp32's on the same split.

Same images, splits and seeds for every runtime; fp32 embeddings come from the OOD benchmark's cache, every other
runtime's from a cache of its own (an int8 runtime is quantised on each scenario's fitting images). A runtime that
needs CPU flags this machine lacks (bf16: ``avx512_bf16`` or ``amx_bf16``) is reported as not measured, with the
flags seen: without them a bf16 engine falls back to other arithmetic, and its numbers would say nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import novelty
from benchmarks.machine import cpu_flags, cpu_model
from benchmarks.ood.runner import OUR_SCORERS, EmbeddingCache, scenario_embeddings
from benchmarks.ood.scenarios import Scenario, build_scenarios, scenario_names
from novelty.metrics import auroc
from novelty.runtimes import CANDIDATES, RUNTIMES, runtime_info

AUROC_TOLERANCE = 0.005
FALSE_ALARM_TOLERANCE = 0.02
ALPHA = 0.05
#: the detectors judged: name → scorers
DETECTORS: dict[str, tuple[str, ...]] = {"default (knn)": ("knn",), "combined": OUR_SCORERS}


def detector_rows(
    scenario: Scenario, x_fit: np.ndarray, x_in: np.ndarray, x_out: dict[str, np.ndarray]
) -> dict:
    """AUROC per novel set and the false-alarm rate of each judged detector fitted on ``x_fit``."""
    out: dict[str, Any] = {}
    groups = None if scenario.fit.groups is None else list(scenario.fit.groups)
    for name, scorers in DETECTORS.items():
        det = novelty.NoveltyDetector(
            scorers=scorers,
            alpha=ALPHA,
            calibration_fraction=scenario.calibration_fraction,
            seed=scenario.seed,
        ).fit_embeddings(x_fit, groups=groups, ids=[str(i) for i in range(x_fit.shape[0])])
        v_in = det.score_embeddings(x_in)
        out[name] = {
            "false_alarm": float(np.mean(v_in.is_novel)),
            "auroc": {k: float(auroc(v_in.score, det.score_embeddings(x).score)) for k, x in x_out.items()},
        }
    return out


def judge(ref: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """Why ``row`` (one runtime on one scenario) fails against ``ref`` (fp32); empty when it passes."""
    why = []
    for det, r in row.items():
        for k, a in r["auroc"].items():
            if a < ref[det]["auroc"][k] - AUROC_TOLERANCE:
                why.append(f"{det} AUROC {k} {a:.4f} vs {ref[det]['auroc'][k]:.4f}")
        if abs(r["false_alarm"] - ref[det]["false_alarm"]) > FALSE_ALARM_TOLERANCE:
            why.append(f"{det} false alarms {r['false_alarm']:.3f} vs {ref[det]['false_alarm']:.3f}")
    return why


def runtime_quality(
    runtimes: list[str], scenarios: list[Scenario], work: Path, progress: bool = False
) -> dict[str, Any]:
    """Per scenario and runtime: the judged detectors' numbers, the embeddings' cosine to fp32 and the verdict."""
    flags = set(cpu_flags())
    out: dict[str, Any] = {"scenarios": {}, "not_measured": {}}
    names = ["torch", *[r for r in runtimes if r != "torch"]]
    for r in names[1:]:
        need = runtime_info(r).cpu_flags
        if need and not flags & set(need):
            out["not_measured"][r] = (
                f"needs one of the CPU flags {', '.join(need)}; this CPU has {sorted(flags)}"
            )
    names = [r for r in names if r not in out["not_measured"]]
    for scenario in scenarios:
        res: dict[str, Any] = {}
        ref_emb: np.ndarray | None = None
        for name in names:
            emb = novelty.Embedder(device="cpu", runtime=name, threads=None)
            t = time.perf_counter()
            if runtime_info(name).needs_calibration:  # int8: quantised on this scenario's fitting images
                emb.calibrate_runtime(scenario.fit.pool.images(scenario.fit.index))
            # fp32: the OOD benchmark's cache; an int8 runtime is quantised per scenario, so its cache is too
            own = work / (f"{name}-{scenario.name}" if runtime_info(name).needs_calibration else name)
            cache = EmbeddingCache(emb, None if name == "torch" else own, progress=progress)
            x_fit, x_in, x_out = scenario_embeddings(scenario, cache)
            row: dict[str, Any] = {"seconds": time.perf_counter() - t, "embedded": cache.embedded}
            row["detectors"] = detector_rows(scenario, x_fit, x_in, x_out)
            all_emb = np.concatenate([x_fit, x_in, *x_out.values()])
            ref_emb = all_emb if ref_emb is None else ref_emb
            cos = (all_emb * ref_emb).sum(axis=1)
            row["cosine_min"], row["cosine_mean"] = float(cos.min()), float(cos.mean())
            row["fails"] = [] if name == "torch" else judge(res["torch"]["detectors"], row["detectors"])
            res[name] = row
            print(f"  {scenario.name} {name}: {json.dumps(row)}", flush=True)
        out["scenarios"][scenario.name] = res
    out["verdict"] = {
        r: not any(out["scenarios"][s][r]["fails"] for s in out["scenarios"]) for r in names if r != "torch"
    }
    return out


def markdown(q: dict[str, Any]) -> str:
    runtimes = [r for r in next(iter(q["scenarios"].values())) if r != "torch"] if q["scenarios"] else []
    lines = [
        f"| scenario | novel set | {' | '.join(f'fp32 {d}' for d in DETECTORS)} | "
        + " | ".join(f"{r} Δ {d}" for r in runtimes for d in DETECTORS)
        + " |",
        "|---|---|" + "---:|" * (len(DETECTORS) * (1 + len(runtimes))),
    ]
    for s, res in q["scenarios"].items():
        ref = res["torch"]["detectors"]
        sets = list(next(iter(ref.values()))["auroc"])
        for k in [*sets, "false alarms"]:
            cells = []
            for d in DETECTORS:
                cells.append(
                    f"{ref[d]['false_alarm']:.3f}" if k == "false alarms" else f"{ref[d]['auroc'][k]:.4f}"
                )
            for r in runtimes:
                for d in DETECTORS:
                    row = res[r]["detectors"][d]
                    delta = (
                        row["false_alarm"] - ref[d]["false_alarm"]
                        if k == "false alarms"
                        else row["auroc"][k] - ref[d]["auroc"][k]
                    )
                    cells.append(f"{delta:+.4f}")
            lines.append(f"| {s} | {k} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| runtime | cosine to fp32, min / mean (worst scenario) | verdict | why |")
    lines.append("|---|---|---|---|")
    for r in runtimes:
        worst = min(q["scenarios"].values(), key=lambda res: res[r]["cosine_min"])[r]
        fails = [f"{s}: {w}" for s, res in q["scenarios"].items() for w in res[r]["fails"]]
        lines.append(
            f"| {r} | {worst['cosine_min']:.4f} / {worst['cosine_mean']:.4f} | "
            f"{'**passes**' if q['verdict'][r] else 'fails'} | {'; '.join(fails) or '—'} |"
        )
    for r, why in q["not_measured"].items():
        lines.append(f"| {r} | — | not measured | {why} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="full", choices=("full", "small"))
    ap.add_argument("--runtimes", default=",".join([*(n for n in RUNTIMES if n != "torch"), *CANDIDATES]))
    ap.add_argument("--scenarios", default=None, help=f"default: all ({', '.join(scenario_names())})")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    os.environ["NOVELTY_RUNTIME_CANDIDATES"] = "1"  # the runtimes measured and dropped are judged too
    runtimes = [r for r in args.runtimes.split(",") if r]
    for r in runtimes:
        runtime_info(r)  # unknown names fail before anything is embedded
    scenarios = build_scenarios(args.scenarios.split(",") if args.scenarios else None, size=args.size)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runtime-quality-") as work:
        q = runtime_quality(runtimes, scenarios, Path(work), progress=False)
    q["machine"] = {"cpu": cpu_model(), "cpu_flags": cpu_flags()}
    q["size"], q["seconds"] = args.size, time.perf_counter() - t
    q["command"] = "python -m benchmarks.runtime_quality " + " ".join(sys.argv[1:])
    q["rule"] = {
        "auroc_tolerance": AUROC_TOLERANCE,
        "false_alarm_tolerance": FALSE_ALARM_TOLERANCE,
        "alpha": ALPHA,
    }
    md = markdown(q)
    print(md)
    if args.json:
        args.json.write_text(json.dumps(q, indent=2))
    if args.md:
        args.md.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
