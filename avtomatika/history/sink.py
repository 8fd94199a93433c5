"""The contract every history backend keeps, and the choice of backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from avtomatika.config import Settings
from avtomatika.history.memory import MemoryHistory
from avtomatika.v1.history_pb2 import HistoryEvent

__all__ = ["HistorySink", "open_sink"]


class HistorySink(Protocol):
    """Where history events are kept.

    Backends raise :class:`~avtomatika.errors.Unavailable` when their
    database cannot be reached, so the writer knows to retry.
    """

    async def append(self, events: Sequence[HistoryEvent]) -> None:
        """Keep ``events`` (a batch, in the order they happened). Database
        backends skip an event whose ``event_id`` is already stored, so a
        batch whose outcome is unknown (the connection dropped during the
        commit) can safely be written again."""
        ...

    async def list_for_job(self, job_id: str) -> list[HistoryEvent]:
        """The events of ``job_id``, oldest first."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...


async def open_sink(settings: Settings) -> HistorySink:
    """The backend ``HISTORY_DATABASE_URI`` names, with its tables created if
    missing; unset, Redis when ``REDIS_URL`` is set (shared by every
    instance), else memory."""
    uri = settings.history_database_uri
    if not uri and settings.redis_url:
        from avtomatika.history.redis import RedisHistory

        return await RedisHistory.open(settings)
    if not uri:
        return MemoryHistory(
            settings.history_memory_events_per_job, settings.history_memory_max_events
        )
    # Imported here so that a process using the default never loads the
    # database drivers.
    if uri.startswith("sqlite:///"):
        from avtomatika.history.sqlite import SqliteHistory

        return await SqliteHistory.open(uri.removeprefix("sqlite:///"))
    from avtomatika.history.postgres import PostgresHistory

    return await PostgresHistory.open(uri)
