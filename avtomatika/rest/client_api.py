"""Client endpoints under ``/api`` (``X-Client-Token``, checked by middleware).

Each handler parses, calls :class:`~avtomatika.services.client_api.ClientApi`
and renders; the rules are there.
"""

from __future__ import annotations

import math

from aiohttp import web

from avtomatika.errors import InvalidArgument
from avtomatika.rest.bodies import job_request, read_json_object
from avtomatika.rest.render import job_body, worker_json
from avtomatika.rest.state import CLIENT_API, ENGINE, client_of

__all__ = ["cancel_job", "create_job", "get_job", "list_workers", "wait_seconds"]


async def create_job(request: web.Request) -> web.Response:
    request_ = job_request(
        await read_json_object(request, allow_empty=True),
        allow_private_webhooks=request.app[ENGINE].config.webhook_allow_private,
    )
    route = f"{request.match_info['api_version']}/{request.match_info['endpoint']}"
    job_id = await request.app[CLIENT_API].create_job(client_of(request), route, request_)
    return web.json_response({"status": "accepted", "job_id": job_id}, status=202)


async def get_job(request: web.Request) -> web.Response:
    """The job; with ``?wait=SECONDS``, once it changes (see :mod:`.follow_api`)."""
    job = await request.app[CLIENT_API].get_job(
        client_of(request), request.match_info["job_id"], wait_seconds(request)
    )
    return web.Response(body=job_body(job), content_type="application/json", charset="utf-8")


def wait_seconds(request: web.Request) -> float | None:
    """The ``wait`` query parameter; None when absent."""
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait) or wait < 0:
        raise InvalidArgument(f"wait must be a number of seconds >= 0, got {raw!r}")
    return wait


async def cancel_job(request: web.Request) -> web.Response:
    pushed = await request.app[CLIENT_API].cancel_job(
        client_of(request), request.match_info["job_id"]
    )
    status = "cancellation_request_sent" if pushed else "cancellation_request_accepted"
    return web.json_response({"status": status})


async def list_workers(request: web.Request) -> web.Response:
    workers = await request.app[CLIENT_API].list_workers(client_of(request))
    return web.json_response([worker_json(w) for w in workers])
