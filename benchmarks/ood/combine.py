"""How should several scorers be combined? Each rule against the best of its members, on the OOD scenarios.

    python -m benchmarks.ood.combine [--size small|full] [--scenario NAME ...] [--out DIR]

For every scenario the detector is fitted as in the OOD benchmark (``knn``, ``knn-local``, ``autoencoder``, the
scenario's own calibration split), and every set of two or three of its scorers is combined by each rule, all
from the same raw scores and the robust scales fitted on the calibration images (never on novel images):

- ``mean-z`` — the mean of the members' robust z-scores: what :class:`~novelty.calibration.MultiScorerCalibrator`
  does today;
- ``max-z`` — the largest of the members' robust z-scores (a min-p rule on a continuous scale: a strong member is
  never averaged away, a weak one adds only its own tail);
- ``cauchy`` — the Cauchy combination of the members' conformal p-values (Liu & Xie, 2020), continuous beyond
  the calibration range through each member's z-score;
- ``fisher`` — Fisher's combination, ``−2 Σ log p``, of the same p-values;
- ``tail-mean`` — a mean weighted from the calibration images alone: each member's z-score divided by its own
  ``1 − alpha`` quantile on the calibration images, so that every member counts in units of its own alarm
  threshold and a member whose in-distribution tail is heavy (often extreme on ordinary images) counts less.

Each combined score is calibrated like any score (conformal p-values on the calibration images). Printed and
written (``combine.json`` / ``combine.md``): AUROC per novel set for each rule and for the best member, the
worst shortfall against the best member, and the false-alarm rate at ``alpha`` on held-out in-distribution
images. Nothing here changes the library: it measures the candidates before one is chosen.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from benchmarks.ood.runner import (
    OUR_SCORERS,
    EmbeddingCache,
    fit_ours,
    machine_description,
    scenario_embeddings,
)
from benchmarks.ood.scenarios import build_scenarios, scenario_names
from novelty.calibration import ConformalCalibrator
from novelty.embedder import Embedder
from novelty.metrics import auroc, false_alarm_rate
from novelty.weights import DEFAULT_BACKBONE

RULES = ("mean-z", "max-z", "cauchy", "fisher", "tail-mean")


def combine(rule: str, z: np.ndarray, z_cal: np.ndarray, alpha: float) -> np.ndarray:
    """One score per row from the members' robust z-scores ``z`` (members × images); higher = more novel.
    ``z_cal``: the same members' z-scores on the calibration images (the only data a weight may come from)."""
    if rule == "mean-z":
        return z.mean(axis=0)
    if rule == "max-z":
        return z.max(axis=0)
    # a member's upper-tail p under a standard normal on its z: continuous beyond the calibration range
    p = np.clip(stats.norm.sf(z), 1e-300, 1.0 - 1e-16)
    if rule == "cauchy":
        return np.tan((0.5 - p) * np.pi).mean(axis=0)
    if rule == "fisher":
        return (-2.0 * np.log(p)).sum(axis=0)
    if rule == "tail-mean":
        tail = np.maximum(np.quantile(z_cal, 1.0 - alpha, axis=1), 1e-6)
        return (z / tail[:, None]).mean(axis=0)
    raise ValueError(f"unknown rule {rule!r}")


def measure(scenario: Any, cache: EmbeddingCache, alpha: float) -> dict[str, Any]:
    x_all, x_in, x_out = scenario_embeddings(scenario, cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = fit_ours(scenario, x_all, cache.embedder.backbone_name, alpha)
    cal = det.calibrator_
    raw_cal = cal.raw_
    v_in = det.score_embeddings(x_in)
    v_out = {k: det.score_embeddings(v) for k, v in x_out.items()}

    def z_of(names: tuple[str, ...], raw: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack(
            [(np.asarray(raw[n], np.float64) - cal.scales_[n][0]) / cal.scales_[n][1] for n in names]
        )

    rows = []
    for size in (2, 3):
        for members in itertools.combinations(OUR_SCORERS, size):
            best_member = {
                k: max(auroc(v_in.scores[m], v.scores[m]) for m in members) for k, v in v_out.items()
            }
            z_cal = z_of(members, raw_cal)
            for rule in RULES:
                s_cal = combine(rule, z_cal, z_cal, alpha)
                s_in = combine(rule, z_of(members, v_in.scores), z_cal, alpha)
                p_in = ConformalCalibrator().fit(s_cal).p_values(s_in)
                aurocs = {
                    k: auroc(s_in, combine(rule, z_of(members, v.scores), z_cal, alpha))
                    for k, v in v_out.items()
                }
                rows.append(
                    {
                        "members": list(members),
                        "rule": rule,
                        "auroc": aurocs,
                        "best_member": best_member,
                        "shortfall": max(best_member[k] - aurocs[k] for k in aurocs),
                        "false_alarm": false_alarm_rate(p_in, alpha),
                    }
                )
    return {"scenario": scenario.name, "family": scenario.family, "rows": rows}


def to_markdown(run: dict[str, Any]) -> str:
    lines = [
        f"Command: `{run['command']}`; {run['seconds']:.0f} s; CPU flags {' '.join(run['machine']['cpu_flags'])}.",
        "",
        "Worst shortfall against the best member, over every novel set of every scenario (AUROC; negative = the",
        "combination beats its best member everywhere):",
        "",
        "| members | " + " | ".join(RULES) + " |",
        "|---|" + "---|" * len(RULES),
    ]
    sets = sorted(
        {tuple(r["members"]) for s in run["scenarios"] for r in s["rows"]}, key=lambda m: (len(m), m)
    )
    for members in sets:
        cells = []
        for rule in RULES:
            worst = max(
                r["shortfall"]
                for s in run["scenarios"]
                for r in s["rows"]
                if tuple(r["members"]) == members and r["rule"] == rule
            )
            cells.append(f"{worst:+.3f}")
        lines.append(f"| {' + '.join(members)} | " + " | ".join(cells) + " |")
    lines += ["", "Per scenario (all three scorers): AUROC per novel set, and false alarms at alpha:", ""]
    lines += [
        "| scenario | novel set | best member | " + " | ".join(RULES) + " |",
        "|---|---|---|" + "---|" * len(RULES),
    ]
    for s in run["scenarios"]:
        rows = {r["rule"]: r for r in s["rows"] if len(r["members"]) == 3}
        for k in rows["mean-z"]["auroc"]:
            lines.append(
                f"| {s['scenario']} | {k} | {rows['mean-z']['best_member'][k]:.3f} | "
                + " | ".join(f"{rows[rule]['auroc'][k]:.3f}" for rule in RULES)
                + " |"
            )
        lines.append(
            f"| {s['scenario']} | false alarms at {run['alpha']} | | "
            + " | ".join(f"{rows[rule]['false_alarm']:.3f}" for rule in RULES)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("small", "full"), default="small")
    ap.add_argument("--scenario", action="append", choices=scenario_names(), default=None)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cache = EmbeddingCache(Embedder(DEFAULT_BACKBONE))
    scenarios = [measure(sc, cache, a.alpha) for sc in build_scenarios(a.scenario, size=a.size)]
    run = {
        "command": "python -m benchmarks.ood.combine " + " ".join(argv if argv is not None else sys.argv[1:]),
        "alpha": a.alpha,
        "size": a.size,
        "seconds": time.perf_counter() - t0,
        "machine": machine_description(),
        "scenarios": scenarios,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"combine_{a.size}"
    (out / f"{stem}.json").write_text(json.dumps(run, indent=1, default=float) + "\n")
    text = to_markdown(run)
    (out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
