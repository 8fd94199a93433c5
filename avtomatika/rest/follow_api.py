"""Following a job without polling.

* ``GET /api/v1/jobs/{job_id}?wait=SECONDS`` answers as soon as the job
  changes in a way its JSON shows (status, state, progress), at once if it is
  already terminal, and with its current state when ``SECONDS`` (capped at
  ``JOB_WAIT_MAX_SECONDS``) pass. Internal events that leave the JSON as it
  was (a worker picking the task up) do not end the wait, so a follower costs
  one request per visible change. A change between two such requests is not
  replayed: a client that must see every change uses the stream below.
* ``GET /api/v1/jobs/{job_id}/events`` is a Server-Sent Events stream
  (``text/event-stream``). It opens with the job's current state, then sends
  one event per change: ``event: status`` when the status or state changed,
  ``event: progress`` when only the progress did. Each ``data:`` line is a
  JSON object with ``job_id``, ``status``, ``current_state``, ``progress``,
  ``progress_message``, ``error`` and ``updated_at``. The stream ends after a
  terminal status, or with ``event: error`` if the job disappears (a debug
  flush). A ``: keep-alive`` comment every 15 seconds keeps proxies from
  closing an idle stream.

Both answer 404 for a job of another client, like every job-scoped endpoint.
The following itself is :class:`~avtomatika.services.client_api.ClientApi`'s
(``get_job`` with a wait, ``follow_job``), shared with gRPC's
``StreamJobEvents``; this module renders it as HTTP.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from avtomatika.clock import iso_from_ms
from avtomatika.errors import NotFound
from avtomatika.rest.state import CLIENT_API, client_of
from avtomatika.status import job_status_name
from avtomatika.v1.job_pb2 import Job

__all__ = ["close_followers", "job_events"]

_KEEPALIVE_SECONDS = 15.0


async def job_events(request: web.Request) -> web.StreamResponse:
    changes = request.app[CLIENT_API].follow_job(
        client_of(request), request.match_info["job_id"], _KEEPALIVE_SECONDS
    )
    try:
        # Ownership first, while an error can still be a JSON response.
        first = await anext(changes)
        response = web.StreamResponse(
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        response.content_type = "text/event-stream"
        await response.prepare(request)
        sent: Job | None = None
        try:
            if first is not None:
                sent = await _send_change(response, first, sent)
            async for job in changes:
                if job is None:
                    await response.write(b": keep-alive\n\n")
                else:
                    sent = await _send_change(response, job, sent)
        except NotFound as exc:
            await _send(response, "error", {"error": exc.message})
        except ConnectionError:
            pass  # the client went away
    finally:
        await changes.aclose()
    return response


async def close_followers(app: web.Application) -> None:
    """``on_shutdown``: end every wait and stream so shutdown never waits
    for them."""
    app[CLIENT_API].followers.close()


def _view(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": job_status_name(job.status),
        "current_state": job.current_state,
        "progress": job.progress,
        "progress_message": job.progress_message or None,
        "error": job.error or None,
        "updated_at": iso_from_ms(job.updated_at_ms),
    }


async def _send_change(response: web.StreamResponse, job: Job, sent: Job | None) -> Job:
    """Send ``job`` as ``status`` when its status or state moved since
    ``sent``, else as ``progress``; returns it."""
    moved = sent is None or (job.status, job.current_state) != (sent.status, sent.current_state)
    await _send(response, "status" if moved else "progress", _view(job))
    return job


async def _send(response: web.StreamResponse, kind: str, data: dict[str, Any]) -> None:
    payload = json.dumps(data, separators=(",", ":"))
    await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())
