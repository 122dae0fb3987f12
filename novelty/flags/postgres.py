"""The flag store on PostgreSQL (psycopg 3), for a fleet of service replicas that share one database.

Same interface and identity rule as :class:`~novelty.flags.sqlite.SQLiteFlagStore`. Images are kept in the
database too (``novelty_flag_images``, one row per sha256), inserted in the same transaction as the flag,
so every replica sees every image and a committed flag always has its image. Each thread holds its own
connection (autocommit; writes in explicit transactions); a connection lost to a restarted server is replaced on the next call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from novelty.clock import utc_now
from novelty.errors import InvalidInputError
from novelty.flags.base import (
    COLUMNS,
    Flag,
    FlagStoreError,
    check_limit,
    parse_time,
    prepare_flag,
    row_to_flag,
    to_us,
)

__all__ = ["PostgresFlagStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS novelty_flag_images (
    sha256 TEXT PRIMARY KEY,
    data BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS novelty_flags (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL REFERENCES novelty_flag_images (sha256),
    source TEXT NOT NULL,
    size BIGINT NOT NULL,
    received_us BIGINT NOT NULL,
    captured_us BIGINT,
    prediction TEXT,
    report TEXT,
    detector_version TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    UNIQUE (sha256, source)
);
CREATE INDEX IF NOT EXISTS novelty_flags_received ON novelty_flags (received_us, id);
"""
_SCHEMA_LOCK = 0x6E6F76656C7479  # advisory lock: replicas starting together create the tables once


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise FlagStoreError("the PostgreSQL flag store needs psycopg 3: pip install 'novelty[serve]'") from e
    return psycopg


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in cred else f"{scheme}://{user}@{host}"


class PostgresFlagStore:
    """Flags and their images in the PostgreSQL database at ``url`` (``postgresql://user:pw@host:port/db``)."""

    def __init__(self, url: str, *, connect_timeout_s: int = 10):
        self.url = url
        self.name = _redact(url)
        self.connect_timeout_s = connect_timeout_s
        self._psycopg = _psycopg()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []

        def setup(conn: Any) -> None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)

        self._run(setup, "set up the flag tables")

    def __repr__(self) -> str:
        return f"PostgresFlagStore({self.name!r})"

    # --- connections ----------------------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._psycopg.connect(self.url, connect_timeout=self.connect_timeout_s, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _run(self, work: Any, what: str) -> Any:
        """``work(conn)`` on this thread's connection; once more on a fresh one if the connection was lost
        (a restarted server). A statement that failed for another reason is not repeated."""
        pg = self._psycopg
        for attempt in (1, 2):
            try:
                conn = self._conn()
            except pg.Error as e:
                raise FlagStoreError(f"{self.name}: cannot connect to {what} ({e})") from e
            try:
                return work(conn)
            except pg.OperationalError as e:
                lost = conn.broken or conn.closed
                if lost and attempt == 1:
                    continue
                raise FlagStoreError(f"{self.name}: cannot {what} ({e})") from e
            except pg.Error as e:
                raise FlagStoreError(f"{self.name}: cannot {what} ({e})") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            conns, self._connections = self._connections, []
        for c in conns:
            with contextlib.suppress(Exception):  # closing a broken connection may fail in several ways
                c.close()
        self._local = threading.local()

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
        if found is not None:
            return found, False
        data = bytes(image)

        def insert(conn: Any) -> bool:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO novelty_flag_images (sha256, data) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (new.sha256, data),
                )
                cur = conn.execute(
                    "INSERT INTO novelty_flags (id, sha256, source, size, received_us, captured_us, "
                    "prediction, report, detector_version, metadata) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
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
                return bool(cur.rowcount == 1)

        created = self._run(insert, "store the flag")
        flag = self.get(new.id)
        if flag is None:  # pragma: no cover - the row was just committed
            raise FlagStoreError(f"{self.name}: flag {new.id} vanished after it was stored")
        return flag, created

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        rows: list[Any] = self._run(lambda conn: conn.execute(sql, params).fetchall(), "read flags")
        return rows

    def get(self, flag_id: str) -> Flag | None:
        rows = self._query(f"SELECT {COLUMNS} FROM novelty_flags WHERE id = %s", (flag_id,))
        return row_to_flag(rows[0]) if rows else None

    def image(self, flag_id: str) -> bytes:
        rows = self._query(
            "SELECT i.data FROM novelty_flags f JOIN novelty_flag_images i USING (sha256) WHERE f.id = %s",
            (flag_id,),
        )
        if not rows:
            raise FlagStoreError(f"no flag with id {flag_id!r} in {self.name}")
        return bytes(rows[0][0])

    def list(
        self, since: datetime | str | None = None, *, after: str | None = None, limit: int = 1000
    ) -> list[Flag]:
        check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        t = parse_time(since, "since")
        if t is not None:
            where.append("received_us >= %s")
            params.append(to_us(t))
        if after is not None:
            cursor = self._query("SELECT received_us, id FROM novelty_flags WHERE id = %s", (after,))
            if not cursor:
                raise InvalidInputError(f"after={after[:40]!r} is not the id of a stored flag")
            where.append("(received_us, id) > (%s, %s)")
            params.extend(cursor[0])
        sql = f"SELECT {COLUMNS} FROM novelty_flags"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_us, id LIMIT %s"
        return [row_to_flag(r) for r in self._query(sql, (*params, limit))]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM novelty_flags")[0][0])
