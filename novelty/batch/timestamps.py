"""When each image was taken, for drift over time: a ``--timestamps`` CSV, EXIF ``DateTimeOriginal``, or the
file's modification time — in that order.

    stamp = image_timestamp(item, table)      # (seconds since the epoch, UTC; "csv" | "exif" | "mtime")

- **CSV** (``novelty score --timestamps FILE``, columns ``path,timestamp``): what the operator states wins over
  what the files say. ``timestamp`` is ISO 8601 (``2026-11-27T08:15:00Z``, ``2026-11-27 08:15:00+01:00``; no
  zone = UTC) or seconds since the epoch. Paths match an input's key, its archive member name or its file
  name, as for ``--labels``. Inputs the CSV does not list fall back to the file.
- **EXIF** ``DateTimeOriginal`` (with ``OffsetTimeOriginal`` when present; without it the camera's local
  time is read as UTC): read from the image header only, never decoding pixels.
- **mtime**: the file's modification time when it was listed; for an archive member, the archive's (the
  listing does not keep each member's own date).

An image none of them dates gets ``(nan, "")``. An EXIF or file time outside the range of
:func:`novelty.clock.check_epoch_seconds` (1900 to 2199, which also bounds the CSV's times) dates nothing: the
next source is tried.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from novelty.batch.items import InputItem
from novelty.clock import check_epoch_seconds, parse_time
from novelty.errors import InvalidInputError

__all__ = ["image_timestamp", "parse_timestamp", "timestamp_table"]

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_OFFSET_TIME_ORIGINAL = 36881
_EXIF_DATE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch from ISO 8601 text (no zone = UTC) or a number of seconds (text or a number);
    :class:`~novelty.errors.InvalidInputError` for anything else or a time outside 1900–2199 UTC."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        try:
            text = repr(float(text))
        except OverflowError:  # an int past float's range: surely out of range
            raise InvalidInputError("timestamp: a number too large to be seconds since the epoch") from None
    if not isinstance(text, str):
        raise InvalidInputError(
            f"a timestamp must be ISO-8601 text or seconds since the epoch, got {type(text).__name__}"
        )
    s = text.strip()
    if not s:
        raise InvalidInputError("an empty timestamp")
    try:
        value = float(s)
    except ValueError:
        value = None
    if value is not None:
        return check_epoch_seconds(value, "timestamp")
    if not s[:1].isdigit():
        raise InvalidInputError(
            f"{s[:64]!r} is not a timestamp: use ISO 8601 (2026-11-27T08:15:00Z) or seconds since the epoch"
        )
    dt = parse_time(s, "timestamp")
    return math.nan if dt is None else dt.timestamp()


def timestamp_table(rows: Mapping[str, str], source: str) -> dict[str, float]:
    """``{path: seconds}`` from the ``path → text`` cells of a timestamps CSV; a bad cell names its row."""
    out = {}
    for path, text in rows.items():
        try:
            out[path] = parse_timestamp(text)
        except InvalidInputError as e:
            raise InvalidInputError(f"{source}: the timestamp of {path!r}: {e}") from None
    return out


def _exif_time(data: bytes) -> float | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            exif = im.getexif()
            ifd = exif.get_ifd(_EXIF_IFD)
            raw = ifd.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME_ORIGINAL)
            offset = ifd.get(_OFFSET_TIME_ORIGINAL)
    except Exception:  # any unreadable header: no EXIF time
        return None
    m = _EXIF_DATE.match(str(raw or "").strip())
    if not m:
        return None
    try:
        y, mo, d, h, mi, sec = (int(g) for g in m.groups())
        dt = datetime(y, mo, d, h, mi, sec, tzinfo=timezone.utc)
    except ValueError:  # 0000:00:00 00:00:00 and the like
        return None
    off = re.fullmatch(r"([+-])(\d{2}):(\d{2})", str(offset or "").strip())
    if off:
        sign = 1 if off.group(1) == "+" else -1
        dt = dt.replace(tzinfo=None)
        return (dt - datetime(1970, 1, 1)).total_seconds() - sign * (
            int(off.group(2)) * 3600 + int(off.group(3)) * 60
        )
    return dt.timestamp()


def image_timestamp(item: InputItem, table: Mapping[str, float] | None = None) -> tuple[float, str]:
    """``(seconds since the epoch, source)`` of one input (see the module docstring)."""
    if table:
        for c in (item.key, item.member, Path(item.member or item.path).name):
            if c is not None and c in table:
                return float(table[c]), "csv"
    if item.error is None:
        try:
            t = _exif_time(item.read_bytes())
        except Exception:  # unreadable now: the row says so elsewhere; fall back to the file's time
            t = None
        if t is not None and _in_range(t):  # a camera's year 9999 is no time: the file's time instead
            return t, "exif"
    if item.member is None and item.mtime_ns is not None and _in_range(item.mtime_ns / 1e9):
        return item.mtime_ns / 1e9, "mtime"
    if item.member is not None and item.archive_stamp is not None and _in_range(item.archive_stamp[0] / 1e9):
        return item.archive_stamp[0] / 1e9, "mtime"
    return math.nan, ""


def _in_range(t: float) -> bool:
    """Whether ``t`` is a time the package accepts (:func:`~novelty.clock.check_epoch_seconds`)."""
    try:
        check_epoch_seconds(t, "timestamp")
    except InvalidInputError:
        return False
    return True
