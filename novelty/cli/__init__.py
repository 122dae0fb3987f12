"""The ``novelty`` command line: fit a detector, score archives, report, demos.

Exit codes (scripts can trust them):
  0  success
  1  failure (bad detector, unwritable output, …): a clear message on stderr, no traceback
  2  usage error (wrong arguments)
  3  finished, but some inputs were unreadable (each has a row with its reason in the results)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from novelty.batch import score_inputs
from novelty.batch.engine import check_results_path
from novelty.batch.errors import ResultsDependencyError, ResultsError
from novelty.batch.items import DEFAULT_MAX_MEMBER_BYTES
from novelty.batch.ray_engine import score_inputs_ray
from novelty.batch.report import report_from_files
from novelty.batch.timestamps import timestamp_table
from novelty.cli import demo
from novelty.cli import drift as drift_cli
from novelty.cli import fit as fit_cli
from novelty.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    UsageError,
    add_runtime_arg,
    int_arg,
    plain_warnings,
    read_table,
)

# the fit command's table readers and detector, importable from novelty.cli too
from novelty.cli.fit import _detector_of as _detector_of
from novelty.cli.fit import _groups_table as _groups_table
from novelty.cli.fit import _labels_table as _labels_table
from novelty.detector import NoveltyDetector
from novelty.errors import NoveltyError
from novelty.serve import cli as serve_cli
from novelty.version import __version__

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "UsageError", "main"]

EPILOG = """exit codes: 0 success · 1 failure · 2 usage error · 3 finished with some unreadable inputs
scores: higher = more novel; p_value < alpha flags an image as novel"""

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _int_arg(lowest: int) -> Any:
    return int_arg(lowest)


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


def _build_parser() -> argparse.ArgumentParser:
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

    fit_cli.add_parsers(sub, EPILOG, fmt)

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
    add_runtime_arg(
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


def _check_out(path: str, *, results: bool) -> None:
    """Refuse an --out that cannot be written, before any work starts."""
    if results:
        check_results_path(path)  # a known suffix, not a directory
    elif os.path.isdir(path):
        raise UsageError(f"--out {path} is a directory; give the HTML file to write, e.g. {path}/report.html")


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
    return timestamp_table(read_table(args.timestamps, "timestamp", "timestamps"), args.timestamps)


def _cmd_score(args: argparse.Namespace) -> int:
    stamps = _timestamps(args)  # a bad CSV fails before the detector loads
    if args.engine == "ray":
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
    try:
        if args.command in ("score", "report"):
            try:
                _check_out(args.out, results=args.command == "score")
            except ResultsDependencyError:
                raise  # not a usage error: a package to install (exit 1)
            except ResultsError as e:  # an unknown suffix, a directory
                raise UsageError(str(e)) from None
        if args.command in fit_cli.COMMANDS:
            return fit_cli.run(args)
        if args.command == "score":
            return _cmd_score(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command in _flywheel_commands():
            return int(importlib.import_module(_flywheel_commands()[args.command]).run(args))
        if args.command == "drift":
            return drift_cli.run(args)
        if args.command == "demo":
            out = args.out or f"out/{args.scenario}.json"
            run = demo.windshield_main if args.scenario == "windshield" else demo.textile_main
            return run(out=out, save_dir=args.save)
        if args.command == "serve":
            return serve_cli.run(args)
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
