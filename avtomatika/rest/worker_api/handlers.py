"""The legacy REST worker API under ``/_worker`` (``X-Worker-Token``), as the
public SDK ``avtomatika-worker`` 1.0b7 speaks it (protocol 1.0b3): register,
heartbeat (an empty body is a TTL ping), long-poll for the next task, and
results. Thin: parse (:mod:`worker_bodies`), call :class:`RestWorkers` and
the engine, render. The WebSocket is in :mod:`worker_ws`.
"""

from __future__ import annotations

from aiohttp import web

from avtomatika.errors import Unauthenticated
from avtomatika.ids import check_worker_id
from avtomatika.rest.bodies import read_json_object
from avtomatika.rest.state import AUTH
from avtomatika.rest.worker_api.bodies import (
    heartbeat_request,
    registration,
    task_json,
    task_result,
)
from avtomatika.rest.worker_api.sessions import RestWorkers

__all__ = [
    "PROTOCOL_VERSION",
    "REST_WORKERS",
    "add_protocol_header",
    "authenticate",
    "heartbeat",
    "next_task",
    "path_worker",
    "register",
    "release_rest_workers",
    "speaks_for",
    "submit_result",
]

REST_WORKERS = web.AppKey("rest_workers", RestWorkers)

PROTOCOL_VERSION = "1.0b3"
"""The worker protocol (``rxon``) version this API speaks: SDK 1.0b7's."""
_VERSION_HEADER = "X-RXON-Version"


def authenticate(request: web.Request) -> str | None:
    """Check ``X-Worker-Token``: ``GLOBAL_WORKER_TOKEN`` or a per-worker token
    of ``workers.toml``. Returns the worker a per-worker token belongs to,
    None for the global token."""
    auth = request.app[AUTH]
    token = request.headers.get("X-Worker-Token")
    if not auth.worker(token):
        raise Unauthenticated("missing or invalid X-Worker-Token")
    return auth.worker_id_for_token(token)


def path_worker(request: web.Request) -> str:
    """The authenticated ``{worker_id}`` of the path."""
    authenticate(request)
    worker_id = check_worker_id(request.match_info["worker_id"])
    speaks_for(request, worker_id)
    return worker_id


def speaks_for(request: web.Request, worker_id: str) -> None:
    """Refuse a token that may not act as ``worker_id``: another worker's
    own token, or the global token for a worker ``workers.toml`` lists."""
    if not request.app[AUTH].worker_may_claim(request.headers.get("X-Worker-Token"), worker_id):
        raise Unauthenticated(f"this X-Worker-Token may not act as worker {worker_id!r}")


async def register(request: web.Request) -> web.Response:
    authenticate(request)
    reg = registration(await read_json_object(request))
    speaks_for(request, reg.worker_id)
    await request.app[REST_WORKERS].register(reg)
    sent = request.headers.get(_VERSION_HEADER)
    warning = None
    if sent is not None and sent != PROTOCOL_VERSION:
        warning = (
            f"this orchestrator speaks worker protocol {PROTOCOL_VERSION}; the worker "
            f"sent {sent}. Use avtomatika-worker 1.0b7."
        )
    return web.json_response(
        {"status": "registered", "version": PROTOCOL_VERSION, "warning": warning}
    )


async def heartbeat(request: web.Request) -> web.Response:
    worker_id = path_worker(request)
    body = await read_json_object(request, allow_empty=True)
    workers = request.app[REST_WORKERS]
    if not body:
        await workers.ping(worker_id)
        return web.json_response({"status": "ttl_refreshed"})
    cancel = await workers.heartbeat(heartbeat_request(worker_id, body))
    reply: dict[str, object] = {"status": "ok"}
    if cancel:
        reply["cancel_task_ids"] = cancel
    return web.json_response(reply)


async def next_task(request: web.Request) -> web.Response:
    worker_id = path_worker(request)
    workers = request.app[REST_WORKERS]
    task = await workers.next_task(worker_id)
    if task is None:
        return web.Response(status=204)
    if request.transport is None or request.transport.is_closing():
        # The worker hung up while it waited: nobody would receive the task.
        await workers.give_back(worker_id, task.task_id)
        return web.Response(status=204)
    return web.json_response(task_json(task))


async def submit_result(request: web.Request) -> web.Response:
    authenticate(request)
    result = task_result(await read_json_object(request))
    speaks_for(request, result.worker_id)
    verdict = await request.app[REST_WORKERS].submit_result(result)
    if verdict.accepted:
        return web.json_response({"status": "accepted", "transition": verdict.transition})
    return web.json_response(
        {"status": "ignored", "reason": verdict.reason, "message": verdict.message}
    )


async def add_protocol_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every ``/_worker`` response, errors included,
    names the protocol version."""
    if request.path.startswith("/_worker/"):
        response.headers[_VERSION_HEADER] = PROTOCOL_VERSION


async def release_rest_workers(app: web.Application) -> None:
    """``on_shutdown``: answer every long-poll and close every worker socket
    now, so stopping the server never waits for them."""
    workers = app.get(REST_WORKERS)
    if workers is not None:
        workers.close()
