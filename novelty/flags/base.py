"""What every flag store shares: the record, the interface, the identity rule and the checks on input."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from novelty.clock import iso, parse_time
from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import sha256_bytes

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "Flag",
    "FlagImageMissingError",
    "FlagStore",
    "FlagStoreError",
    "NewFlag",
    "flag_id",
    "from_us",
    "parse_metadata",
    "parse_time",
    "prepare_flag",
    "to_us",
]

#: limits on the free-text fields of a flag (characters) and on its metadata (bytes of JSON, nesting levels)
MAX_SOURCE, MAX_PREDICTION, MAX_REPORT = 256, 256, 4096
MAX_METADATA_BYTES = 16_384
MAX_METADATA_DEPTH = 32


class FlagStoreError(NoveltyError):
    """The flag store cannot be opened, read or written (the message names the store and the reason)."""


class FlagImageMissingError(FlagStoreError):
    """A stored flag's image file is gone from the store (deleted by hand, a lost disk). Flagging the same
    image again writes it back."""


@dataclass(frozen=True)
class Flag:
    """One stored flag. ``id`` is derived from ``sha256`` (of the image bytes) and ``source``."""

    id: str
    sha256: str
    source: str
    size: int  # bytes of the image
    received_at: datetime  # UTC, set by the store when the flag was first stored
    prediction: str | None = None  # what the production model predicted for the image
    report: str | None = None  # what the user reported
    captured_at: datetime | None = None  # when the image was taken (UTC)
    detector_version: str | None = None  # the detector the service ran when the flag arrived
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "source": self.source,
            "size": self.size,
            "received_at": _iso(self.received_at),
            "prediction": self.prediction,
            "report": self.report,
            "captured_at": None if self.captured_at is None else _iso(self.captured_at),
            "detector_version": self.detector_version,
            "metadata": dict(self.metadata),
        }


@runtime_checkable
class FlagStore(Protocol):
    """Stores flagged images with their context. Every method is safe to call from several threads."""

    def add(
        self,
        image: bytes,
        *,
        source: str = "",
        prediction: str | None = None,
        report: str | None = None,
        captured_at: datetime | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        detector_version: str | None = None,
    ) -> tuple[Flag, bool]:
        """Store a flag durably; ``(flag, created)``. The same image from the same source is stored once:
        adding it again returns the first record with ``created=False``."""
        ...

    def get(self, flag_id: str) -> Flag | None: ...

    def image(self, flag_id: str) -> bytes:
        """The image bytes of a stored flag (:class:`FlagStoreError` when unknown)."""
        ...

    def list(
        self, since: datetime | str | None = None, *, after: str | None = None, limit: int = 1000
    ) -> Sequence[Flag]:
        """Flags received at or after ``since``, oldest first (ordered by ``received_at``, then ``id``);
        ``after``: continue after the flag with this id (the last one of the previous page)."""
        ...

    def count(self) -> int: ...

    def close(self) -> None: ...


def flag_id(sha256: str, source: str) -> str:
    """The identity of a flag: the same image from the same source always gets the same id."""
    return sha256_bytes(f"{sha256}\n{source}".encode())[:32]


def to_us(t: datetime) -> int:
    """Microseconds since the epoch (stores keep times as integers: exact order, no time-zone surprises)."""
    delta = t - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).replace(microsecond=us % 1_000_000)


def _iso(t: datetime) -> str:
    return iso(t, "auto")


@dataclass(frozen=True)
class NewFlag:
    """A flag checked and normalised, ready for a backend to insert."""

    id: str
    sha256: str
    source: str
    size: int
    prediction: str | None
    report: str | None
    captured_at: datetime | None
    detector_version: str | None
    metadata_json: str


def _check_utf8(name: str, value: str) -> None:
    """Refuse text that has no UTF-8 form (a lone surrogate such as ``"\\ud800"``): no store can keep it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"{name} is not valid Unicode text: a lone surrogate {value[e.start]!r} at character {e.start}"
        ) from None


def _text(name: str, value: Any, limit: int, *, required: bool = False) -> str | None:
    if value is None:
        return "" if required else None
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidInputError(f"{name} has {len(value)} characters; the limit is {limit}")
    if "\x00" in value:
        raise InvalidInputError(f"{name} must not contain NUL characters")
    _check_utf8(name, value)
    return value


def _check_metadata_shape(metadata: Mapping[str, Any]) -> None:
    """Walk the metadata without recursion: at most :data:`MAX_METADATA_DEPTH` levels of objects and arrays
    and no more values than its JSON could hold within :data:`MAX_METADATA_BYTES` (which also ends a walk
    of a structure that contains itself); every string, key or value, must be valid Unicode."""
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_METADATA_BYTES:
            raise InvalidInputError(
                f"metadata holds more than {MAX_METADATA_BYTES} values; its JSON may have at most "
                f"{MAX_METADATA_BYTES} bytes"
            )
        if isinstance(value, str):
            _check_utf8("metadata", value)
            continue
        if isinstance(value, Mapping):
            children: list[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, (list, tuple)):
            children = list(value)
        else:
            continue
        if depth > MAX_METADATA_DEPTH:
            raise InvalidInputError(
                f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep; the limit is {MAX_METADATA_DEPTH}"
            )
        stack.extend((c, depth + 1) for c in children)


def _json_depth(text: str) -> int:
    """The deepest nesting of objects and arrays in JSON text (brackets inside strings do not count), read
    without recursion; an unbalanced text gives a wrong number that ``json.loads`` then refuses."""
    if text.count("[") + text.count("{") <= MAX_METADATA_DEPTH:
        return text.count("[") + text.count(
            "{"
        )  # a bound that is enough to know the text is within the limit
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_metadata(text: str) -> dict[str, Any]:
    """Metadata sent as JSON text (a form field, a query parameter) → a dict, within the limits of
    :func:`prepare_flag`; :class:`~novelty.errors.InvalidInputError` says what is wrong. The size and the
    nesting are checked before the text is parsed, so no input makes the parser recurse without bound."""
    if len(text) > 4 * MAX_METADATA_BYTES:  # whitespace aside, the JSON stored must fit MAX_METADATA_BYTES
        raise InvalidInputError(
            f"metadata has {len(text)} characters of JSON; the limit is {MAX_METADATA_BYTES} bytes"
        )
    depth = _json_depth(text)
    if depth > MAX_METADATA_DEPTH:
        raise InvalidInputError(f"metadata is nested {depth} levels deep; the limit is {MAX_METADATA_DEPTH}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"metadata is not valid JSON ({e.msg} at character {e.pos})") from None
    except RecursionError:  # pragma: no cover - the depth was checked above
        raise InvalidInputError(f"metadata is nested too deeply; the limit is {MAX_METADATA_DEPTH}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"metadata must be a JSON object, got {type(value).__name__}")
    return value


def prepare_flag(
    image: bytes,
    *,
    source: str | None,
    prediction: str | None,
    report: str | None,
    captured_at: datetime | str | None,
    metadata: Mapping[str, Any] | None,
    detector_version: str | None,
) -> NewFlag:
    """Check the fields of a new flag (:class:`~novelty.errors.InvalidInputError` names the bad one)."""
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"the image must be bytes, got {type(image).__name__}")
    data = bytes(image)
    if not data:
        raise InvalidInputError("the image is empty (zero bytes)")
    src = _text("source", source, MAX_SOURCE, required=True) or ""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    _check_metadata_shape(metadata)
    try:
        meta = json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False, allow_nan=False)
        size = len(meta.encode("utf-8"))
    except (TypeError, ValueError) as e:  # UnicodeEncodeError is a ValueError
        raise InvalidInputError(f"metadata must be JSON-serialisable ({e})") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata has {size} bytes of JSON; the limit is {MAX_METADATA_BYTES}")
    sha = sha256_bytes(data)
    return NewFlag(
        id=flag_id(sha, src),
        sha256=sha,
        source=src,
        size=len(data),
        prediction=_text("prediction", prediction, MAX_PREDICTION),
        report=_text("report", report, MAX_REPORT),
        captured_at=parse_time(captured_at, "captured_at"),
        detector_version=_text("detector_version", detector_version, 128),
        metadata_json=meta,
    )


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise InvalidInputError(f"limit must be an integer in [1, 10000], got {limit!r}")
    return limit


def row_to_flag(row: Sequence[Any]) -> Flag:
    """Build a :class:`Flag` from the columns in :data:`COLUMNS` order (both backends select them so)."""
    fid, sha, source, size, received, captured, prediction, report, version, meta = row
    return Flag(
        id=fid,
        sha256=sha,
        source=source,
        size=int(size),
        received_at=from_us(int(received)),
        prediction=prediction,
        report=report,
        captured_at=None if captured is None else from_us(int(captured)),
        detector_version=version,
        metadata=json.loads(meta) if isinstance(meta, str) else dict(meta or {}),
    )


#: the columns, in the order :func:`row_to_flag` reads them
COLUMNS = "id, sha256, source, size, received_us, captured_us, prediction, report, detector_version, metadata"
