"""The legacy REST worker API under ``/_worker`` (``X-Worker-Token``), as the
public SDK ``avtomatika-worker`` speaks it, 1.0b7 (protocol 1.0b3) and
1.0b20 (protocol 1.0b17) alike: register, heartbeat (an empty body is a TTL
ping), long-poll for the next task, results, and 1.0b20's events. Thin:
parse (:mod:`.bodies`), call
:class:`~avtomatika.services.worker_api.WorkerApi`, render. The WebSocket is
in :mod:`.websocket`.
"""

from __future__ import annotations

from aiohttp import web

from avtomatika.errors import InvalidArgument
from avtomatika.rest.bodies import read_json_object
from avtomatika.rest.worker_api.bodies import (
    event,
    extras,
    heartbeat_request,
    registration,
    signature,
    signed_content,
    task_json,
    task_result,
)
from avtomatika.services.worker_api import WorkerApi

__all__ = [
    "EVENT_UNSIGNED",
    "PROTOCOL_VERSION",
    "PROTOCOL_VERSIONS",
    "WORKER_API",
    "add_protocol_header",
    "authenticate",
    "heartbeat",
    "next_task",
    "path_worker",
    "register",
    "release_rest_workers",
    "report_event",
    "submit_result",
]

WORKER_API = web.AppKey("worker_api", WorkerApi)
"""The polling workers' use cases, refusing with ``X-Worker-Token``'s name."""

PROTOCOL_VERSION = "1.0b3"
"""The worker protocol (``rxon``) version this API speaks by default: SDK
1.0b7's."""
PROTOCOL_VERSIONS = frozenset({PROTOCOL_VERSION, "1.0b17"})
"""The versions it speaks: 1.0b7's and 1.0b20's. A worker sending one of
them gets it back, so neither SDK warns of a mismatch."""
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


def _agent(request: web.Request) -> str:
    """What a REST worker says it is: its User-Agent (the SDKs send
    aiohttp's), and the worker protocol it speaks, which tells the SDK
    generation apart (rxon 1.0b3: SDK 1.0b7; 1.0b17: SDK 1.0b20)."""
    agent = request.headers.get("User-Agent", "")
    protocol = request.headers.get(_VERSION_HEADER)
    return f"{agent} rxon/{protocol}".strip() if protocol else agent


async def register(request: web.Request) -> web.Response:
    api = request.app[WORKER_API]
    api.authenticate(_token(request))
    body = await read_json_object(request)
    parsed = registration(body)
    _check_signature(request, body)
    await api.register(_token(request), parsed, extras(body).skills_hash, _agent(request))
    sent = request.headers.get(_VERSION_HEADER)
    warning = None
    if sent is not None and sent not in PROTOCOL_VERSIONS:
        warning = (
            f"this orchestrator speaks worker protocols {', '.join(sorted(PROTOCOL_VERSIONS))};"
            f" the worker sent {sent}. Use avtomatika-worker 1.0b7 or 1.0b20."
        )
    # No access_token: SDK 1.0b20 would swap its own token for it.
    return web.json_response(
        {"status": "registered", "version": _version(request), "warning": warning}
    )


async def heartbeat(request: web.Request) -> web.Response:
    worker_id = path_worker(request)
    body = await read_json_object(request, allow_empty=True)
    beat = heartbeat_request(worker_id, body) if body else None
    if body:
        _check_signature(request, body)
    skills_hash = extras(body).skills_hash
    api = request.app[WORKER_API]
    cancel = await api.heartbeat(_token(request), beat, worker_id, skills_hash, _agent(request))
    if cancel is None:
        return web.json_response({"status": "ttl_refreshed"})
    reply: dict[str, object] = {"status": "ok"}
    if cancel:
        reply["cancel_task_ids"] = cancel
    if api.needs_full_sync(worker_id, skills_hash):
        reply["require_full_sync"] = True  # SDK 1.0b20 then resends its skills
    return web.json_response(reply)


async def next_task(request: web.Request) -> web.Response:
    worker_id = path_worker(request)
    api = request.app[WORKER_API]
    # SDK 1.0b20 names how long it waits and which skills it offers now;
    # 1.0b7 sends no query string.
    query = request.query
    timeout = None
    if "timeout" in query:
        try:
            timeout = float(query["timeout"])
        except ValueError:
            raise InvalidArgument("timeout must be a number of seconds") from None
    available = None
    if "available_skills" in query:
        available = [s for s in query["available_skills"].split(",") if s]
    task = await api.next_task(_token(request), worker_id, timeout=timeout, available=available)
    if task is None:
        return web.Response(status=204)
    if request.transport is None or request.transport.is_closing():
        # The worker hung up while it waited: nobody would receive the task.
        await api.give_back(worker_id, task.task_id)
        return web.Response(status=204)
    return web.json_response(task_json(task, api.task_signing_secret))


async def submit_result(request: web.Request) -> web.Response:
    api = request.app[WORKER_API]
    api.authenticate(_token(request))
    body = await read_json_object(request)
    result = task_result(body)
    _check_signature(request, body)
    verdict = await api.submit_result(_token(request), result)
    if verdict.accepted:
        return web.json_response({"status": "accepted", "transition": verdict.transition})
    return web.json_response(
        {"status": "ignored", "reason": verdict.reason, "message": verdict.message}
    )


async def report_event(request: web.Request) -> web.Response:
    """``POST /_worker/events`` (SDK 1.0b20): a worker event. Progress of a
    task the worker holds is recorded; progress of any other task is
    ignored with a reason, as a result would be; other event types are
    ignored (nothing here consumes them)."""
    api = request.app[WORKER_API]
    api.authenticate(_token(request))
    body = await read_json_object(request)
    sent = event(body)
    _check_signature(request, body, EVENT_UNSIGNED)
    if sent.event_type != "progress":
        return _ignored("unsupported", f"event type {sent.event_type!r} is not used here")
    if not await api.report_progress(
        _token(request), sent.worker_id, sent.task_id, sent.progress, sent.message
    ):
        return _ignored("stale", f"task {sent.task_id!r} is not running on this worker")
    return web.json_response({"status": "event_accepted"})


EVENT_UNSIGNED = ("security", "bubbling_chain")
"""What SDK 1.0b20 leaves out of an event's signature: the chain grows as
the event travels."""


def _check_signature(
    request: web.Request, body: dict[str, object], leave_out: tuple[str, ...] = ("security",)
) -> None:
    """``WORKER_SIGNATURES_REQUIRED``: the body's ``security.signature``."""
    api = request.app[WORKER_API]
    if api.signatures_required:
        api.check_signature(_token(request), signed_content(body, leave_out), signature(body))


def _ignored(reason: str, message: str) -> web.Response:
    return web.json_response({"status": "ignored", "reason": reason, "message": message})


def _version(request: web.Request) -> str:
    sent = request.headers.get(_VERSION_HEADER)
    return sent if sent in PROTOCOL_VERSIONS else PROTOCOL_VERSION


async def add_protocol_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every ``/_worker`` response, errors included,
    names the protocol version."""
    if request.path.startswith("/_worker/"):
        response.headers[_VERSION_HEADER] = _version(request)


async def release_rest_workers(app: web.Application) -> None:
    """``on_shutdown``: answer every long-poll and close every worker socket
    now, so stopping the server never waits for them."""
    api = app.get(WORKER_API)
    if api is not None:
        api.workers.close()
