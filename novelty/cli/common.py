"""What every ``novelty`` subcommand shares: exit codes, :class:`UsageError`, argument types, the ``--runtime``
option, the reading of a ``path,VALUE`` CSV (:func:`read_table`), and how a Python warning reads on the command
line (:func:`plain_warnings`).

The argument types are thin argparse adapters over :mod:`novelty.params`, so a command line and the library
refuse the same values with the same words; argparse turns the refusal into ``novelty CMD: error: argument
--seed: must be an integer ≥ 0, got -1`` and exit code 2, before anything is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TextIO

from novelty.embedding_layers import check_embedding_layers
from novelty.errors import InvalidInputError, NoveltyError
from novelty.params import check_int, check_real
from novelty.runtimes import AUTO, RUNTIMES

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "UsageError",
    "add_runtime_arg",
    "int_arg",
    "layers_arg",
    "plain_warnings",
    "read_table",
    "real_arg",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class UsageError(NoveltyError):
    """Arguments that cannot work, found before any work starts (exit code 2)."""


def int_arg(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[minimum, maximum]`` (either bound may be open-ended)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        try:
            check_int(value, "the value", minimum=minimum)
        except InvalidInputError:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {minimum}, got {value}") from None
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be an integer ≤ {maximum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def real_arg(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """An argparse ``type``: a finite number within the bounds (``nan`` and ``inf`` refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        try:
            return check_real(value, "the value", low=low, high=high, low_open=low_open, high_open=high_open)
        except InvalidInputError as e:
            raise argparse.ArgumentTypeError(str(e).replace("the value ", "", 1)) from None

    parse.__name__ = "number"
    return parse


def layers_arg(text: str) -> tuple[str, ...]:
    """An argparse ``type``: embedding layers such as ``final+s16`` (:mod:`novelty.embedding_layers`)."""
    try:
        return check_embedding_layers(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


layers_arg.__name__ = "layers"


def add_runtime_arg(p: argparse.ArgumentParser, text: str) -> None:
    """``--runtime NAME``: where the backbone runs (``fit`` and ``score``), with the command's own help text."""
    p.add_argument(
        "--runtime",
        choices=[*sorted(RUNTIMES), AUTO],
        default=None,
        help=f"{text}; auto: the fastest measured on this machine; see README 'Runtimes' (optional engines: pip "
        "install 'novelty[NAME]')",
    )


def read_table(path: str, column: str, what: str) -> dict[str, str]:
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


@contextlib.contextmanager
def plain_warnings(verbose: int = 0) -> Iterator[None]:
    """While a command runs, each Python warning is one line on stderr, ``warning: MESSAGE``, instead of
    Python's ``FILE:LINE: UserWarning: MESSAGE`` followed by the source line. With ``verbose`` (``-v``) Python's
    own form, file and line included, is kept. Python's handler is back when the block ends, so a program that
    imports the library and calls :func:`novelty.cli.main` keeps its warnings as they were."""
    if verbose:
        yield
        return

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())  # one line, whatever the message holds
        with contextlib.suppress(OSError, ValueError):  # stderr closed: no reason to fail the command
            print(f"warning: {text}", file=file or sys.stderr, flush=True)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
