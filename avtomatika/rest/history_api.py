"""``GET /api/v1/jobs/{job_id}/history``: a job's lifecycle events, oldest first.

Each event renders as::

    {"event_id", "job_id", "timestamp" (ISO 8601 UTC), "type" (e.g.
     "task_finished"), "event_type" (1.0b13's name, e.g. "state_started"),
     "state", "task_id", "worker_id", "duration_ms", "message", "details"
     (a JSON object), "previous_state", "next_state", "attempt_number"}

with ``null`` for what an event does not carry. ``type`` is our name for the
event; ``event_type`` is the name 1.0b13 gave the same event, so its clients
keep reading it (our name where 1.0b13 had no such event), and the last three
fields are 1.0b13's too. 1.0b13's ``context_snapshot`` (the whole job record,
its client's token included) is deliberately not rendered. History is written
asynchronously, so an event may show up a moment after the change it records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from avtomatika.clock import iso_from_ms
from avtomatika.engine.events import E
from avtomatika.payload import from_payload
from avtomatika.rest.state import CLIENT_API, client_of
from avtomatika.v1.history_pb2 import HistoryEvent, HistoryEventType

__all__ = ["history_event_json", "history_json", "job_history"]

# Events whose duration is meaningful even when it is 0 ms.
_TIMED = frozenset(
    {
        E.HISTORY_EVENT_TYPE_STATE_LEFT,
        E.HISTORY_EVENT_TYPE_TASK_PICKED_UP,
        E.HISTORY_EVENT_TYPE_TASK_FINISHED,
    }
)
_PREFIX = "HISTORY_EVENT_TYPE_"

# 1.0b13's names of the events it had (its executor's and worker service's
# history entries); every other type keeps our name.
_EVENT_TYPES_1_0B13 = {
    E.HISTORY_EVENT_TYPE_JOB_CREATED: "job_created",
    E.HISTORY_EVENT_TYPE_STATE_ENTERED: "state_started",
    E.HISTORY_EVENT_TYPE_STATE_LEFT: "state_finished",
    E.HISTORY_EVENT_TYPE_TASK_DISPATCHED: "task_dispatched",
    E.HISTORY_EVENT_TYPE_TASK_FINISHED: "task_finished",
    E.HISTORY_EVENT_TYPE_SUB_JOB_STARTED: "sub_blueprint_started",
}

# The message of a job_ended event is its final status, followed by
# ": <error>" when it has one. Every way a job fails except running an end
# state sets an error, and only an end state finishes a job; so a bare
# "finished" or "failed" is a job that ran an end state, which 1.0b13 calls
# job_completed.
_END_STATE_MESSAGES = frozenset({"finished", "failed"})


async def job_history(request: web.Request) -> web.Response:
    events = await request.app[CLIENT_API].job_history(
        client_of(request), request.match_info["job_id"]
    )
    return web.json_response(history_json(events))


def history_json(events: Sequence[HistoryEvent]) -> list[dict[str, Any]]:
    """A job's events (oldest first) as the endpoint renders them: a state
    left gets the state entered next as its ``next_state``."""
    rendered = []
    for index, item in enumerate(events):
        next_state = None
        if item.type == E.HISTORY_EVENT_TYPE_STATE_LEFT:
            next_state = next(
                (
                    later.state
                    for later in events[index + 1 :]
                    if later.type == E.HISTORY_EVENT_TYPE_STATE_ENTERED
                ),
                None,
            )
        rendered.append(history_event_json(item, next_state=next_state))
    return rendered


def history_event_json(item: HistoryEvent, *, next_state: str | None = None) -> dict[str, Any]:
    """One event as the endpoint renders it (``next_state``: for a state
    left, the state entered next, which the event itself does not carry)."""
    timed = item.type in _TIMED or item.duration_ms
    details = from_payload(item.details) if item.details.data else None
    own = HistoryEventType.Name(item.type).removeprefix(_PREFIX).lower()
    return {
        "event_id": item.event_id,
        "job_id": item.job_id,
        "timestamp": iso_from_ms(item.timestamp_ms),
        "type": own,
        "event_type": _event_type(item, own),
        "state": item.state or None,
        "task_id": item.task_id or None,
        "worker_id": item.worker_id or None,
        "duration_ms": item.duration_ms if timed else None,
        "message": item.message or None,
        "details": details,
        "previous_state": (
            item.state or None if item.type == E.HISTORY_EVENT_TYPE_STATE_LEFT else None
        ),
        "next_state": _next_state(item, next_state),
        "attempt_number": _attempt_number(item, details),
    }


def _event_type(item: HistoryEvent, own: str) -> str:
    if item.type == E.HISTORY_EVENT_TYPE_JOB_ENDED:
        return "job_completed" if item.message in _END_STATE_MESSAGES else own
    if item.type == E.HISTORY_EVENT_TYPE_TASK_RETRIED and not item.task_id:
        return "state_failed"  # a handler raised and runs again (no task involved)
    return _EVENT_TYPES_1_0B13.get(item.type, own)


def _next_state(item: HistoryEvent, next_state: str | None) -> str | None:
    if item.type == E.HISTORY_EVENT_TYPE_STATE_LEFT:
        return next_state
    if item.type == E.HISTORY_EVENT_TYPE_SUB_JOB_STARTED:
        return item.message or None  # 1.0b13 put the child's blueprint there
    return None


def _attempt_number(item: HistoryEvent, details: Any) -> int | None:
    if item.type == E.HISTORY_EVENT_TYPE_STATE_ENTERED:
        return 1  # entering a state starts its handler's first attempt
    if isinstance(details, dict) and isinstance(details.get("attempt_number"), int):
        return int(details["attempt_number"])
    return None
