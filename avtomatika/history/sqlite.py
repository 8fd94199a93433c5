"""History in a SQLite file, through aiosqlite (``sqlite:///path``; four
slashes for an absolute path: ``sqlite:////var/lib/avtomatika/history.db``)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from avtomatika.errors import Unavailable
from avtomatika.history.tables import TABLE
from avtomatika.v1.history_pb2 import HistoryEvent

__all__ = ["SqliteHistory"]

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        event BLOB NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_job ON {TABLE} (job_id, timestamp_ms, sequence)",
)
_INSERT = (
    f"INSERT OR IGNORE INTO {TABLE} (event_id, job_id, timestamp_ms, event) VALUES (?, ?, ?, ?)"
)
_SELECT = f"SELECT event FROM {TABLE} WHERE job_id = ? ORDER BY timestamp_ms, sequence"


class SqliteHistory:
    """A :class:`~avtomatika.history.HistorySink` on one SQLite connection
    (aiosqlite runs it in its own thread, so queries never block the loop)."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db: aiosqlite.Connection | None = connection

    @classmethod
    async def open(cls, path: str) -> SqliteHistory:
        """Open (or create) the database at ``path`` and its table."""
        if path != ":memory:" and not Path(path).parent.is_dir():
            # Checked here rather than left to aiosqlite, whose worker thread
            # outlives a failed connect and may then touch a closed loop.
            raise Unavailable(
                f"cannot open the history database {path!r}: {Path(path).parent} is not a directory"
            )
        try:
            connection = await aiosqlite.connect(path)
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot open the history database {path!r}: {exc}") from exc
        try:
            # WAL: readers (the endpoint) do not wait for the writer.
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                await connection.execute(statement)
            await connection.commit()
        except sqlite3.Error as exc:
            await connection.close()
            raise Unavailable(f"cannot set up the history database {path!r}: {exc}") from exc
        return cls(connection)

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise Unavailable("the history database is closed")
        return self._db

    async def append(self, events: Sequence[HistoryEvent]) -> None:
        db = self._connection()
        rows = [(e.event_id, e.job_id, e.timestamp_ms, e.SerializeToString()) for e in events]
        try:
            await db.executemany(_INSERT, rows)
            await db.commit()
        except sqlite3.Error as exc:
            await _rollback(db)
            raise Unavailable(f"history write failed: {exc}") from exc

    async def list_for_job(self, job_id: str) -> list[HistoryEvent]:
        db = self._connection()
        try:
            async with db.execute(_SELECT, (job_id,)) as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"history read failed: {exc}") from exc
        return [HistoryEvent.FromString(row[0]) for row in rows]

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()


async def _rollback(db: aiosqlite.Connection) -> None:
    # If even this fails the connection is unusable; the next write says so.
    with contextlib.suppress(sqlite3.Error):
        await db.rollback()
