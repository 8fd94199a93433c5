"""Client endpoints under ``/api`` (``X-Client-Token``, checked by middleware)."""

from __future__ import annotations

import contextlib

from aiohttp import web

from avtomatika.rest.bodies import CreateJobBody, read_json_object
from avtomatika.rest.follow_api import get_job_waiting, wait_seconds
from avtomatika.rest.rate_limit import LIMITS
from avtomatika.rest.render import job_body, worker_json
from avtomatika.rest.state import ENGINE, client_of

__all__ = ["cancel_job", "create_job", "get_job", "list_workers"]


async def create_job(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    blueprint = engine.blueprint_for_route(
        f"{request.match_info['api_version']}/{request.match_info['endpoint']}"
    )
    body = CreateJobBody.parse(
        await read_json_object(request, allow_empty=True),
        allow_private_webhooks=engine.config.webhook_allow_private,
    )
    client = client_of(request)
    limits = request.app.get(LIMITS)
    async with limits.job_creation(client.id) if limits else contextlib.nullcontext():
        job_id = await engine.create_job(
            blueprint.name,
            body.initial_data,
            client=client,
            webhook_url=body.webhook_url,
            dispatch_timeout=body.dispatch_timeout,
            result_timeout=body.result_timeout,
        )
    return web.json_response({"status": "accepted", "job_id": job_id}, status=202)


async def get_job(request: web.Request) -> web.Response:
    """The job; with ``?wait=SECONDS``, once it changes (see :mod:`follow_api`)."""
    wait = wait_seconds(request)
    if wait is None:
        job = await request.app[ENGINE].get_job(
            request.match_info["job_id"], client_id=client_of(request).id
        )
    else:
        job = await get_job_waiting(request, wait)
    return web.Response(body=job_body(job), content_type="application/json", charset="utf-8")


async def cancel_job(request: web.Request) -> web.Response:
    pushed = await request.app[ENGINE].cancel_job(
        request.match_info["job_id"], client_id=client_of(request).id
    )
    status = "cancellation_request_sent" if pushed else "cancellation_request_accepted"
    return web.json_response({"status": status})


async def list_workers(request: web.Request) -> web.Response:
    workers = await request.app[ENGINE].workers.list_all()
    return web.json_response([worker_json(w) for w in workers])
