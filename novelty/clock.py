"""The one clock of the package: the current UTC time, and times read from users checked against one range.

    utc_now()                 # an aware datetime in UTC
    utc_now_iso()             # "2026-12-06T23:50:00Z" (seconds; always ``Z``, never ``+00:00``)
    parse_time("2026-11-28T10:00:00+01:00", "since")   # aware UTC datetime, or InvalidInputError
    check_epoch_seconds(1.8e9, "timestamp")             # the same range for seconds since the epoch

Every time a user hands the package (a query's ``since``, a flag's ``captured_at``, a label CSV's ``time``, a
``--timestamps`` file, Label Studio's ``updated_at``) must lie in ``[1900-01-01, 2200-01-01)`` UTC. Outside it,
or when it cannot be read, :class:`~novelty.errors.InvalidInputError` names the field and the range: no
``OverflowError`` from a year-9999 time with a negative offset, no ``1e300`` seconds reaching drift's windows.
"""

from __future__ import annotations

import math
import reprlib
from datetime import datetime, timezone

from novelty.errors import InvalidInputError

__all__ = [
    "MAX_TIME",
    "MIN_TIME",
    "check_epoch_seconds",
    "iso",
    "parse_time",
    "utc_now",
    "utc_now_iso",
]

#: the earliest time accepted from a user (inclusive)
MIN_TIME = datetime(1900, 1, 1, tzinfo=timezone.utc)
#: the first time no longer accepted from a user
MAX_TIME = datetime(2200, 1, 1, tzinfo=timezone.utc)
_RANGE = "1900-01-01T00:00:00Z to 2199-12-31T23:59:59Z"
_MIN_S = MIN_TIME.timestamp()
_MAX_S = MAX_TIME.timestamp()


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def iso(t: datetime, timespec: str = "seconds") -> str:
    """An aware time as ISO 8601 in UTC with ``Z`` (``2026-12-06T23:50:00Z``)."""
    return t.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_seconds(seconds: float | None, timespec: str = "seconds") -> str | None:
    """Seconds since the epoch as ISO 8601 in UTC with ``Z``; ``None`` for a missing or non-finite time, or one
    beyond the years a datetime holds."""
    if seconds is None or not math.isfinite(seconds):
        return None
    try:
        return iso(datetime.fromtimestamp(seconds, tz=timezone.utc), timespec)
    except (OverflowError, OSError, ValueError):
        return None


def utc_now_iso(timespec: str = "seconds") -> str:
    """The current UTC time as ISO 8601 with ``Z``: what every record of the package writes."""
    return iso(utc_now(), timespec)


def parse_time(value: datetime | str | None, what: str = "time") -> datetime | None:
    """An ISO-8601 time (``2026-11-28T10:00:00Z``; a naive time is taken as UTC) → an aware UTC datetime.

    ``None`` and ``""`` give ``None``. Raises :class:`~novelty.errors.InvalidInputError` (naming ``what``) for
    text that is not ISO 8601, a value of another type, or a time outside [1900-01-01, 2200-01-01) UTC."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInputError(
                f"{what} {text[:64]!r} is not an ISO-8601 time, e.g. 2026-11-28T10:00:00Z"
            ) from None
    if not isinstance(value, datetime):
        raise InvalidInputError(
            f"{what} must be an ISO-8601 string or a datetime, got {type(value).__name__}"
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        out = value.astimezone(timezone.utc)
    except (
        OverflowError,
        ValueError,
    ):  # year 9999 at -05:00 is in year 10000 in UTC; year 1 at +05:00 before 1
        out = None
    if out is None or not MIN_TIME <= out < MAX_TIME:
        raise InvalidInputError(f"{what} {value.isoformat()!r} is out of range: times must lie in {_RANGE}")
    return out


def check_epoch_seconds(value: float, what: str = "timestamp") -> float:
    """``value`` (seconds since the epoch) when it is finite and in the range of :func:`parse_time`."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(
            f"{what} must be a number of seconds since the epoch, got {_short(value)}"
        ) from None
    if not math.isfinite(x) or not _MIN_S <= x < _MAX_S:
        raise InvalidInputError(
            f"{what} {_short(value)} is out of range: seconds since the epoch must lie in [{_MIN_S:.0f}, "
            f"{_MAX_S:.0f}) ({_RANGE})"
        )
    return x


def _short(value: object) -> str:
    """A value for a message, its repr bounded by :mod:`reprlib` (an integer past 4300 digits has none)."""
    try:
        return reprlib.repr(value)
    except ValueError:
        return f"a {type(value).__name__} too long to print"
