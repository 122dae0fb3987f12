"""``novelty select DETECTOR SOURCES… --budget N --strategy …``: choose what to label under a budget.

Sources are results files of ``novelty score`` (``.parquet``, ``.csv``, ``.jsonl``), folders, globs, path lists
and archives of images, and the flag store (``--flags``). Every candidate is scored by DETECTOR; the chosen ones
are printed (rank, id, reason) and written to ``--out`` (``selection.json``, see
:mod:`novelty.flywheel.selection`). Images without a file of their own (flags, archive members) are written to
``--images-dir`` under their sha256; by default to the selection's own folder ``<out stem>.images/`` beside
``--out`` (``selection.images/`` for ``selection.json``), never into a folder it does not own, and the command
prints where.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from novelty.cli.common import EXIT_OK, EXIT_PARTIAL, UsageError, int_arg, real_arg
from novelty.clock import parse_time
from novelty.detector import NoveltyDetector
from novelty.errors import InvalidInputError
from novelty.flywheel import selection as S
from novelty.flywheel.selection import (
    DEFAULT_OVERSAMPLE,
    DEFAULT_RADIUS,
    DEFAULT_WEIGHTS,
    STRATEGIES,
    UNCERTAINTY_MEASURES,
)

__all__ = ["COMMANDS", "add_parsers", "images_folder", "run"]

COMMANDS: tuple[str, ...] = ("select",)


def images_folder(out: Path) -> Path:
    """The selection's own folder for images without a file of their own: ``<out stem>.images/`` beside the
    selection file ``out`` (a folder named after it, so it is never a folder of the user's)."""
    out = out.resolve()
    return out.parent / f"{out.stem}.images"


def _weights(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in ("novelty", "uncertainty"):
            raise argparse.ArgumentTypeError(
                f"{part!r}: give weights as novelty=W,uncertainty=W (e.g. novelty=0.75,uncertainty=0.25)"
            )
        try:
            out[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: {value!r} is not a number") from None
        if out[name] < 0:
            raise argparse.ArgumentTypeError(f"{part!r}: weights must be ≥ 0")
    return out


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    weights = ",".join(f"{k}={v:g}" for k, v in DEFAULT_WEIGHTS.items())
    s = sub.add_parser(
        "select",
        help="choose the images to label under a budget (random, novelty, uncertainty, diversity, hybrid)",
        description="Score the candidates of results files, image folders and the flag store with DETECTOR, "
        "choose --budget of them with --strategy, print why each was chosen and write the selection "
        "(selection.json) for labelling. Exit code 3: written, but some candidates were unreadable and left out.",
        epilog=epilog,
        formatter_class=fmt,
    )
    s.add_argument(
        "detector", metavar="DETECTOR_DIR", help="the detector (with its head) that scores the pool"
    )
    s.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="results files of `novelty score` (.parquet/.csv/.jsonl), folders, globs, path lists, archives",
    )
    s.add_argument("--budget", type=int_arg(1), required=True, metavar="N", help="how many images to label")
    s.add_argument(
        "--strategy",
        choices=STRATEGIES,
        required=True,
        help="random; novelty (lowest p-value first); uncertainty (the head's); diversity (k-center from the "
        "training data's coverage); hybrid (novel and uncertain by --weights, then diversified)",
    )
    s.add_argument("--seed", type=int_arg(0), default=0, help="random seed (default: 0)")
    s.add_argument(
        "--radius",
        type=real_arg(0.0, 2.0),
        default=None,
        help="diversity and hybrid: skip candidates within this cosine distance of a chosen image "
        f"(near-duplicates; default {DEFAULT_RADIUS:g})",
    )
    s.add_argument(
        "--weights",
        type=_weights,
        default=None,
        metavar="novelty=W,uncertainty=W",
        help=f"hybrid: weights of the novelty and uncertainty ranks (default {weights}; see "
        "benchmarks/results/flywheel.md)",
    )
    s.add_argument(
        "--oversample",
        type=real_arg(1.0),
        default=None,
        help=f"hybrid: k-center chooses among the top OVERSAMPLE × budget candidates (default {DEFAULT_OVERSAMPLE:g})",
    )
    s.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_MEASURES,
        default=None,
        help="uncertainty and hybrid: how the head's doubt is measured: competence (1 − the trust decision's "
        "competence: what the trust rule cannot vouch for first; the default when the detector has a trust "
        "decision), least-confidence (1 − max p; the default otherwise) or margin (1 − (p1 − p2))",
    )
    s.add_argument(
        "--flags",
        metavar="STORE",
        help="also select from the flag store: its folder (or flags.db) or a postgresql:// URL",
    )
    s.add_argument("--flags-since", metavar="ISO", help="only flags received at or after this time")
    s.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="DATASET",
        help="a labelled dataset (novelty dataset create …); candidates it already labels (same sha256) are "
        "left out, so the budget buys only new labels. Repeat for more (training, test, new slice)",
    )
    s.add_argument("--out", default="selection.json", help="selection file to write (default: %(default)s)")
    s.add_argument(
        "--images-dir",
        metavar="DIR",
        help="where images without a file of their own (flags, archive members) are written (default: the "
        "selection's own folder, <out stem>.images/ beside --out)",
    )
    s.add_argument("--show", type=int_arg(0), default=20, help="rows of the table printed (default 20)")


def run(args: argparse.Namespace) -> int:
    if not args.sources and not args.flags:
        raise UsageError("no source of candidates: give results files or image folders, or --flags STORE")
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a directory; give the selection file to write, e.g. {out}/selection.json"
        )
    if args.weights is not None and args.strategy != "hybrid":
        raise UsageError("--weights applies to --strategy hybrid only")
    if args.oversample is not None and args.strategy != "hybrid":
        raise UsageError("--oversample applies to --strategy hybrid only")
    if args.radius is not None and args.strategy not in ("diversity", "hybrid"):
        raise UsageError("--radius applies to --strategy diversity or hybrid only")
    if args.flags_since and not args.flags:
        raise UsageError("--flags-since needs --flags")
    for src in args.sources:
        if not os.path.exists(src) and not any(ch in src for ch in "*?["):
            raise UsageError(f"source {src}: no such file or folder")

    for d in args.dataset:
        if not os.path.isfile(os.path.join(d, "dataset.json")):
            raise UsageError(f"--dataset {d}: not a labelled dataset (no dataset.json)")
    if args.flags_since:
        try:  # a bad or out-of-range time fails before the detector loads
            parse_time(args.flags_since, "--flags-since")
        except InvalidInputError as e:
            raise UsageError(str(e)) from None
    det = NoveltyDetector.load(args.detector)
    if args.strategy == "uncertainty" and det.head_ is None:
        raise S.SelectionError(
            f"{args.detector} has no condition head, so it has no uncertainty: fit it with labels (novelty fit "
            "--labels), or choose --strategy novelty, diversity or random"
        )
    images_dir = Path(args.images_dir) if args.images_dir else images_folder(out)
    pool = S.build_pool(
        det,
        args.sources,
        flags=args.flags,
        flags_since=args.flags_since,
        images_dir=images_dir,
        progress=sys.stderr.isatty(),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sel = S.select(
            pool,
            args.budget,
            args.strategy,
            seed=args.seed,
            radius=S.DEFAULT_RADIUS if args.radius is None else args.radius,
            weights=args.weights,
            oversample=S.DEFAULT_OVERSAMPLE if args.oversample is None else args.oversample,
            measure=args.uncertainty,
            dataset=list(args.dataset) or None,
        )
    for w in caught:
        print(f"novelty select: warning: {w.message}", file=sys.stderr)
    path = sel.save(out)
    print(S.describe(sel, limit=args.show))
    skipped = f"; {pool.n_skipped} unreadable candidate(s) left out" if pool.n_skipped else ""
    already = (
        f"; {sel.n_already_labelled} already labelled left out ({', '.join(sel.labelled_in)})"
        if sel.n_already_labelled
        else ""
    )
    print(
        f"selected {len(sel)} of {len(pool)} candidates with {sel.strategy} (seed {sel.seed}){already}{skipped}; "
        f"written to {path}"
    )
    inside = str(images_dir.resolve()) + os.sep
    written = sum(p.startswith(inside) for p in pool.paths)
    if written:
        print(f"{written} image(s) without a file of their own (flags, archive members) are in {images_dir}")
    for key, why in pool.skipped[:5]:
        print(f"  skipped {key}: {why}", file=sys.stderr)
    return EXIT_PARTIAL if pool.n_skipped else EXIT_OK
