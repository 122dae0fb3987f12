"""The built-in demos.

``novelty demo windshield`` (default): a dry/wet windshield classifier meets conditions it never saw (tunnel,
ice, fog, snow); the detector flags them. ``novelty demo textile``: fit on nominal textile images, score
held-out nominal images and defects; AUROC per set and the share flagged at each alpha. Both print a few
lines and write their numbers to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from novelty.datasets import textile_splits
from novelty.detector import NoveltyDetector
from novelty.errors import NoveltyError
from novelty.metrics import auroc, flagged_share

log = logging.getLogger(__name__)

ALPHAS = (0.01, 0.05, 0.1)


def run_demo(
    out: str | Path | None = "out/demo.json", *, seed: int = 0, save_dir: str | Path | None = None
) -> dict[str, Any]:
    splits = textile_splits(seed=seed)
    t0 = time.perf_counter()
    det = NoveltyDetector(calibration_fraction=0.3, seed=seed)
    det.fit(splits.train, progress=True)
    t_fit = time.perf_counter() - t0
    sets = {
        "nominal (held out)": splits.test_nominal,
        "global defects": splits.global_,
        "local defects": splits.local,
    }
    results = {}
    t0 = time.perf_counter()
    for name, paths in sets.items():
        results[name] = det.score_batch(paths, progress=True)
    t_score = time.perf_counter() - t0
    n_scored = sum(len(p) for p in sets.values())
    ref = results["nominal (held out)"].scores["knn"]
    rows = []
    for name, res in results.items():
        row: dict[str, Any] = {"set": name, "n": len(res), "errors": int((~res.ok).sum())}
        row["auroc"] = None if name.startswith("nominal") else auroc(ref, res.scores["knn"])
        for a in ALPHAS:
            row[f"flagged@{a}"] = flagged_share(res.p_value[res.ok], a)
        rows.append(row)
    summary = {
        "detector": repr(det),
        "fit_images": len(splits.train),
        "calibration_images": det.calibrator_.n,
        "fit_seconds": round(t_fit, 1),
        "score_images_per_second": round(n_scored / t_score, 1),
        "rows": rows,
    }
    if save_dir is not None:
        det.save(save_dir)
        summary["saved_to"] = str(save_dir)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(summary, indent=2))
        summary["json"] = str(out)
    return summary


def format_table(summary: dict[str, Any]) -> str:
    head = f"{'set':<20} {'n':>5} {'AUROC':>7} " + " ".join(f"{'flag@' + str(a):>10}" for a in ALPHAS)
    lines = [head, "-" * len(head)]
    for r in summary["rows"]:
        au = "   -   " if r["auroc"] is None else f"{r['auroc']:7.3f}"
        flags = " ".join(f"{r[f'flagged@{a}']:10.3f}" for a in ALPHAS)
        lines.append(f"{r['set']:<20} {r['n']:>5} {au} {flags}")
    return "\n".join(lines)


def textile_main(out: str | None = "out/textile.json", save_dir: str | None = None) -> int:
    print("novelty demo: textile images — fit on nominal, flag defects (scores: higher = more novel)")
    summary = run_demo(out, save_dir=save_dir)
    print(summary["detector"])
    print(
        f"fit {summary['fit_images']} nominal images in {summary['fit_seconds']} s "
        f"({summary['calibration_images']} held out for calibration); "
        f"scored at {summary['score_images_per_second']} img/s"
    )
    print(format_table(summary))
    nominal = summary["rows"][0]
    print(
        f"false alarms on held-out nominal at alpha=0.05: {nominal['flagged@0.05']:.3f} (guarantee: ≤ 0.05 in expectation)"
    )
    if "json" in summary:
        print(f"numbers written to {summary['json']}")
    return 0


def windshield_main(out: str | None = "out/windshield.json", save_dir: str | None = None) -> int:
    try:
        from novelty.training.windshield import format_story, run  # lazy: Lightning, the train extra
    except ImportError as e:
        raise NoveltyError(
            f"the windshield demo trains a head and an autoencoder: pip install 'novelty[train,windshield]' ({e})"
        ) from e
    print("novelty demo: the windshield story — a dry/wet classifier meets conditions it never saw")
    s = run(out_dir=save_dir, json_path=out, progress=True)
    m = s["metrics"]
    f = s["frames"]
    print(
        f"fit on {f['fit']} clean daytime frames ({f['calibration']} held out for calibration in 25-frame blocks); "
        f"embedding {s['seconds']['embedding']} s, training head + autoencoder {s['seconds']['training']} s"
    )
    c = m["clean"]
    print(
        f"held-out clean frames: head accuracy {c['head_accuracy']:.3f}, flagged as novel {c['flagged']:.1%} "
        f"(alpha = {s['alpha']})"
    )
    for name in ("tunnel", "ice", "fog", "snow"):
        r = m[name]
        print(
            f"{name:>6}: the head says dry/wet with mean confidence {r['head_mean_confidence']:.2f} and is right "
            f"{r['head_accuracy']:.1%} of the time; the detector flags {r['flagged']:.1%} as novel, so "
            f"{1 - r['trusted_share']:.1%} of these predictions are not trusted"
        )
    print(format_story(s))
    if out is not None:
        print(f"numbers written to {out}")
    return 0


COMMANDS = ("demo",)


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    d = sub.add_parser(
        "demo",
        help="run a built-in demo on real data (windshield story or textile defects)",
        description="windshield: a dry/wet classifier meets tunnel, ice, fog and snow frames it never saw; "
        "textile: fit on nominal textile images and flag defects.",
    )
    d.add_argument("scenario", nargs="?", default="windshield", choices=("windshield", "textile"))
    d.add_argument(
        "--out", default=None, help="where to write the numbers as JSON (default: out/SCENARIO.json)"
    )
    d.add_argument("--save", default=None, metavar="DIR", help="also save the fitted detector to DIR")


def run(args: argparse.Namespace) -> int:
    out = args.out or f"out/{args.scenario}.json"
    main = windshield_main if args.scenario == "windshield" else textile_main
    return main(out=out, save_dir=args.save)
