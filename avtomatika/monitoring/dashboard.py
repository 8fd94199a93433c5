"""Aggregate statistics for ``GET /api/v1/dashboard``.

The snapshot, as JSON (the same fields as ``GetDashboardResponse`` in
``job_service.proto``)::

    {
      "jobs_by_status": {"pending": 0, "running": 2, "waiting_for_worker": 5, ...},
      "queue_depth_by_skill": {"video_transcoding": 4},
      "workers_by_status": {"idle": 1, "busy": 2, "draining": 0, "offline": 0},
      "workers_by_transport": {"grpc": 2, "rest": 1},
      "jobs_finished_last_minute": 17,
      "jobs_failed_last_minute": 1,
      "oldest_queued_at_by_skill_ms": {"video_transcoding": 1795741508000}
    }

(REST renders the last as ``oldest_queued_at_by_skill``, ISO 8601 times.)

``jobs_by_status`` and the two worker maps list every status and transport,
zeros included, so the shape never changes; ``queue_depth_by_skill`` and
``oldest_queued_at_by_skill_ms`` (when the longest-waiting task of each skill
was queued) list only skills with queued tasks. "Failed" counts jobs that ended failed, error
or quarantined; cancelled jobs are in neither count.

Job and queue counts come from storage (every instance agrees); workers and
the last-minute counts are this process's own: the workers connected to it
and the jobs whose end it committed, kept in sixty one-second buckets fed by
the event bus (constant memory, O(1) per event).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from avtomatika.clock import now_ms
from avtomatika.engine.core import Engine
from avtomatika.engine.events import E, JobEvent
from avtomatika.status import job_status_name
from avtomatika.v1 import job_pb2
from avtomatika.v1.job_pb2 import JobStatus
from avtomatika.v1.worker_pb2 import WorkerStatus, WorkerTransport

__all__ = ["Dashboard"]

_WINDOW_SECONDS = 60
_FAILED = frozenset(
    {
        job_pb2.JOB_STATUS_FAILED,
        job_pb2.JOB_STATUS_ERROR,
        job_pb2.JOB_STATUS_QUARANTINED,
    }
)


def _names(enum_names: list[str], prefix: str) -> list[str]:
    return [n.removeprefix(prefix).lower() for n in enum_names if not n.endswith("UNSPECIFIED")]


_JOB_STATUSES = _names(list(JobStatus.keys()), "JOB_STATUS_")
_WORKER_STATUSES = _names(list(WorkerStatus.keys()), "WORKER_STATUS_")
_TRANSPORTS = _names(list(WorkerTransport.keys()), "WORKER_TRANSPORT_")


class Dashboard:
    """Computes the snapshot; a :class:`~avtomatika.server.Service` whose
    start subscribes the rolling window to the engine's events."""

    def __init__(self, engine: Engine, clock: Callable[[], int] = now_ms) -> None:
        self._engine = engine
        self._clock = clock
        # One bucket per second of the window: [epoch second, finished, failed].
        self._buckets = [[0, 0, 0] for _ in range(_WINDOW_SECONDS)]
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self._engine.events.subscribe(
                self._on_event, [E.HISTORY_EVENT_TYPE_JOB_ENDED]
            )

    async def stop(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    async def snapshot(self) -> dict[str, Any]:
        """The dashboard's JSON object (see the module docstring)."""
        jobs = dict.fromkeys(_JOB_STATUSES, 0)
        for number, count in (await self._engine.storage.count_jobs()).items():
            if number != job_pb2.JOB_STATUS_UNSPECIFIED:
                jobs[job_status_name(JobStatus.ValueType(number))] = count
        queues = await self._engine.storage.queue_depths()
        oldest = await self._engine.storage.oldest_queued()
        by_status = dict.fromkeys(_WORKER_STATUSES, 0)
        by_transport = dict.fromkeys(_TRANSPORTS, 0)
        for info in await self._engine.workers.list_all():
            state = WorkerStatus.Name(info.status).removeprefix("WORKER_STATUS_").lower()
            way = WorkerTransport.Name(info.transport).removeprefix("WORKER_TRANSPORT_").lower()
            by_status[state] = by_status.get(state, 0) + 1
            by_transport[way] = by_transport.get(way, 0) + 1
        finished, failed = self._last_minute()
        return {
            "jobs_by_status": jobs,
            "queue_depth_by_skill": {skill: n for skill, n in sorted(queues.items()) if n},
            "workers_by_status": by_status,
            "workers_by_transport": by_transport,
            "jobs_finished_last_minute": finished,
            "jobs_failed_last_minute": failed,
            "oldest_queued_at_by_skill_ms": dict(sorted(oldest.items())),
        }

    def _on_event(self, item: JobEvent) -> None:
        if item.event.type != E.HISTORY_EVENT_TYPE_JOB_ENDED or item.job is None:
            return
        if item.job.status == job_pb2.JOB_STATUS_FINISHED:
            column = 1
        elif item.job.status in _FAILED:
            column = 2
        else:
            return
        second = item.event.timestamp_ms // 1000
        bucket = self._buckets[second % _WINDOW_SECONDS]
        if bucket[0] != second:
            bucket[:] = [second, 0, 0]
        bucket[column] += 1

    def _last_minute(self) -> tuple[int, int]:
        now = self._clock() // 1000
        finished = failed = 0
        for second, done, bad in self._buckets:
            if now - _WINDOW_SECONDS < second <= now:
                finished += done
                failed += bad
        return finished, failed
