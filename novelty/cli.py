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
import logging
import sys
from pathlib import Path
from typing import Any

from novelty.errors import NoveltyError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

EPILOG = """exit codes: 0 success · 1 failure · 2 usage error · 3 finished with some unreadable inputs
scores: higher = more novel; p_value < alpha flags an image as novel"""


def _build_parser() -> argparse.ArgumentParser:
    from novelty import __version__

    p = argparse.ArgumentParser(
        prog="novelty",
        description="Find the images a vision model was never trained for.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"novelty {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    f = sub.add_parser("fit", help="fit a detector on training images", epilog=EPILOG, formatter_class=fmt)
    f.add_argument(
        "data", nargs="+", help="training images: folders, globs, zip/tar archives, lists of paths"
    )
    f.add_argument("--out", required=True, metavar="DIR", help="detector directory to write")
    f.add_argument("--labels", metavar="CSV", help="CSV with columns path,label: also fit a condition head")
    f.add_argument(
        "--backbone", default="tf_efficientnet_lite0", help="timm model name (default: %(default)s)"
    )
    f.add_argument(
        "--weights", default=None, metavar="PATH", help="local backbone weights (safetensors or state dict)"
    )
    f.add_argument(
        "--scorers", default="knn", help="comma-separated scorers (knn, autoencoder); default: %(default)s"
    )
    f.add_argument(
        "--alpha", type=float, default=0.05, help="false-alarm rate to flag at (default: %(default)s)"
    )
    f.add_argument(
        "--calibration-fraction", type=float, default=0.2, help="held out to calibrate (default: %(default)s)"
    )
    f.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out unreadable training images instead of failing",
    )
    f.add_argument("--seed", type=int, default=0)

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
        "--chunk-rows", type=int, default=512, help="rows per checkpointed chunk (default: %(default)s)"
    )
    s.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    s.add_argument("--workers", type=int, default=None, help="decoding processes (default: automatic)")
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")

    r = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a results file",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    r.add_argument("results", help="results file written by `novelty score`")
    r.add_argument("--out", required=True, help="HTML file to write")
    r.add_argument(
        "--detector", metavar="DIR", help="the detector that scored them (adds calibration scores)"
    )
    r.add_argument("--top", type=int, default=24, help="how many of the most novel images to show")

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


def _read_labels(path: str) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise NoveltyError(f"{path}: the labels CSV needs the columns 'path' and 'label'")
        return {row["path"]: row["label"] for row in reader}


def _cmd_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from novelty.detector import NoveltyDetector
    from novelty.sources import expand_inputs

    items = expand_inputs(args.data)
    bad = [it for it in items if it.error]
    det = NoveltyDetector(
        backbone=args.backbone,
        weights=args.weights,
        scorers=tuple(x.strip() for x in args.scorers.split(",") if x.strip()),
        alpha=args.alpha,
        calibration_fraction=args.calibration_fraction,
        seed=args.seed,
    )
    res = det.embedder.embed_with_errors([it for it in items if not it.error], progress=None)
    good = [it for it in items if not it.error]
    failed = [(it.key, f"{e.reason_code}: {e.reason}") for it, e in zip(good, res.errors, strict=True) if e]
    failed += [(it.key, str(it.error)) for it in bad]
    if failed and not args.skip_unreadable:
        lines = "\n".join(f"  {k}: {why}" for k, why in failed[:20])
        raise NoveltyError(
            f"{len(failed)} training input(s) are unreadable (use --skip-unreadable):\n{lines}"
        )
    for k, why in failed:
        logging.getLogger("novelty").warning("skipped %s: %s", k, why)
    keep = res.ok
    keys = [it.key for it, ok in zip(good, keep, strict=True) if ok]
    labels: list[Any] | None = None
    if args.labels:
        table = _read_labels(args.labels)
        labels = []
        missing = []
        for it, ok in zip(good, keep, strict=True):
            if not ok:
                continue
            # match the CSV's path by the input's key, its archive member name, or its file name
            candidates = (it.key, it.member, Path(it.member or it.path).name)
            lab = next((table[c] for c in candidates if c is not None and c in table), None)
            if lab is None:
                missing.append(it.key)
            labels.append(lab)
        if missing:
            raise NoveltyError(f"{len(missing)} image(s) have no label in {args.labels}, e.g. {missing[:3]}")
    det.fit_embeddings(res.embeddings[np.asarray(keep)], labels, ids=keys)
    out = det.save(args.out)
    print(f"fitted {det!r}")
    print(f"saved to {out}" + (f" ({len(failed)} unreadable input(s) skipped)" if failed else ""))
    return EXIT_OK


def _cmd_score(args: argparse.Namespace) -> int:
    from novelty.batch import score_inputs
    from novelty.detector import NoveltyDetector

    det = NoveltyDetector.load(args.detector, device=args.device, num_workers=args.workers)
    if args.batch_size:
        det.embedder.batch_size = args.batch_size
    summary = score_inputs(det, args.inputs, args.out, chunk_rows=args.chunk_rows, resume=not args.no_resume)
    print(
        f"{summary.n_inputs} inputs → {summary.out}: {summary.n_novel} novel, {summary.n_errors} unreadable; "
        f"{summary.n_scored_now} scored now at {summary.images_per_second:.1f} img/s"
    )
    return EXIT_PARTIAL if summary.n_errors else EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from novelty.report import report_from_files

    out = report_from_files(args.results, args.detector, args.out, top_n=args.top)
    print(f"report written to {out}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "fit":
            return _cmd_fit(args)
        if args.command == "score":
            return _cmd_score(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "demo":
            from novelty import demo

            out = args.out or f"out/{args.scenario}.json"
            run = demo.windshield_main if args.scenario == "windshield" else demo.textile_main
            return run(out=out, save_dir=args.save)
        if args.command == "serve":
            from novelty.serve.cli import run as serve

            return serve(args)
    except NoveltyError as e:
        print(f"novelty {args.command}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as e:
        print(f"novelty {args.command}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
