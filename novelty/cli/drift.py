"""``novelty drift DETECTOR RESULTS… --window 1d|7d|500``: is this stream shifted, since when, what is missing.

Reads results written by ``novelty score --embeddings`` (one or more files, the same detector), tests each
window against the detector's reference (see :mod:`novelty.drift`), prints the window table and the
recommendation, and writes everything to ``--out`` (JSON) and ``--report`` (HTML).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from novelty.cli.common import int_arg, real_arg
from novelty.clock import iso_seconds
from novelty.detector import NoveltyDetector
from novelty.drift.analysis import analyze
from novelty.drift.monitor import parse_window
from novelty.drift.reference import TESTS, check_tests
from novelty.drift.report import write_report
from novelty.errors import NoveltyError
from novelty.fileio import atomic_write_text

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("drift",)


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    d = sub.add_parser(
        "drift",
        help="test windows of scored results for drift against the detector's training data",
        description="Test each window of a stream of results (novelty score --embeddings) against the detector's "
        "reference; print a table, the clusters of novel images and a recommendation (retrain now / keep "
        "watching / fine).",
        epilog=epilog,
        formatter_class=fmt,
    )
    d.add_argument("detector", metavar="DETECTOR_DIR", help="the detector that scored the results")
    d.add_argument("results", nargs="+", metavar="RESULTS", help="results files written with --embeddings")
    d.add_argument(
        "--window", default="1d", help="a duration (12h, 1d, 7d, 2w) or a number of images (500); default 1d"
    )
    d.add_argument(
        "--out", metavar="JSON", help="write every window's results (and the rest) to this JSON file"
    )
    d.add_argument("--report", metavar="HTML", help="write the HTML report with its drift section")
    d.add_argument(
        "--tests",
        default=",".join(TESTS),
        help=f"comma-separated tests (default: all of {', '.join(TESTS)}). On video frames the two-sample tests "
        "(mmd, classifier, histogram) also see the scenes change: there use pvalue-binomial,pvalue-ks "
        "(benchmarks/RESULTS.md, Drift)",
    )
    d.add_argument(
        "--correction",
        default="holm",
        choices=("holm", "bonferroni", "none"),
        help="multiple-testing correction over all windows and tests (default: holm)",
    )
    d.add_argument(
        "--level",
        type=real_arg(0.0, 1.0, low_open=True, high_open=True),
        default=0.05,
        help="family-wise error level (default: 0.05)",
    )
    d.add_argument(
        "--clusters", type=int_arg(2), default=16, help="k-means clusters of the histogram test (default 16)"
    )
    d.add_argument(
        "--max-reference",
        type=int_arg(2),
        default=1000,
        help="reference images for MMD and the classifier (default 1000)",
    )
    d.add_argument("--seed", type=int_arg(0), default=0)


def run(args: argparse.Namespace) -> int:
    for flag, path in (("--out", args.out), ("--report", args.report)):
        if path and Path(path).is_dir():
            raise NoveltyError(f"{flag} {path} is a directory; give the file to write")
    parse_window(args.window)  # a bad window fails before the detector loads
    tests = check_tests(args.tests)
    det = NoveltyDetector.load(args.detector)

    def progress(i: int, n: int, w: Any) -> None:
        if sys.stderr.isatty():
            print(f"\rwindow {i + 1}/{n}", end="", file=sys.stderr, flush=True)

    a = analyze(
        det,
        args.results,
        window=args.window,
        tests=tests,
        correction=args.correction,
        level=args.level,
        n_clusters=args.clusters,
        max_reference=args.max_reference,
        seed=args.seed,
        on_window=progress,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(a.run.table())
    print()
    for c in a.missing[:8]:
        seen = ""
        if c.first_seen is not None:
            seen = f", seen {iso_seconds(c.first_seen)} → {iso_seconds(c.last_seen)}"
        nb = c.neighbors[0] if c.neighbors else ("—", float("nan"))
        print(
            f"missing: cluster {c.cluster}: {c.size} novel images like {c.medoid_key}, "
            f"{c.distance:.3f} from the training data (nearest {nb[0]}){seen}"
        )
    if a.horizon is not None:
        h = a.horizon.horizon
        print(f"data horizon: {'none within the stream' if h is None else f'{h:g} {a.horizon.unit}'}")
    print(f"recommendation: {a.recommendation.action.upper()} — " + "; ".join(a.recommendation.reasons))
    if a.recommendation.cadence:
        print(f"cadence: {a.recommendation.cadence}")
    if args.out:
        out = atomic_write_text(Path(args.out), json.dumps(a.to_json(), indent=1, ensure_ascii=False) + "\n")
        print(f"drift results written to {out}")
    if args.report:
        html = write_report(a, args.report, detector_dir=args.detector)
        print(f"report written to {html}")
    return 0
