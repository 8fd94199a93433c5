"""The history table, shared by the SQLite and PostgreSQL backends.

One row per event::

    sequence      insertion order, assigned by the database
    event_id      unique: a batch written twice (a retry after a connection
                  lost mid-commit) adds nothing the second time
    job_id        what the endpoint looks up (indexed with the order below)
    timestamp_ms  when it happened, epoch milliseconds
    event         the whole avtomatika.v1.HistoryEvent, protobuf bytes

Only the columns a query needs are columns; the event itself stays protobuf
bytes like everything else the orchestrator stores (DESIGN.md §3), so a new
field in ``HistoryEvent`` needs no migration. A job's events are read in
``(timestamp_ms, sequence)`` order: by time across orchestrator processes
sharing one database, by insertion order within the same millisecond (one
process writes the events of one commit in the order they happened).
"""

from __future__ import annotations

__all__ = ["TABLE"]

TABLE = "avtomatika_history_events"
