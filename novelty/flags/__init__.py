"""The flag store: images that production flagged (a user report, a suspicious prediction), kept for labelling.

One interface, two backends::

    store = open_flag_store("flags/")                        # SQLite in WAL mode + images on disk by sha256
    store = open_flag_store("postgresql://user@db/novelty")  # PostgreSQL, for a fleet of replicas
    flag, created = store.add(jpeg_bytes, source="car-17", prediction="wet")
    store.get(flag.id); store.list(since=yesterday); store.count(); store.image(flag.id)

A flag is identified by the sha256 of its image and its ``source``: adding the same image from the same source
again returns the stored flag (``created=False``), so a client may retry a request whose answer it never got.
``add`` returns only after the row (and the image) are durably committed.
"""

from __future__ import annotations

from novelty.flags.base import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    Flag,
    FlagImageMissingError,
    FlagStore,
    FlagStoreError,
    flag_id,
    parse_metadata,
    parse_time,
)
from novelty.flags.postgres import PostgresFlagStore  # psycopg is imported only when PostgreSQL is used
from novelty.flags.sqlite import SQLiteFlagStore

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "Flag",
    "FlagImageMissingError",
    "FlagStore",
    "FlagStoreError",
    "PostgresFlagStore",
    "SQLiteFlagStore",
    "flag_id",
    "open_flag_store",
    "parse_metadata",
    "parse_time",
]


def open_flag_store(location: str) -> FlagStore:
    """Open the store at ``location``: a ``postgresql://`` URL, or a directory (``sqlite:///DIR`` or ``DIR``)
    that holds ``flags.db`` and ``images/``."""
    if location.startswith(("postgresql://", "postgres://")):
        return PostgresFlagStore(location)
    if location.startswith("sqlite://"):
        location = location[len("sqlite://") :]
    return SQLiteFlagStore(location)
