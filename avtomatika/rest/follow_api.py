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
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from aiohttp import web

from avtomatika.clock import iso_from_ms
from avtomatika.engine.followers import JobFollowers
from avtomatika.errors import InvalidArgument, NotFound
from avtomatika.rest.state import ENGINE, client_of
from avtomatika.status import TERMINAL, job_status_name
from avtomatika.v1.job_pb2 import Job

__all__ = ["FOLLOWERS", "close_followers", "get_job_waiting", "job_events", "wait_seconds"]

FOLLOWERS = web.AppKey("followers", JobFollowers)

_KEEPALIVE_SECONDS = 15.0


def wait_seconds(request: web.Request) -> float | None:
    """The ``wait`` query parameter, capped; None when absent."""
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait) or wait < 0:
        raise InvalidArgument(f"wait must be a number of seconds >= 0, got {raw!r}")
    return min(wait, request.app[ENGINE].config.job_wait_max_seconds)


async def get_job_waiting(request: web.Request, wait: float) -> Job:
    """The job once it visibly changed, ended or ``wait`` seconds passed."""
    engine = request.app[ENGINE]
    job_id = request.match_info["job_id"]
    client_id = client_of(request).id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    with request.app[FOLLOWERS].follow(job_id) as follower:
        job = await engine.get_job(job_id, client_id=client_id)
        seen = _visible(job)
        while job.status not in TERMINAL and not follower.closed:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await follower.changed(remaining):
                break
            records, stale = follower.take()
            newest = max(records, key=lambda record: record.version, default=None)
            if stale or newest is None:
                job = await engine.get_job(job_id, client_id=client_id)
            elif newest.version > job.version:
                job = newest  # the record the event carried: no read needed
            if _visible(job) != seen:
                break
    return job


def _visible(job: Job) -> tuple[object, ...]:
    """What of a job its JSON shows changing while it runs."""
    return (job.status, job.current_state, job.progress, job.progress_message)


async def job_events(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    job_id = request.match_info["job_id"]
    client_id = client_of(request).id
    with request.app[FOLLOWERS].follow(job_id) as follower:
        # Ownership first, while an error can still be a JSON response.
        job = await engine.get_job(job_id, client_id=client_id)
        response = web.StreamResponse(
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        response.content_type = "text/event-stream"
        await response.prepare(request)
        sent: dict[str, Any] | None = None
        version = 0
        pending = [job]
        try:
            while True:
                for record in pending:
                    if record.version < version:
                        continue  # published out of order; a newer one was sent
                    version = record.version
                    sent = await _send_change(response, record, sent)
                if follower.closed or (sent is not None and sent["status"] in _TERMINAL_NAMES):
                    break
                woke = await follower.changed(_KEEPALIVE_SECONDS)
                pending, stale = follower.take()
                if not woke:
                    await response.write(b": keep-alive\n\n")
                    stale = True  # also notices a job that vanished silently
                if stale and not follower.closed:
                    try:
                        pending.append(await engine.get_job(job_id, client_id=client_id))
                    except NotFound as exc:
                        await _send(response, "error", {"error": exc.message})
                        break
        except ConnectionError:
            pass  # the client went away
    return response


async def close_followers(app: web.Application) -> None:
    """``on_shutdown``: end every wait and stream so shutdown never waits
    for them."""
    followers = app.get(FOLLOWERS)
    if followers is not None:
        followers.close()


_TERMINAL_NAMES = frozenset(job_status_name(s) for s in TERMINAL)
_FIELDS = ("status", "current_state", "progress", "progress_message", "error")


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


async def _send_change(
    response: web.StreamResponse, job: Job, sent: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Send ``job`` if a followed field differs from ``sent``; what was sent last."""
    view = _view(job)
    if sent is not None and all(view[f] == sent[f] for f in _FIELDS):
        return sent
    moved = sent is None or any(view[f] != sent[f] for f in ("status", "current_state"))
    await _send(response, "status" if moved else "progress", view)
    return view


async def _send(response: web.StreamResponse, kind: str, data: dict[str, Any]) -> None:
    payload = json.dumps(data, separators=(",", ":"))
    await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())
