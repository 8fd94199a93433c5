"""The legacy REST worker API under ``/_worker`` (``X-Worker-Token``), as the
public SDK ``avtomatika-worker`` 1.0b7 speaks it (protocol 1.0b3): register,
heartbeat (an empty body is a TTL ping), long-poll for the next task, and
results. Thin: parse (:mod:`.bodies`), call
:class:`~avtomatika.services.worker_api.WorkerApi`, render. The WebSocket is
in :mod:`.websocket`.
"""

from __future__ import annotations

from aiohttp import web

from avtomatika.rest.bodies import read_json_object
from avtomatika.rest.worker_api.bodies import (
    heartbeat_request,
    registration,
    task_json,
    task_result,
)
from avtomatika.services.worker_api import WorkerApi

__all__ = [
    "PROTOCOL_VERSION",
    "WORKER_API",
    "add_protocol_header",
    "authenticate",
    "heartbeat",
    "next_task",
    "path_worker",
    "register",
    "release_rest_workers",
    "submit_result",
]

WORKER_API = web.AppKey("worker_api", WorkerApi)
"""The polling workers' use cases, refusing with ``X-Worker-Token``'s name."""

PROTOCOL_VERSION = "1.0b3"
"""The worker protocol (``rxon``) version this API speaks: SDK 1.0b7's."""
_VERSION_HEADER = "X-RXON-Version"


def _token(request: web.Request) -> str | None:
    return request.headers.get("X-Worker-Token")


def authenticate(request: web.Request) -> str | None:
    """Check ``X-Worker-Token``: ``GLOBAL_WORKER_TOKEN`` or a per-worker token
    of ``workers.toml``. Returns the worker a per-worker token belongs to,
    None for the global token."""
    return request.app[WORKER_API].authenticate(_token(request))


def path_worker(request: web.Request) -> str:
    """The authenticated ``{worker_id}`` of the path (checked before the
    body is read, so a stranger learns nothing from a 400)."""
    api = request.app[WORKER_API]
    api.authenticate(_token(request))
    return api.speaks_for(_token(request), request.match_info["worker_id"])


async def register(request: web.Request) -> web.Response:
    api = request.app[WORKER_API]
    api.authenticate(_token(request))
    await api.register(_token(request), registration(await read_json_object(request)))
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
    beat = heartbeat_request(worker_id, body) if body else None
    cancel = await request.app[WORKER_API].heartbeat(_token(request), beat, worker_id)
    if cancel is None:
        return web.json_response({"status": "ttl_refreshed"})
    reply: dict[str, object] = {"status": "ok"}
    if cancel:
        reply["cancel_task_ids"] = cancel
    return web.json_response(reply)


async def next_task(request: web.Request) -> web.Response:
    worker_id = path_worker(request)
    api = request.app[WORKER_API]
    task = await api.next_task(_token(request), worker_id)
    if task is None:
        return web.Response(status=204)
    if request.transport is None or request.transport.is_closing():
        # The worker hung up while it waited: nobody would receive the task.
        await api.give_back(worker_id, task.task_id)
        return web.Response(status=204)
    return web.json_response(task_json(task))


async def submit_result(request: web.Request) -> web.Response:
    api = request.app[WORKER_API]
    api.authenticate(_token(request))
    result = task_result(await read_json_object(request))
    verdict = await api.submit_result(_token(request), result)
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
    api = app.get(WORKER_API)
    if api is not None:
        api.workers.close()
