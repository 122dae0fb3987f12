"""What every flag store shares: the record, the interface, the identity rule and the checks on input."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import sha256_bytes

__all__ = [
    "MAX_METADATA_BYTES",
    "Flag",
    "FlagStore",
    "FlagStoreError",
    "NewFlag",
    "flag_id",
    "from_us",
    "parse_time",
    "prepare_flag",
    "to_us",
]

#: limits on the free-text fields of a flag (characters) and on its metadata (bytes of JSON)
MAX_SOURCE, MAX_PREDICTION, MAX_REPORT = 256, 256, 4096
MAX_METADATA_BYTES = 16_384


class FlagStoreError(NoveltyError):
    """The flag store cannot be opened, read or written (the message names the store and the reason)."""


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
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(value: datetime | str | None, what: str = "time") -> datetime | None:
    """An ISO-8601 time (``2026-11-28T10:00:00Z``; naive times are taken as UTC) → an aware UTC datetime."""
    if value is None or value == "":
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
    return value.astimezone(timezone.utc)


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


def _text(name: str, value: Any, limit: int, *, required: bool = False) -> str | None:
    if value is None:
        return "" if required else None
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidInputError(f"{name} has {len(value)} characters; the limit is {limit}")
    if "\x00" in value:
        raise InvalidInputError(f"{name} must not contain NUL characters")
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
    try:
        meta = json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"metadata must be JSON-serialisable ({e})") from None
    if len(meta.encode()) > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"metadata has {len(meta.encode())} bytes of JSON; the limit is {MAX_METADATA_BYTES}"
        )
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
