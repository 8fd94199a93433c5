"""``GET /api/v1/jobs/{job_id}/history``: a job's lifecycle events, oldest first.

Each event renders as::

    {"event_id", "job_id", "timestamp" (ISO 8601 UTC), "type" (e.g.
     "task_finished"), "state", "task_id", "worker_id", "duration_ms",
     "message", "details" (a JSON object)}

with ``null`` for what an event does not carry. History is written
asynchronously, so an event may show up a moment after the change it
records.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from avtomatika.clock import iso_from_ms
from avtomatika.engine.events import E
from avtomatika.payload import from_payload
from avtomatika.rest.state import CLIENT_API, client_of
from avtomatika.v1.history_pb2 import HistoryEvent, HistoryEventType

__all__ = ["history_event_json", "job_history"]

# Events whose duration is meaningful even when it is 0 ms.
_TIMED = frozenset(
    {
        E.HISTORY_EVENT_TYPE_STATE_LEFT,
        E.HISTORY_EVENT_TYPE_TASK_PICKED_UP,
        E.HISTORY_EVENT_TYPE_TASK_FINISHED,
    }
)
_PREFIX = "HISTORY_EVENT_TYPE_"


async def job_history(request: web.Request) -> web.Response:
    events = await request.app[CLIENT_API].job_history(
        client_of(request), request.match_info["job_id"]
    )
    return web.json_response([history_event_json(e) for e in events])


def history_event_json(item: HistoryEvent) -> dict[str, Any]:
    """One event as the endpoint renders it."""
    timed = item.type in _TIMED or item.duration_ms
    return {
        "event_id": item.event_id,
        "job_id": item.job_id,
        "timestamp": iso_from_ms(item.timestamp_ms),
        "type": HistoryEventType.Name(item.type).removeprefix(_PREFIX).lower(),
        "state": item.state or None,
        "task_id": item.task_id or None,
        "worker_id": item.worker_id or None,
        "duration_ms": item.duration_ms if timed else None,
        "message": item.message or None,
        "details": from_payload(item.details) if item.details.data else None,
    }
