"""Errors of the batch layer: results files, their resumption, and reports. All are ``NoveltyError``s."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from novelty.errors import NoveltyError

__all__ = [
    "MissingResultsError",
    "ReportMismatchError",
    "ResultsDependencyError",
    "ResultsError",
    "ResultsFormatError",
    "ResultsLockedError",
    "ResultsReadError",
    "ResumeMismatchError",
]


class ResultsError(NoveltyError):
    """A results file or its work directory could not be written or read."""


class ResultsFormatError(ResultsError, ValueError):
    """The output path has a suffix that is not a supported results format."""


class ResultsDependencyError(ResultsError, ImportError):
    """The format needs a package that is not installed; the message says what to install."""


class ResumeMismatchError(ResultsError):
    """The work directory holds the parts of an interrupted run with different settings or inputs."""


class ResultsLockedError(ResultsError):
    """Another writer (another process, or an unclosed ResultWriter) is writing the same output."""


class MissingResultsError(ResultsError):
    """``finalize`` was asked for keys that have no row; ``missing`` lists them all."""

    def __init__(self, missing: Sequence[str], n_expected: int, parts_dir: Path):
        self.missing = list(missing)
        shown = ", ".join(repr(k) for k in self.missing[:5])
        more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        super().__init__(
            f"{len(self.missing)} of {n_expected} inputs have no result row: {shown}{more}; "
            f"the rows written so far are kept in {parts_dir}, run again to score the rest"
        )


class ResultsReadError(ResultsError):
    """A results file is missing, truncated or not in the format its suffix says."""


class ReportMismatchError(ResultsError):
    """A report was asked for results with a detector that did not produce them."""
