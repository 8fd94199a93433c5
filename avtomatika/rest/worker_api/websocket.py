"""The REST workers' WebSocket: ``GET /_worker/ws/{worker_id}`` (documented)
and ``GET /_worker/ws`` (what SDK 1.0b7 opens).

The token is checked before the upgrade: a bad one gets a 401 JSON answer
and no socket. Up, the worker sends ``{"event": "progress_update", "task_id",
"job_id", "progress", "message"}`` (SDK 1.0b7) or the event body of ``POST
/_worker/events`` with ``"event_type": "progress"`` (SDK 1.0b20, which
opens ``/_worker/ws/{worker_id}``); down, the server sends ``{"command":
"cancel_task", "task_id", "job_id"}``, which both SDKs obey.

A socket knows its worker from the path, or from a per-worker token. SDK
1.0b7 connects to ``/_worker/ws`` with the shared token, so its socket is
anonymous: progress on it counts for the REST worker holding the task, and
cancels reach that worker in its heartbeat replies instead. A second socket
for the same worker replaces the first, which is closed.

These routes are not in the proto: a WebSocket has no google.api.http mapping
(see ``tests/test_routes.py``), and the OpenAPI document leaves them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from aiohttp import WSMsgType, web

from avtomatika.errors import InvalidArgument, Unauthenticated, Unavailable
from avtomatika.payload import decode_json
from avtomatika.rest.worker_api.bodies import event, signature, signed_content
from avtomatika.rest.worker_api.handlers import (
    EVENT_UNSIGNED,
    WORKER_API,
    authenticate,
    path_worker,
)
from avtomatika.services.worker_api import WorkerApi

__all__ = ["WEBSOCKET_PATHS", "anonymous_socket", "worker_socket"]

log = logging.getLogger(__name__)

WEBSOCKET_PATHS = frozenset({"/_worker/ws/{worker_id}", "/_worker/ws"})
"""The WebSocket routes, which have no REST mapping in the proto."""

# Pings keep idle sockets open through proxies and find dead peers.
_PING_SECONDS = 30.0


async def worker_socket(request: web.Request) -> web.StreamResponse:
    return await _serve(request, path_worker(request))


async def anonymous_socket(request: web.Request) -> web.StreamResponse:
    return await _serve(request, authenticate(request))


class _Socket:
    """One open socket: the worker's cancel sink. ``push_cancel`` is called
    from engine code and must not block, so messages go through a queue to
    a writer coroutine."""

    def __init__(self) -> None:
        self._outbound: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._open = True

    def push_cancel(self, task_id: str, job_id: str, reason: str) -> bool:
        if not self._open:
            return False
        self._outbound.put_nowait({"command": "cancel_task", "task_id": task_id, "job_id": job_id})
        return True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._outbound.put_nowait(None)

    def close_replaced(self) -> None:
        """The worker opened a socket on another instance since."""
        self.close()

    async def write(self, ws: web.WebSocketResponse) -> None:
        while (message := await self._outbound.get()) is not None:
            await ws.send_json(message)
        await ws.close()


async def _serve(request: web.Request, worker_id: str | None) -> web.StreamResponse:
    workers = request.app[WORKER_API].workers
    if workers.closing:
        raise Unavailable("the orchestrator is shutting down")
    ws = web.WebSocketResponse(heartbeat=_PING_SECONDS)
    if not ws.can_prepare(request).ok:
        raise InvalidArgument("this endpoint is a WebSocket: send an Upgrade request")
    await ws.prepare(request)
    socket = _Socket()
    workers.attach(worker_id, socket)
    writer = asyncio.create_task(socket.write(ws), name=f"worker-socket-{worker_id}")
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                token = request.headers.get("X-Worker-Token")
                await _received(request.app[WORKER_API], token, worker_id, message.data)
    finally:
        workers.detach(worker_id, socket)
        socket.close()
        with contextlib.suppress(Exception):
            await writer
    return ws


async def _received(api: WorkerApi, token: str | None, worker_id: str | None, text: str) -> None:
    try:
        message = decode_json(text.encode())
    except (ValueError, UnicodeEncodeError):
        log.debug("worker socket %s: not JSON, ignored", worker_id)
        return
    if isinstance(message, dict) and "event_type" in message:
        if api.signatures_required:
            try:
                content = signed_content(message, EVENT_UNSIGNED)
                api.check_signature(token, content, signature(message))
            except Unauthenticated:
                return  # logged; a socket has no reply to refuse it with
        await _received_event(api, token, worker_id, message)
        return
    if not isinstance(message, dict) or message.get("event") != "progress_update":
        log.debug("worker socket %s: unknown message ignored", worker_id)
        return
    task_id, progress, note = (message.get(k) for k in ("task_id", "progress", "message"))
    value = math.nan
    if not isinstance(progress, bool) and isinstance(progress, int | float):
        with contextlib.suppress(OverflowError):  # a huge JSON integer
            value = float(progress)
    if not isinstance(task_id, str) or not math.isfinite(value):
        log.debug("worker socket %s: malformed progress_update ignored", worker_id)
        return
    await _progress(api, token, worker_id, task_id, value, note if isinstance(note, str) else "")


async def _progress(
    api: WorkerApi,
    token: str | None,
    worker_id: str | None,
    task_id: str,
    progress: float,
    message: str,
) -> bool:
    # A named socket's token was checked for its worker before the upgrade;
    # an anonymous one speaks only for a holder its token may act as.
    if worker_id is None:
        return await api.report_holders_progress(token, task_id, progress, message)
    return await api.workers.report_progress(worker_id, task_id, progress, message)


async def _received_event(
    api: WorkerApi, token: str | None, worker_id: str | None, message: dict[str, Any]
) -> None:
    """SDK 1.0b20's event message: progress counts for the socket's worker."""
    try:
        sent = event(message)
    except InvalidArgument as exc:
        log.info("worker socket %s: malformed event ignored: %s", worker_id, exc)
        return
    if sent.event_type != "progress":
        log.debug("worker socket %s: %s event ignored", worker_id, sent.event_type)
        return
    if worker_id is not None and sent.worker_id != worker_id:
        log.info("worker socket %s: event for worker %s ignored", worker_id, sent.worker_id)
        return
    if not await _progress(api, token, worker_id, sent.task_id, sent.progress, sent.message):
        log.info("worker socket %s: progress of task %s ignored", worker_id, sent.task_id)
