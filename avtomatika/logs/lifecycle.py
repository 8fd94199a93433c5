"""One INFO line per job lifecycle event and per worker change.

A service listening to the engine (its event bus and its worker registry's
``changes``), so the engine and the transports log none of it themselves.
Jobs log on ``avtomatika.jobs``, workers on ``avtomatika.workers``; every
line carries ``job_id`` / ``worker_id`` (and ``task_id``, ``state``,
``client_id``, ... where known) as structured fields.

The engine publishes about ten events per job, so the listener subscribes
only to the event types it writes, asks whether INFO is on before building
anything, and writes through :func:`~avtomatika.logs.direct.log_line`
(no record made when only the orchestrator's own handler would see it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from avtomatika.engine.core import Engine
from avtomatika.engine.events import E, JobEvent
from avtomatika.engine.registry import WorkerChange
from avtomatika.logs.direct import log_line
from avtomatika.v1 import job_pb2, worker_pb2
from avtomatika.v1.history_pb2 import HistoryEventType

__all__ = ["LifecycleLog"]

JOB_LOG = logging.getLogger("avtomatika.jobs")
WORKER_LOG = logging.getLogger("avtomatika.workers")

# What each event type says; %s are the job id, then the event's own words.
# Webhooks are left out: the sender logs a failed one itself.
_JOB_LINES: dict[HistoryEventType.ValueType, tuple[int, str]] = {
    E.HISTORY_EVENT_TYPE_JOB_CREATED: (logging.INFO, "job %s created (blueprint %s)"),
    E.HISTORY_EVENT_TYPE_STATE_ENTERED: (logging.INFO, "job %s entered state %s"),
    E.HISTORY_EVENT_TYPE_TASK_DISPATCHED: (logging.INFO, "job %s dispatched a task: %s"),
    E.HISTORY_EVENT_TYPE_TASK_RETRIED: (logging.INFO, "job %s dispatched a task again: %s"),
    E.HISTORY_EVENT_TYPE_TASK_PICKED_UP: (logging.INFO, "job %s: its task was picked up%s"),
    E.HISTORY_EVENT_TYPE_TASK_FINISHED: (logging.INFO, "job %s: its task finished: %s"),
    E.HISTORY_EVENT_TYPE_TIMEOUT: (logging.WARNING, "job %s timed out: %s"),
    E.HISTORY_EVENT_TYPE_APPROVAL_REQUESTED: (
        logging.INFO,
        "job %s is waiting for a human decision (%s)",
    ),
    E.HISTORY_EVENT_TYPE_APPROVAL_RECEIVED: (logging.INFO, "job %s: approval received: %s"),
    E.HISTORY_EVENT_TYPE_JOB_RETRIED: (logging.INFO, "job %s retried%s"),
    E.HISTORY_EVENT_TYPE_JOB_CANCELLED: (logging.INFO, "job %s cancelled%s"),
    E.HISTORY_EVENT_TYPE_SUB_JOB_STARTED: (logging.INFO, "job %s started a sub-job: %s"),
}

# How a worker arrived, in words.
_ARRIVALS = {
    "connected": "connected",
    "returned": "came back within its grace period",
    "replaced": "opened a new connection, replacing its previous one,",
}

_QUIET_ENDS = frozenset({"finished", "cancelled"})

_TRANSPORTS = {
    worker_pb2.WORKER_TRANSPORT_GRPC: "gRPC",
    worker_pb2.WORKER_TRANSPORT_REST: "REST",
}


class LifecycleLog:
    """A service: logs from :meth:`start` to :meth:`stop`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._unsubscribe: list[Callable[[], None]] = []

    async def start(self) -> None:
        types = [*_JOB_LINES, E.HISTORY_EVENT_TYPE_JOB_ENDED]
        self._unsubscribe = [
            self._engine.events.subscribe(self._on_job_event, types),
            self._engine.workers.changes.subscribe(self._on_worker_change),
        ]

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    def _on_job_event(self, item: JobEvent) -> None:
        if not JOB_LOG.isEnabledFor(logging.INFO):
            return
        event = item.event
        fields: dict[str, Any] = {"job_id": event.job_id, "event": _event_name(event.type)}
        if event.state:
            fields["state"] = event.state
        if event.task_id:
            fields["task_id"] = event.task_id
        if event.worker_id:
            fields["worker_id"] = event.worker_id
        if event.duration_ms:
            fields["duration_ms"] = event.duration_ms
        job = item.job
        if job is not None and job.client_id:
            fields["client_id"] = job.client_id
        kind = event.type
        if kind == E.HISTORY_EVENT_TYPE_JOB_ENDED:
            status = job_pb2.JobStatus.Name(job.status) if job is not None else ""
            fields["status"] = status.removeprefix("JOB_STATUS_").lower()
            # A job that failed is worth an operator's look; one that
            # finished or was cancelled (someone asked) is not.
            level = logging.INFO if fields["status"] in _QUIET_ENDS else logging.WARNING
            log_line(JOB_LOG, level, "job %s ended: %s", (event.job_id, event.message), fields)
            return
        level, text = _JOB_LINES[kind]
        words = event.message
        if kind == E.HISTORY_EVENT_TYPE_STATE_ENTERED:
            words = event.state
        elif kind == E.HISTORY_EVENT_TYPE_TASK_PICKED_UP:
            words = f" by worker {event.worker_id}" if event.worker_id else ""
        elif kind in (E.HISTORY_EVENT_TYPE_JOB_CANCELLED, E.HISTORY_EVENT_TYPE_JOB_RETRIED):
            words = f" in state {event.state}" if event.state else ""
        elif kind == E.HISTORY_EVENT_TYPE_APPROVAL_REQUESTED:
            words = (job.approval_integration if job is not None else "") or "no integration"
        log_line(JOB_LOG, level, text, (event.job_id, words), fields)

    def _on_worker_change(self, change: WorkerChange) -> None:
        if not WORKER_LOG.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {"worker_id": change.worker_id, "event": f"worker_{change.kind}"}
        info = change.info
        if info is not None:
            fields["transport"] = _TRANSPORTS.get(info.transport, "")
            fields["skills"] = list(info.registration.skills)
        if change.reason:
            fields["reason"] = change.reason
        if change.held:
            fields["held_tasks"] = change.held
        kind = change.kind
        level = logging.INFO
        if kind in _ARRIVALS and info is not None:
            text = "worker %s " + _ARRIVALS[kind] + " over %s with skills [%s]"
            args: tuple[Any, ...] = (fields["transport"], ", ".join(fields["skills"]))
        elif kind == "registered_again":
            text = "worker %s registered again (a restart); %d task(s) it held go back to the queue"
            args = (change.held,)
        elif kind == "gone":
            level = logging.WARNING
            text = "worker %s did not come back; its %d task(s) go back to the queue"
            args = (change.held,)
        elif kind in ("away", "disconnected"):
            # A worker dropped for its silence is worth a look; one that
            # hung up is not.
            level = logging.WARNING if change.dropped else logging.INFO
            text = "worker %s disconnected: %s"
            args = (change.reason,)
            if kind == "away":
                text += "; it holds %d task(s) and may come back for them"
                args += (change.held,)
        else:  # drained, draining
            text = "worker %s takes no more tasks: %s"
            args = (change.reason,)
        log_line(WORKER_LOG, level, text, (change.worker_id, *args), fields)


# Each event type's name in a line's ``event`` field, made once rather than
# looked up in the enum's descriptor per line.
_EVENT_NAMES = {
    number: name.removeprefix("HISTORY_EVENT_TYPE_").lower()
    for name, number in HistoryEventType.items()
}


def _event_name(kind: HistoryEventType.ValueType) -> str:
    return _EVENT_NAMES.get(kind) or str(kind)
