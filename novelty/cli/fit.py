"""``novelty fit DATA… --out DIR`` (or ``--dataset DIR``): fit a detector on training images.

From images (folders, globs, archives, lists of paths) with optional ``--labels`` and ``--groups`` CSVs, every
input's label and group found before any image is embedded; or from a labelled dataset, fitted as ``novelty
retrain`` fits and saved with its training record.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from novelty.artifact import registry_root
from novelty.batch.sources import expand_inputs
from novelty.cli.common import (
    EXIT_OK,
    UsageError,
    add_runtime_arg,
    int_arg,
    layers_arg,
    read_table,
    real_arg,
)
from novelty.detector import NoveltyDetector
from novelty.errors import NoveltyError
from novelty.fileio import sha256_bytes
from novelty.flywheel.labels.labelimport import read_labels_csv, resolve_csv_path
from novelty.flywheel.retrain import retrain, save_retrained
from novelty.index import INDEX_KINDS
from novelty.scorers import REGISTRY
from novelty.trust import MARGIN, MARGIN_RANGE, SUPPORT_FACTOR, SUPPORT_FACTOR_RANGE

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS: tuple[str, ...] = ("fit",)

_fraction = real_arg(0.0, 1.0, low_open=True, high_open=True)


def _scorer_list(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in REGISTRY]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scorer(s) {', '.join(unknown) or '(none given)'}; registered: {', '.join(REGISTRY)}"
        )
    return names


def _scorers_help() -> str:
    lines = []
    for name, cls in REGISTRY.items():
        doc = (cls.__doc__ or "").strip().split("\n")[0].split(". ")[0].rstrip(".")
        lines.append(f"{name} ({doc})" if doc else name)
    return "; ".join(lines)


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    f = sub.add_parser("fit", help="fit a detector on training images", epilog=epilog, formatter_class=fmt)
    f.add_argument(
        "data", nargs="*", help="training images: folders, globs, zip/tar archives, lists of paths"
    )
    f.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="detector directory to write (with --dataset: DIR/detector/ and its training record DIR/record.json)",
    )
    f.add_argument(
        "--labels",
        metavar="CSV",
        help="UTF-8 CSV with columns path,label: also fit a condition head. Paths as `novelty dataset add-csv` "
        "reads them (a relative path is taken from the CSV's folder); an input's archive member name or a file "
        "name that occurs once in the CSV match too. Checked before any image is embedded",
    )
    f.add_argument(
        "--groups",
        metavar="FILE_OR_COLUMN",
        help="groups for grouped calibration (near-duplicates such as video frames or several photos of one "
        "object land on one side of the split): a column of the --labels CSV (e.g. 'group'), or a UTF-8 CSV "
        "file with columns path,group, its paths matched as --labels' are",
    )
    f.add_argument(
        "--dataset",
        metavar="DIR",
        help="fit on a labelled dataset (novelty dataset create/add-csv) instead of DATA: its labels and groups, "
        "its embedding cache, and a training record (record.json: the dataset's version and identity) written "
        "beside the detector, as `novelty retrain` does, so that `novelty compare` can check that no test "
        "image was trained on",
    )
    f.add_argument(
        "--backbone", default="tf_efficientnet_lite0", help="timm model name (default: %(default)s)"
    )
    f.add_argument(
        "--weights", default=None, metavar="PATH", help="local backbone weights (safetensors or state dict)"
    )
    f.add_argument(
        "--scorers",
        type=_scorer_list,
        default=("knn",),
        metavar="NAMES",
        help=f"comma-separated scorers, default knn; registered: {_scorers_help()}",
    )
    f.add_argument(
        "--alpha", type=_fraction, default=0.05, help="false-alarm rate to flag at (default: %(default)s)"
    )
    f.add_argument(
        "--calibration-fraction",
        type=_fraction,
        default=0.2,
        help="held out to calibrate (default: %(default)s)",
    )
    f.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out unreadable training images instead of failing",
    )
    f.add_argument("--seed", type=int_arg(0), default=0)
    f.add_argument(
        "--index",
        choices=INDEX_KINDS,
        default="flat",
        help="nearest-neighbour index: flat (exact, default), ivf-flat, ivf-pq, opq, hnsw, or auto (flat up to "
        "200,000 images, ivf-pq above); approximate kinds re-rank their candidates exactly (README 'Index kinds')",
    )
    add_runtime_arg(
        f, "where the backbone runs (default: torch); int8 runtimes are quantised on the training images"
    )
    f.add_argument(
        "--layers",
        type=layers_arg,
        default=("final",),
        metavar="LAYERS",
        help="what embeddings are made of: final (the pooled output, default) or final+s16 (with the "
        "stride-16 stage's average; torch runtime only), recorded with the detector",
    )
    f.add_argument(
        "--trust-support",
        type=real_arg(*SUPPORT_FACTOR_RANGE),
        default=SUPPORT_FACTOR,
        metavar="FACTOR",
        help="how far a labelled training image vouches for the head, in units of its own scale "
        "(default: %(default)s; README 'Trust')",
    )
    f.add_argument(
        "--trust-margin",
        type=_margin_arg,
        default=MARGIN,
        metavar="MARGIN|none",
        help="the class margin a trusted prediction needs: its distance to the nearest training image of another "
        "class over that to the nearest of its predicted class (default: %(default)s; none: no margin)",
    )


def _margin_arg(text: str) -> float | None:
    return None if text.strip().lower() == "none" else real_arg(*MARGIN_RANGE)(text)


def run(args: argparse.Namespace) -> int:
    reg = registry_root(args.out)
    if reg is not None:
        raise UsageError(
            f"--out {args.out} lies inside the model registry {reg}: registered versions never change; "
            f"fit elsewhere, then `novelty register {reg} DIR`"
        )
    return _cmd_fit(args)


class _PathTable:
    """Values of a CSV keyed by image path, matched to inputs as ``novelty dataset add-csv`` reads paths (a
    relative path from the CSV's folder: :func:`~novelty.flywheel.labels.labelimport.resolve_csv_path`), else by the
    path as written, an archive member's name, or a file name that occurs once in the CSV."""

    def __init__(self, csv_path: str, source: str, pairs: list[tuple[str, str]]) -> None:
        self.source = source
        self.by_file = {resolve_csv_path(csv_path, p): v for p, v in pairs}
        self.by_text = {p: v for p, v in pairs}
        names: dict[str, list[str]] = {}
        for p, v in pairs:
            names.setdefault(Path(p).name, []).append(v)
        self.by_name = {n: vs[0] for n, vs in names.items() if len(vs) == 1}

    def value(self, item: Any) -> str | None:
        if item.member is None and os.path.abspath(item.path) in self.by_file:
            return self.by_file[os.path.abspath(item.path)]
        for text in (item.key, item.member):
            if text is not None and text in self.by_text:
                return self.by_text[text]
        return self.by_name.get(Path(item.member or item.path).name)

    def values(self, items: list[Any], what: str) -> list[str]:
        """The value of every item, or one error listing every item without one."""
        found = [self.value(it) for it in items]
        missing = [it.key for it, v in zip(items, found, strict=True) if v is None]
        if missing:
            shown = "\n".join(f"  {k}" for k in missing[:20])
            more = f"\n  and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise NoveltyError(
                f"{len(missing)} of {len(items)} training image(s) have no {what} in {self.source} (nothing was "
                f"embedded; relative paths are read from the CSV's folder):\n{shown}{more}"
            )
        return [v for v in found if v is not None]


def _labels_table(path: str) -> _PathTable:
    """``--labels``: the labels CSV, read by the one labels reader (path and label of every row)."""
    read = read_labels_csv(path, paths=True)
    no_path = [r.where for r in read.rows if r.path is None]
    if no_path or read.unlabelled:
        raise NoveltyError(
            f"{path}: every row of a training set's labels needs a path and a label; "
            + "; ".join(
                x
                for x in (
                    f"{len(no_path)} row(s) without a path, e.g. {no_path[:3]}" if no_path else "",
                    f"{len(read.unlabelled)} without a label, e.g. {read.unlabelled[:3]}"
                    if read.unlabelled
                    else "",
                )
                if x
            )
        )
    return _PathTable(path, path, [(str(r.path), r.label) for r in read.rows])


def _groups_table(args: argparse.Namespace) -> _PathTable | None:
    """``--groups``: a CSV file (path,group), or a column of the --labels CSV."""
    if not args.groups:
        return None
    if os.path.isfile(args.groups):
        return _PathTable(args.groups, args.groups, list(read_table(args.groups, "group", "groups").items()))
    if args.labels:
        pairs = list(read_table(args.labels, args.groups, "labels").items())
        return _PathTable(args.labels, f"column {args.groups!r} of {args.labels}", pairs)
    raise UsageError(
        f"--groups {args.groups}: no such file, and no --labels CSV to take a column of that name from"
    )


def _detector_of(args: argparse.Namespace) -> NoveltyDetector:
    """The unfitted detector ``novelty fit``'s options describe."""
    return NoveltyDetector(
        backbone=args.backbone,
        weights=args.weights,
        scorers=args.scorers,
        alpha=args.alpha,
        calibration_fraction=args.calibration_fraction,
        seed=args.seed,
        runtime=args.runtime or "torch",
        index=args.index,
        layers=args.layers,
        trust_support=args.trust_support,
        trust_margin=args.trust_margin,
    )


def _cmd_fit_dataset(args: argparse.Namespace) -> int:
    """``novelty fit --dataset DIR``: the first detector of a flywheel, fitted as ``retrain`` fits, with its
    training record."""
    if args.data:
        raise UsageError("give training images (DATA) or --dataset, not both")
    if args.labels or args.groups:
        raise UsageError("--dataset brings its own labels and groups: leave out --labels and --groups")
    if (args.runtime or "torch") != "torch":
        raise UsageError("--dataset fits with the torch runtime; fit from images (DATA) for an int8 runtime")
    log = logging.getLogger("novelty")
    det, record = retrain(_detector_of(args), args.dataset, progress=log.info)
    record = save_retrained(det, record, args.out)
    ds = record.dataset
    on = "" if ds is None else f" on {ds.n} images of {ds.path} (version {ds.version})"
    print(f"fitted {det!r}{on}")
    print(f"saved to {Path(args.out) / 'detector'} with its training record {Path(args.out) / 'record.json'}")
    return EXIT_OK


def _cmd_fit(args: argparse.Namespace) -> int:
    if args.dataset:
        return _cmd_fit_dataset(args)
    if not args.data:
        raise UsageError("give training images (DATA) or a labelled dataset (--dataset DIR)")
    labels_table = _labels_table(args.labels) if args.labels else None
    groups_table = _groups_table(args)  # both read before the long part: a bad file fails at once
    items = expand_inputs(args.data)
    bad = [it for it in items if it.error]
    good = [it for it in items if not it.error]
    # every input's label and group, before any image is embedded: an unknown file fails at once
    labels_all = None if labels_table is None else labels_table.values(good, "label")
    groups_all = None if groups_table is None else groups_table.values(good, "group")
    det = _detector_of(args)
    det.embedder.calibrate_runtime(good)  # int8 runtimes: quantised on the training images; else nothing
    res = det.embedder.embed_with_errors(good, progress=None)
    failed = [(it.key, f"{e.reason_code}: {e.reason}") for it, e in zip(good, res.errors, strict=True) if e]
    failed += [(it.key, f"{it.error_code}: {it.error}") for it in bad]
    if failed and not args.skip_unreadable:
        lines = "\n".join(f"  {k}: {why}" for k, why in failed[:20])
        raise NoveltyError(
            f"{len(failed)} training input(s) are unreadable (use --skip-unreadable):\n{lines}"
        )
    for k, why in failed:
        logging.getLogger("novelty").warning("skipped %s: %s", k, why)
    keep = res.ok
    kept = [it for it, ok in zip(good, keep, strict=True) if ok]
    labels = None if labels_all is None else [v for v, ok in zip(labels_all, keep, strict=True) if ok]
    groups = None if groups_all is None else [v for v, ok in zip(groups_all, keep, strict=True) if ok]
    det.fit_embeddings(
        res.embeddings[np.asarray(keep)],
        labels,
        groups=groups,
        ids=[it.key for it in kept],
        sha256=[
            sha256_bytes(it.read_bytes()) for it in kept
        ],  # what `novelty compare` checks test sets against
    )
    out = det.save(args.out)
    print(f"fitted {det!r}")
    print(f"saved to {out}" + (f" ({len(failed)} unreadable input(s) skipped)" if failed else ""))
    print(
        "its training images' sha256 are in the artifact, so `novelty compare` checks that no test image was "
        "trained on; fit from a labelled dataset (--dataset) for a training record as well (retrain --new-only, "
        "training windows)"
    )
    return EXIT_OK
