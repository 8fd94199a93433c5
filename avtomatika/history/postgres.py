"""History in PostgreSQL, through an asyncpg pool (``postgresql://...``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from avtomatika.errors import Unavailable
from avtomatika.history.tables import TABLE
from avtomatika.v1.history_pb2 import HistoryEvent

__all__ = ["PostgresHistory"]

# Several orchestrators may start at once against one database: CREATE ...
# IF NOT EXISTS is not safe against itself, so it runs under a lock.
_SCHEMA = (
    f"SELECT pg_advisory_xact_lock(hashtext('{TABLE}'))",
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        sequence BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        event BYTEA NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_job ON {TABLE} (job_id, timestamp_ms, sequence)",
)
_INSERT = (
    f"INSERT INTO {TABLE} (event_id, job_id, timestamp_ms, event) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_SELECT = f"SELECT event FROM {TABLE} WHERE job_id = $1 ORDER BY timestamp_ms, sequence"

# What a lost or refused connection raises, besides the server's own errors.
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_CONNECT_TIMEOUT_SECONDS = 10.0
_POOL_SIZE = 4
_CLOSE_TIMEOUT_SECONDS = 5.0


class PostgresHistory:
    """A :class:`~avtomatika.history.HistorySink` on an asyncpg pool; a
    connection lost during an outage is replaced on the next use."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool: asyncpg.Pool | None = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresHistory:
        """Connect and create the table if missing."""
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=_POOL_SIZE, timeout=_CONNECT_TIMEOUT_SECONDS
            )
        except _FAILURES as exc:
            raise Unavailable(f"cannot connect to the history database: {exc}") from exc
        try:
            async with pool.acquire() as connection, connection.transaction():
                for statement in _SCHEMA:
                    await connection.execute(statement)
        except _FAILURES as exc:
            await pool.close()
            raise Unavailable(f"cannot set up the history database: {exc}") from exc
        return cls(pool)

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable("the history database is closed")
        return self._pool

    async def append(self, events: Sequence[HistoryEvent]) -> None:
        pool = self._open_pool()
        rows = [(e.event_id, e.job_id, e.timestamp_ms, e.SerializeToString()) for e in events]
        try:
            async with pool.acquire() as connection, connection.transaction():
                await connection.executemany(_INSERT, rows)
        except _FAILURES as exc:
            raise Unavailable(f"history write failed: {exc}") from exc

    async def list_for_job(self, job_id: str) -> list[HistoryEvent]:
        pool = self._open_pool()
        try:
            rows = await pool.fetch(_SELECT, job_id)
        except _FAILURES as exc:
            raise Unavailable(f"history read failed: {exc}") from exc
        return [HistoryEvent.FromString(row["event"]) for row in rows]

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            pool.terminate()  # a connection stuck on a dead server
