"""The ``novelty`` command line: fit a detector, score archives, report, demos.

Exit codes (scripts can trust them):
  0  success
  1  failure (bad detector, unwritable output, …): a clear message on stderr, no traceback
  2  usage error (wrong arguments)
  3  finished, but some inputs were unreadable (each has a row with its reason in the results)
"""

from __future__ import annotations

import argparse
import csv
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from novelty.artifact import registry_root
from novelty.batch.items import DEFAULT_MAX_MEMBER_BYTES
from novelty.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    UsageError,
    int_arg,
    layers_arg,
    plain_warnings,
    real_arg,
)
from novelty.errors import NoveltyError
from novelty.index import INDEX_KINDS
from novelty.trust import SUPPORT_FACTOR

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "UsageError", "main"]

EPILOG = """exit codes: 0 success · 1 failure · 2 usage error · 3 finished with some unreadable inputs
scores: higher = more novel; p_value < alpha flags an image as novel"""

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _int_arg(lowest: int) -> Any:
    return int_arg(lowest)


_fraction = real_arg(0.0, 1.0, low_open=True, high_open=True)


def _byte_size(text: str) -> int:
    """``268435456``, ``256M``, ``1G``, ``512k`` (binary units: K = 1024 bytes)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _SIZE_UNITS and t[-1:] else ""
    try:
        value = int(float(t[: len(t) - len(unit)]) * _SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 268435456, 256M, 1G)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return value


def _scorer_list(text: str) -> tuple[str, ...]:
    from novelty.scorers import REGISTRY

    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in REGISTRY]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scorer(s) {', '.join(unknown) or '(none given)'}; registered: {', '.join(REGISTRY)}"
        )
    return names


def _scorers_help() -> str:
    from novelty.scorers import REGISTRY

    lines = []
    for name, cls in REGISTRY.items():
        doc = (cls.__doc__ or "").strip().split("\n")[0].split(". ")[0].rstrip(".")
        lines.append(f"{name} ({doc})" if doc else name)
    return "; ".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    from novelty.version import __version__

    p = argparse.ArgumentParser(
        prog="novelty",
        description="Find the images a vision model was never trained for.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"novelty {__version__}")
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: progress details and the traceback of an unexpected error; -vv: debug logging too",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    f = sub.add_parser("fit", help="fit a detector on training images", epilog=EPILOG, formatter_class=fmt)
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
    f.add_argument("--seed", type=int, default=0)
    f.add_argument(
        "--index",
        choices=INDEX_KINDS,
        default="flat",
        help="nearest-neighbour index: flat (exact, default), ivf-flat, ivf-pq, opq, hnsw, or auto (flat up to "
        "200,000 images, ivf-pq above); approximate kinds re-rank their candidates exactly (README 'Index kinds')",
    )
    _add_runtime_arg(
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
        type=real_arg(1.0, 10.0),
        default=SUPPORT_FACTOR,
        metavar="FACTOR",
        help="how far a labelled training image vouches for the head, in units of its own scale "
        "(default: %(default)s; README 'Trust')",
    )

    s = sub.add_parser(
        "score", help="score images and archives; one row per input", epilog=EPILOG, formatter_class=fmt
    )
    s.add_argument("detector", metavar="DETECTOR_DIR")
    s.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="folders, globs, zip/tar(.gz) archives, lists of paths"
    )
    s.add_argument("--out", required=True, help="results file: .parquet, .csv or .jsonl")
    s.add_argument(
        "--no-resume", action="store_true", help="start over instead of resuming an interrupted run"
    )
    s.add_argument(
        "--chunk-rows",
        type=_int_arg(1),
        default=512,
        help="rows per checkpointed chunk (default: %(default)s)",
    )
    s.add_argument("--batch-size", type=_int_arg(1), default=None, help="images per forward pass (≥ 1)")
    s.add_argument(
        "--workers",
        type=_int_arg(0),
        default=None,
        help="decoding processes, 0 for none (default: automatic)",
    )
    s.add_argument(
        "--max-member-bytes",
        type=_byte_size,
        default=DEFAULT_MAX_MEMBER_BYTES,
        metavar="SIZE",
        help="archive members larger than this (uncompressed) get a too_large row instead of being read "
        "(default: 256M; e.g. 1G)",
    )
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    s.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default): this process and its decoding workers; ray: blocks of inputs scored by actors "
        "on a Ray cluster (needs the ray extra; README 'Scoring on a Ray cluster')",
    )
    s.add_argument(
        "--address",
        default=None,
        help="--engine ray: the cluster to join ('auto' for the one this node belongs to, ray://HOST:10001 for a "
        "remote client); default: start a local Ray instance",
    )
    s.add_argument(
        "--actors", type=_int_arg(1), default=None, help="--engine ray: scoring actors (default: one per CPU)"
    )
    s.add_argument(
        "--block-size",
        type=_int_arg(1),
        default=256,
        help="--engine ray: inputs per Ray task, the unit of retry (default: %(default)s)",
    )
    _add_runtime_arg(
        s,
        "score with another runtime than the detector was fitted with (default: the recorded one); refused "
        "where its embeddings differ beyond the tolerance",
    )
    s.add_argument(
        "--maps",
        action="store_true",
        help="write each novel image's anomaly map as a small PNG (column anomaly_map; the report draws it "
        "over the image); needs a detector with a patch scorer (--scorers patch-knn)",
    )
    _add_embedding_args(s)

    r = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a results file",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    r.add_argument("results", help="results file written by `novelty score`")
    r.add_argument("--out", required=True, help="HTML file to write")
    r.add_argument(
        "--detector",
        metavar="DIR",
        help="the detector that scored them (adds its calibration scores); any other detector is refused",
    )
    r.add_argument(
        "--top", type=_int_arg(0), default=24, help="how many of the most novel images to show (default: 24)"
    )

    from novelty.cli import drift as drift_cli

    drift_cli.add_parser(sub, EPILOG, fmt)

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

    # the flywheel verbs (select, export, import-labels, retrain, compare, promote, rollback, flywheel):
    # each module of FLYWHEEL_MODULES adds its subcommands and runs them
    for mod in _flywheel_modules():
        mod.add_parsers(sub, EPILOG, fmt)

    # `novelty serve`: the HTTP service; its options live in novelty/serve/cli.py
    from novelty.serve import cli as serve_cli

    serve_cli.add_arguments(
        sub.add_parser(
            "serve",
            help="serve a detector over HTTP: scoring, flags, metrics",
            description=serve_cli.DESCRIPTION,
        )
    )
    return p


#: modules that add flywheel subcommands: each has ``COMMANDS`` (the names it adds),
#: ``add_parsers(sub, epilog, fmt)`` and ``run(args) -> int``; none imports anything heavy at module level
FLYWHEEL_MODULES: tuple[str, ...] = (
    "novelty.cli.select",
    "novelty.cli.labels",
    "novelty.cli.retrain",
    "novelty.cli.registry",
    "novelty.cli.flywheel",
)


def _flywheel_modules() -> list[Any]:
    out = []
    for name in FLYWHEEL_MODULES:
        try:
            out.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    return out


def _flywheel_commands() -> dict[str, str]:
    """``{command: module name}`` of the flywheel verbs."""
    return {cmd: mod.__name__ for mod in _flywheel_modules() for cmd in mod.COMMANDS}


def _read_table(path: str, column: str, what: str) -> dict[str, str]:
    """``{path: value}`` from the columns ``path`` and ``column`` of a UTF-8 CSV file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", column} <= set(reader.fieldnames):
                raise NoveltyError(
                    f"{path}: the {what} CSV needs the columns 'path' and {column!r}; "
                    f"it has {', '.join(reader.fieldnames or []) or 'none'}"
                )
            return {row["path"]: row[column] for row in reader if row.get("path") is not None}
    except UnicodeDecodeError as e:
        raise NoveltyError(
            f"{path}: the {what} CSV is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8"
        ) from None
    except csv.Error as e:
        raise NoveltyError(f"{path}: not a readable CSV file ({e})") from None


class _PathTable:
    """Values of a CSV keyed by image path, matched to inputs as ``novelty dataset add-csv`` reads paths (a
    relative path from the CSV's folder: :func:`~novelty.flywheel.labels.labelimport.resolve_csv_path`), else by the
    path as written, an archive member's name, or a file name that occurs once in the CSV."""

    def __init__(self, csv_path: str, source: str, pairs: list[tuple[str, str]]) -> None:
        from novelty.flywheel.labels.labelimport import resolve_csv_path

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
    from novelty.flywheel.labels.labelimport import read_labels_csv

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
        return _PathTable(args.groups, args.groups, list(_read_table(args.groups, "group", "groups").items()))
    if args.labels:
        pairs = list(_read_table(args.labels, args.groups, "labels").items())
        return _PathTable(args.labels, f"column {args.groups!r} of {args.labels}", pairs)
    raise UsageError(
        f"--groups {args.groups}: no such file, and no --labels CSV to take a column of that name from"
    )


def _detector_of(args: argparse.Namespace) -> Any:
    """The unfitted detector ``novelty fit``'s options describe."""
    from novelty.detector import NoveltyDetector

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
    )


def _cmd_fit_dataset(args: argparse.Namespace) -> int:
    """``novelty fit --dataset DIR``: the first detector of a flywheel, fitted as ``retrain`` fits, with its
    training record."""
    from novelty.flywheel.retrain import retrain, save_retrained

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
    import numpy as np

    from novelty.batch.sources import expand_inputs
    from novelty.fileio import sha256_bytes

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


def _check_out(path: str, *, results: bool) -> None:
    """Refuse an --out that cannot be written, before any work starts."""
    from novelty.batch.engine import check_results_path

    if results:
        check_results_path(path)  # a known suffix, not a directory
    elif os.path.isdir(path):
        raise UsageError(f"--out {path} is a directory; give the HTML file to write, e.g. {path}/report.html")


def _add_runtime_arg(p: argparse.ArgumentParser, text: str) -> None:
    from novelty.runtimes import RUNTIMES

    p.add_argument(
        "--runtime",
        choices=sorted(RUNTIMES),
        default=None,
        help=f"{text}; see README 'Runtimes' (optional engines: pip install 'novelty[NAME]')",
    )


def _add_embedding_args(s: argparse.ArgumentParser) -> None:
    """``novelty score --embeddings [--timestamps FILE]``: what ``novelty drift`` reads."""
    s.add_argument(
        "--embeddings",
        action="store_true",
        help="also write each image's embedding (float16) and when it was taken (EXIF DateTimeOriginal, else the "
        "file's modification time), for `novelty drift`",
    )
    s.add_argument(
        "--timestamps",
        metavar="CSV",
        help="UTF-8 CSV with columns path,timestamp (ISO 8601 or seconds since the epoch) that wins over EXIF and "
        "file times; needs --embeddings",
    )


def _timestamps(args: argparse.Namespace) -> dict[str, float] | None:
    if not getattr(args, "timestamps", None):
        return None
    if not args.embeddings:
        raise UsageError("--timestamps needs --embeddings (timestamps are written with the embeddings)")
    from novelty.batch.timestamps import timestamp_table

    return timestamp_table(_read_table(args.timestamps, "timestamp", "timestamps"), args.timestamps)


def _cmd_score(args: argparse.Namespace) -> int:
    from novelty.batch import score_inputs
    from novelty.detector import NoveltyDetector

    stamps = _timestamps(args)  # a bad CSV fails before the detector loads
    if args.engine == "ray":
        from novelty.batch.ray_engine import score_inputs_ray

        summary = score_inputs_ray(
            args.detector,
            args.inputs,
            args.out,
            address=args.address,
            actors=args.actors,
            block_size=args.block_size,
            batch_size=args.batch_size,
            runtime=args.runtime,
            chunk_rows=args.chunk_rows,
            resume=not args.no_resume,
            max_member_bytes=args.max_member_bytes,
            embeddings=args.embeddings,
            timestamps=stamps,
            maps=args.maps,
        )
        print(
            f"{summary.n_inputs} inputs → {summary.out}: {summary.n_novel} novel, {summary.n_errors} unreadable; "
            f"{summary.n_scored_now} scored now at {summary.images_per_second:.1f} img/s (Ray)"
        )
        return EXIT_PARTIAL if summary.n_errors else EXIT_OK
    det = NoveltyDetector.load(
        args.detector, device=args.device, num_workers=args.workers, runtime=args.runtime
    )
    if args.batch_size:
        det.embedder.batch_size = args.batch_size
    summary = score_inputs(
        det,
        args.inputs,
        args.out,
        chunk_rows=args.chunk_rows,
        resume=not args.no_resume,
        max_member_bytes=args.max_member_bytes,
        embeddings=args.embeddings,
        timestamps=stamps,
        maps=args.maps,
    )
    print(
        f"{summary.n_inputs} inputs → {summary.out}: {summary.n_novel} novel, {summary.n_errors} unreadable; "
        f"{summary.n_scored_now} scored now at {summary.images_per_second:.1f} img/s"
    )
    return EXIT_PARTIAL if summary.n_errors else EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from novelty.batch.report import report_from_files

    out = report_from_files(args.results, args.detector, args.out, top_n=args.top)
    print(f"report written to {out}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    verbosity = int(args.verbose or 0)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with plain_warnings(verbosity):  # `warning: …` on one line; -v keeps Python's file and line
        return _run(parser, args, verbosity)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, verbosity: int) -> int:
    """Run the parsed command: its exit code, and every error as one line on stderr."""
    from novelty.batch.errors import ResultsDependencyError, ResultsError

    try:
        if args.command in ("score", "report"):
            try:
                _check_out(args.out, results=args.command == "score")
            except ResultsDependencyError:
                raise  # not a usage error: a package to install (exit 1)
            except ResultsError as e:  # an unknown suffix, a directory
                raise UsageError(str(e)) from None
        if args.command == "fit":
            reg = registry_root(args.out)
            if reg is not None:
                raise UsageError(
                    f"--out {args.out} lies inside the model registry {reg}: registered versions never change; "
                    f"fit elsewhere, then `novelty register {reg} DIR`"
                )
            return _cmd_fit(args)
        if args.command == "score":
            return _cmd_score(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command in _flywheel_commands():
            return int(importlib.import_module(_flywheel_commands()[args.command]).run(args))
        if args.command == "drift":
            from novelty.cli import drift as drift_cli

            return drift_cli.run(args)
        if args.command == "demo":
            from novelty.cli import demo

            out = args.out or f"out/{args.scenario}.json"
            run = demo.windshield_main if args.scenario == "windshield" else demo.textile_main
            return run(out=out, save_dir=args.save)
        if args.command == "serve":
            from novelty.serve.cli import run as serve

            return serve(args)
    except UsageError as e:
        print(f"novelty {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (NoveltyError, OSError) as e:
        print(f"novelty {args.command}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so in one line; the traceback with -v
        if verbosity:
            logging.getLogger("novelty").error("unexpected error in novelty %s", args.command, exc_info=True)
        print(
            f"novelty {args.command}: unexpected error: {type(e).__name__}: {e}"
            + ("" if verbosity else " (run with -v for the traceback)"),
            file=sys.stderr,
        )
        return EXIT_FAILURE
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
