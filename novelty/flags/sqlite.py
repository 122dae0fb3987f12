"""The default flag store: one SQLite database in WAL mode and the images on disk, named by their sha256.

Layout of the store directory::

    flags.db (+ -wal, -shm)      one row per flag
    images/ab/abcdef…            the image bytes, content-addressed (one file however often it is flagged)

Durability: the image is written to a temporary file, fsynced and renamed into place (then its directory
is fsynced) *before* the row is committed with ``synchronous=FULL``; so when :meth:`SQLiteFlagStore.add`
returns, both survive a ``kill -9`` or a power cut. A crash in between leaves at most an image without a
row, which the retried request reuses. Several threads and several processes may write at once: each
thread has its own connection, writers take the database lock with ``BEGIN IMMEDIATE`` and wait for it
(``busy_timeout``), and the unique id makes a duplicate insert a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from novelty.clock import utc_now
from novelty.errors import InvalidInputError
from novelty.fileio import TMP_PREFIX, atomic_write_bytes
from novelty.flags.base import (
    COLUMNS,
    Flag,
    FlagImageMissingError,
    FlagStoreError,
    check_limit,
    parse_time,
    prepare_flag,
    row_to_flag,
    to_us,
)

__all__ = ["SQLiteFlagStore"]

log = logging.getLogger("novelty.flags")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flags (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_us INTEGER NOT NULL,
    captured_us INTEGER,
    prediction TEXT,
    report TEXT,
    detector_version TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    UNIQUE (sha256, source)
);
CREATE INDEX IF NOT EXISTS flags_received ON flags (received_us, id);
"""


class SQLiteFlagStore:
    """Flags in ``DIR/flags.db`` (SQLite, WAL mode) and their images under ``DIR/images/``."""

    def __init__(self, directory: str | os.PathLike[str], *, busy_timeout_s: float = 60.0):
        self.root = Path(directory)
        self.images = self.root / "images"
        self.db_path = self.root / "flags.db"
        self.busy_timeout_s = busy_timeout_s
        try:
            self.images.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FlagStoreError(f"cannot create the flag store at {self.root}: {e.strerror or e}") from e
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        conn = self._conn()
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once for the database file
            conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise FlagStoreError(f"{self.db_path}: cannot set up the flag database ({e})") from e
        self._remove_stale_temporaries()

    def __repr__(self) -> str:
        return f"SQLiteFlagStore({str(self.root)!r})"

    # --- connections ----------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.db_path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as e:
                raise FlagStoreError(f"{self.db_path}: cannot open the flag database ({e})") from e
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._connections = self._connections, []
        for c in conns:
            with contextlib.suppress(sqlite3.Error):
                c.close()
        self._local = threading.local()

    # --- images ---------------------------------------------------------------------------------------
    def _image_path(self, sha256: str) -> Path:
        return self.images / sha256[:2] / sha256

    def _write_image(self, sha256: str, data: bytes) -> bool:
        """Make sure the image file exists; ``True`` when it had to be written."""
        path = self._image_path(sha256)
        if path.is_file() and path.stat().st_size == len(data):
            return False  # content-addressed and written atomically: a complete file is this very image
        path.parent.mkdir(exist_ok=True)
        atomic_write_bytes(path, data)  # temporary sibling, fsync, rename, fsync of the directory
        return True

    def _remove_stale_temporaries(self, older_than_s: float = 3600.0) -> None:
        """Temporary image files left by a killed writer (old enough that no writer still holds them)."""
        now = time.time()
        for tmp in self.images.glob(f"*/{TMP_PREFIX}*"):
            try:
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()
            except OSError:
                pass

    # --- the interface --------------------------------------------------------------------------------
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
        new = prepare_flag(
            image,
            source=source,
            prediction=prediction,
            report=report,
            captured_at=captured_at,
            metadata=metadata,
            detector_version=detector_version,
        )
        found = self.get(new.id)
        try:
            # also for a flag stored before: a re-flag puts back an image file that went missing
            written = self._write_image(new.sha256, bytes(image))
        except OSError as e:
            raise FlagStoreError(f"{self.images}: cannot write the image ({e.strerror or e})") from e
        if found is not None:
            if written:
                log.warning(
                    "flag %s: its image file was missing from %s; written again", found.id, self.images
                )
            return found, False
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO flags (id, sha256, source, size, received_us, captured_us, "
                    "prediction, report, detector_version, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new.id,
                        new.sha256,
                        new.source,
                        new.size,
                        to_us(utc_now()),
                        None if new.captured_at is None else to_us(new.captured_at),
                        new.prediction,
                        new.report,
                        new.detector_version,
                        new.metadata_json,
                    ),
                )
                created = cur.rowcount == 1
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise FlagStoreError(f"{self.db_path}: cannot store the flag ({e})") from e
        flag = self.get(new.id)
        if flag is None:  # pragma: no cover - the row was just committed
            raise FlagStoreError(f"{self.db_path}: flag {new.id} vanished after it was stored")
        return flag, created

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise FlagStoreError(f"{self.db_path}: cannot read flags ({e})") from e

    def get(self, flag_id: str) -> Flag | None:
        rows = self._query(f"SELECT {COLUMNS} FROM flags WHERE id = ?", (flag_id,))
        return row_to_flag(rows[0]) if rows else None

    def image(self, flag_id: str) -> bytes:
        flag = self.get(flag_id)
        if flag is None:
            raise FlagStoreError(f"no flag with id {flag_id!r} in {self.root}")
        path = self._image_path(flag.sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FlagImageMissingError(
                f"flag {flag_id}: its image file {path} is missing from the store (flag the image again to "
                "restore it)"
            ) from None
        except OSError as e:
            raise FlagStoreError(f"{self.root}: the image of flag {flag_id} is unreadable ({e})") from e

    def list(
        self, since: datetime | str | None = None, *, after: str | None = None, limit: int = 1000
    ) -> list[Flag]:
        check_limit(limit)
        where, params = [], []
        t = parse_time(since, "since")
        if t is not None:
            where.append("received_us >= ?")
            params.append(to_us(t))
        if after is not None:
            cursor = self._query("SELECT received_us, id FROM flags WHERE id = ?", (after,))
            if not cursor:
                raise InvalidInputError(f"after={after[:40]!r} is not the id of a stored flag")
            where.append("(received_us, id) > (?, ?)")
            params.extend(cursor[0])
        sql = f"SELECT {COLUMNS} FROM flags"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_us, id LIMIT ?"
        return [row_to_flag(r) for r in self._query(sql, (*params, limit))]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM flags")[0][0])
