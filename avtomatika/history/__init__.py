"""Job history: every lifecycle event of a job, for ``GET /api/v1/jobs/{id}/history``.

:class:`HistoryWriter` (a service) listens to the engine's events and writes
them in batches, from its own task, to a :class:`HistorySink`:

- :class:`MemoryHistory` (default): bounded, lost on restart;
- SQLite (``HISTORY_DATABASE_URI=sqlite:///path``, through aiosqlite);
- PostgreSQL (``HISTORY_DATABASE_URI=postgresql://...``, through asyncpg);
- Redis, when ``REDIS_URL`` is set and ``HISTORY_DATABASE_URI`` is not:
  shared by every instance, bounded per job, expiring with the job.

The engine never waits for history: a full queue drops events and counts
them (:attr:`HistoryWriter.dropped`) instead of slowing jobs down.
"""

from __future__ import annotations

from avtomatika.history.memory import MemoryHistory
from avtomatika.history.sink import HistorySink, open_sink
from avtomatika.history.writer import HistoryWriter

__all__ = ["HistorySink", "HistoryWriter", "MemoryHistory", "open_sink"]
