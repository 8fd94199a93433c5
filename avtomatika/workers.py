"""The workers connected to this process, whatever their transport.

Transports register a worker with a :class:`CancelSink` (its gRPC stream or
WebSocket) so the engine can push a cancel to it in real time; the registry is
also what ``GET /api/v1/workers`` lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from avtomatika.clock import now_ms
from avtomatika.v1.worker_pb2 import WorkerInfo

__all__ = ["CancelSink", "WorkerRegistry"]


class CancelSink(Protocol):
    """A live connection to a worker that can carry a cancel command."""

    def push_cancel(self, task_id: str, job_id: str, reason: str) -> bool:
        """Queue a cancel for the worker; False if the connection is gone."""


@dataclass(slots=True)
class _Entry:
    info: WorkerInfo
    sink: CancelSink | None


class WorkerRegistry:
    """Connected workers by id. A second connection for the same id replaces
    the first."""

    def __init__(self) -> None:
        self._workers: dict[str, _Entry] = {}

    def connect(self, info: WorkerInfo, sink: CancelSink | None) -> None:
        """Record ``info`` as connected through ``sink``."""
        info.last_seen_ms = now_ms()
        self._workers[info.registration.worker_id] = _Entry(info, sink)

    def disconnect(self, worker_id: str, sink: CancelSink | None) -> None:
        """Forget the worker, unless a newer connection has replaced ``sink``."""
        entry = self._workers.get(worker_id)
        if entry is not None and entry.sink is sink:
            del self._workers[worker_id]

    def is_current(self, worker_id: str, sink: CancelSink | None) -> bool:
        """Whether ``sink`` is the worker's live connection."""
        entry = self._workers.get(worker_id)
        return entry is not None and entry.sink is sink

    def info(self, worker_id: str) -> WorkerInfo | None:
        """The connected worker's live record (not a copy: do not modify it)."""
        entry = self._workers.get(worker_id)
        return None if entry is None else entry.info

    def touch(self, worker_id: str) -> None:
        """Note a sign of life."""
        entry = self._workers.get(worker_id)
        if entry is not None:
            entry.info.last_seen_ms = now_ms()

    def push_cancel(self, worker_id: str, task_id: str, job_id: str, reason: str) -> bool:
        """Push a cancel to the worker; True when it went out in real time."""
        entry = self._workers.get(worker_id)
        if entry is None or entry.sink is None:
            return False
        return entry.sink.push_cancel(task_id, job_id, reason)

    def list(self) -> list[WorkerInfo]:
        """Snapshots of every connected worker."""
        result = []
        for entry in self._workers.values():
            info = WorkerInfo()
            info.CopyFrom(entry.info)
            result.append(info)
        return result
