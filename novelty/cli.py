"""The ``novelty`` command line.

Exit codes: 0 success · 2 usage error · 1 failure (a clear message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys

from novelty.errors import NoveltyError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _build_parser() -> argparse.ArgumentParser:
    from novelty import __version__

    p = argparse.ArgumentParser(
        prog="novelty", description="Find the images a vision model was never trained for."
    )
    p.add_argument("--version", action="version", version=f"novelty {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "demo":
            from novelty import demo

            out = args.out or f"out/{args.scenario}.json"
            run = demo.windshield_main if args.scenario == "windshield" else demo.textile_main
            return run(out=out, save_dir=args.save)
    except NoveltyError as e:
        print(f"novelty {args.command}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
