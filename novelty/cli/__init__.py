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
import sys
from typing import Any

from novelty.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    UsageError,
    plain_warnings,
)

# the fit command's table readers and detector, importable from novelty.cli too
from novelty.cli.fit import _detector_of as _detector_of
from novelty.cli.fit import _groups_table as _groups_table
from novelty.cli.fit import _labels_table as _labels_table
from novelty.errors import NoveltyError
from novelty.version import __version__

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "UsageError", "main"]

EPILOG = """exit codes: 0 success · 1 failure · 2 usage error · 3 finished with some unreadable inputs
scores: higher = more novel; p_value < alpha flags an image as novel"""


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

    # every command module adds its subcommands (in this order in --help) and runs them
    for mod in _command_modules():
        mod.add_parsers(sub, EPILOG, fmt)
    return p


#: the modules of the subcommands, in the order of ``--help``. Each has ``COMMANDS`` (the names it adds),
#: ``add_parsers(sub, epilog, fmt)`` and ``run(args) -> int``; one whose optional dependency is missing is left
#: out (its module is not found), the others still work
COMMAND_MODULES: tuple[str, ...] = (
    "novelty.cli.fit",
    "novelty.cli.score",
    "novelty.cli.drift",
    "novelty.cli.demo",
    "novelty.cli.select",
    "novelty.cli.labels",
    "novelty.cli.retrain",
    "novelty.cli.registry",
    "novelty.cli.flywheel",
    "novelty.serve.cli",
)


def _command_modules() -> list[Any]:
    out = []
    for name in COMMAND_MODULES:
        try:
            out.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    return out


def _commands() -> dict[str, Any]:
    """``{command: its module}``."""
    return {cmd: mod for mod in _command_modules() for cmd in mod.COMMANDS}


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
        return int(_commands()[args.command].run(args))
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
