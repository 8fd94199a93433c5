"""Lifecycle events of jobs, published by the engine after each commit.

History, metrics, webhooks and job followers (``?wait=``, Server-Sent Events)
subscribe here instead of being called by the engine, so the engine knows
none of them. Listeners are synchronous and must not block: they queue work
for their own tasks. A listener that raises is logged and never breaks the
engine or the other listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avtomatika.engine.tasks import new_id
from avtomatika.payload import to_payload
from avtomatika.status import TERMINAL
from avtomatika.v1 import history_pb2, job_pb2, task_pb2
from avtomatika.v1.history_pb2 import HistoryEvent, HistoryEventType
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.task_pb2 import Task

__all__ = ["EventBus", "JobEvent", "Listener", "creation_events", "derive_events", "event"]

log = logging.getLogger(__name__)

# The event types as the generated module's constants: reading them there is
# a plain module attribute, while `HistoryEventType.X` goes through the enum
# wrapper's __getattr__, which profiles showed as the core's top hotspot.
E = history_pb2

# Events after which the job's record is as it was (progress, which also
# carries no record, does change it).
_RECORD_UNCHANGED: frozenset[HistoryEventType.ValueType] = frozenset(
    {
        E.HISTORY_EVENT_TYPE_TASK_PICKED_UP,
        E.HISTORY_EVENT_TYPE_WEBHOOK_DELIVERED,
        E.HISTORY_EVENT_TYPE_WEBHOOK_FAILED,
    }
)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What happened (as kept in history) and the job right after it; ``job``
    is None for events that do not change the job record (a task picked up,
    progress), so publishing them costs no read."""

    event: HistoryEvent
    job: Job | None

    @property
    def record_unchanged(self) -> bool:
        """Whether the job's record is as it was before: a follower has
        nothing new to see."""
        return self.job is None and self.event.type in _RECORD_UNCHANGED


Listener = Callable[[JobEvent], None]


class EventBus:
    """Fan-out of job events to subscribers.

    A listener interested in a few event types names them, so it is not
    called for the others: a job publishes about ten events, and most
    listeners want one or two of them.
    """

    def __init__(self) -> None:
        self._all: list[Listener] = []
        self._by_type: dict[int, list[Listener]] = {}

    def subscribe(
        self, listener: Listener, types: Iterable[HistoryEventType.ValueType] | None = None
    ) -> Callable[[], None]:
        """Call ``listener`` for every event (or only those of ``types``);
        returns the unsubscribe function."""
        lists = [self._all] if types is None else [self._by_type.setdefault(t, []) for t in types]
        for listeners in lists:
            listeners.append(listener)

        def unsubscribe() -> None:
            for listeners in lists:
                listeners.remove(listener)

        return unsubscribe

    def publish(self, events: Sequence[JobEvent]) -> None:
        """Hand ``events`` to every interested listener, in order."""
        for item in events:
            for listener in [*self._all, *self._by_type.get(item.event.type, ())]:
                try:
                    listener(item)
                except Exception:
                    log.exception("event listener %r failed", listener)


def event(
    kind: HistoryEventType.ValueType,
    job: Job | str,
    now: int,
    *,
    state: str = "",
    task: Task | None = None,
    worker_id: str = "",
    duration_ms: int = 0,
    message: str = "",
    details: Mapping[str, Any] | None = None,
) -> JobEvent:
    """A :class:`JobEvent` of ``kind`` about ``job`` (the record, or its id
    when the record did not change); ``details``, a JSON object, goes into
    the event's ``details``."""
    return JobEvent(
        HistoryEvent(
            event_id=new_id(),
            job_id=job.id if isinstance(job, Job) else job,
            timestamp_ms=now,
            type=kind,
            state=state,
            task_id=task.task_id if task else "",
            worker_id=worker_id or (task.worker_id if task else ""),
            duration_ms=duration_ms,
            message=message,
            details=to_payload(dict(details)) if details is not None else None,
        ),
        job if isinstance(job, Job) else None,
    )


def creation_events(job: Job, state: str = "") -> list[JobEvent]:
    """The events of a job's creation, in its start ``state`` (by default
    its current one), at its creation time."""
    now = job.created_at_ms
    return [
        event(E.HISTORY_EVENT_TYPE_JOB_CREATED, job, now, message=job.blueprint_name),
        event(E.HISTORY_EVENT_TYPE_STATE_ENTERED, job, now, state=state or job.current_state),
    ]


def derive_events(previous: Job, new: Job, tasks: Sequence[Task], now: int) -> list[JobEvent]:
    """The events a committed change implies: states left and entered, tasks
    queued (or re-queued), the job's end."""
    events = []
    if new.transition_count != previous.transition_count:
        left = now - previous.state_entered_at_ms if previous.state_entered_at_ms else 0
        events.append(
            event(
                E.HISTORY_EVENT_TYPE_STATE_LEFT,
                new,
                now,
                state=previous.current_state,
                duration_ms=left,
            )
        )
        events.append(event(E.HISTORY_EVENT_TYPE_STATE_ENTERED, new, now, state=new.current_state))
    for task in tasks:
        if task.state in (task_pb2.TASK_STATE_QUEUED, task_pb2.TASK_STATE_SCHEDULED):
            kind = (
                E.HISTORY_EVENT_TYPE_TASK_DISPATCHED
                if task.attempt == 1
                else E.HISTORY_EVENT_TYPE_TASK_RETRIED
            )
            message = f"{task.type} attempt {task.attempt}"
            events.append(event(kind, new, now, state=task.state_name, task=task, message=message))
    if new.status in TERMINAL and previous.status not in TERMINAL:
        if new.status == job_pb2.JOB_STATUS_CANCELLED:
            events.append(
                event(E.HISTORY_EVENT_TYPE_JOB_CANCELLED, new, now, state=new.current_state)
            )
        status = JobStatus.Name(new.status).removeprefix("JOB_STATUS_").lower()
        message = f"{status}: {new.error}" if new.error else status
        events.append(
            event(
                E.HISTORY_EVENT_TYPE_JOB_ENDED, new, now, state=new.current_state, message=message
            )
        )
    return events
