"""``novelty score`` (images and archives → one results row per input) and ``novelty report`` (a results file →
a self-contained HTML page)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from novelty.batch import score_inputs
from novelty.batch.engine import BatchSummary, check_results_path
from novelty.batch.errors import ResultsDependencyError, ResultsError
from novelty.batch.items import DEFAULT_MAX_MEMBER_BYTES
from novelty.batch.ray_engine import score_inputs_ray
from novelty.batch.report import report_from_files
from novelty.batch.timestamps import timestamp_table
from novelty.cli.common import EXIT_OK, EXIT_PARTIAL, UsageError, add_runtime_arg, int_arg, read_table
from novelty.detector import NoveltyDetector

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("score", "report")

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


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


def _threads(text: str) -> int | str:
    """``--threads``: a count ≥ 1 or ``auto``."""
    if text.strip() == "auto":
        return "auto"
    try:
        return int_arg(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1 or 'auto', got {text!r}") from None


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    s = sub.add_parser(
        "score", help="score images and archives; one row per input", epilog=epilog, formatter_class=fmt
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
        type=int_arg(1),
        default=512,
        help="rows per checkpointed chunk (default: %(default)s)",
    )
    s.add_argument("--batch-size", type=int_arg(1), default=None, help="images per forward pass (≥ 1)")
    s.add_argument(
        "--workers",
        type=int_arg(0),
        default=None,
        help="decoding processes, 0 for none (default: automatic)",
    )
    s.add_argument(
        "--threads",
        type=_threads,
        default=None,
        metavar="N|auto",
        help="compute threads of the forward pass (≥ 1), or auto: fewer while other processes keep cores busy "
        "and fewer are measured faster (last-bit differences in the scores; default: every thread)",
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
        "--actors", type=int_arg(1), default=None, help="--engine ray: scoring actors (default: one per CPU)"
    )
    s.add_argument(
        "--block-size",
        type=int_arg(1),
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
        epilog=epilog,
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
        "--top", type=int_arg(0), default=24, help="how many of the most novel images to show (default: 24)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        _check_out(args.out, results=args.command == "score")
    except ResultsDependencyError:
        raise  # not a usage error: a package to install (exit 1)
    except ResultsError as e:  # an unknown suffix, a directory
        raise UsageError(str(e)) from None
    return _cmd_score(args) if args.command == "score" else _cmd_report(args)


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
        if args.threads is not None:
            raise UsageError("--threads sets the local engine's threads; Ray gives each actor its CPUs")
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
        return _said(summary, " (Ray)")
    det = NoveltyDetector.load(
        args.detector, device=args.device, num_workers=args.workers, runtime=args.runtime
    )
    if args.batch_size:
        det.embedder.batch_size = args.batch_size
    if args.threads is not None:
        det.embedder.threads = args.threads
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
    return _said(summary)


def _said(summary: BatchSummary, engine: str = "") -> int:
    """Print the one-line summary of a run; its exit code (3 when some inputs were unreadable)."""
    print(
        f"{summary.n_inputs} inputs → {summary.out}: {summary.n_novel} novel, {summary.n_errors} unreadable; "
        f"{summary.n_scored_now} scored now at {summary.images_per_second:.1f} img/s{engine}"
    )
    return EXIT_PARTIAL if summary.n_errors else EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    out = report_from_files(args.results, args.detector, args.out, top_n=args.top)
    print(f"report written to {out}")
    return EXIT_OK
