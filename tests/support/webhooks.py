"""A real webhook receiver on 127.0.0.1 (port 0), and a job created with a
webhook to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

FAST_RETRIES: dict[str, Any] = {
    "webhook_allow_private": True,
    "webhook_backoff_base_seconds": 0.01,
}
"""Settings that let deliveries reach the loopback receiver, retried fast."""


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    body: bytes
    headers: CIMultiDictProxy[str]

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class Receiver:
    """A webhook endpoint that answers with ``statuses`` in turn (then 200)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[Received] = []
        self._arrivals: asyncio.Queue[Received] = asyncio.Queue()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        """Record the request and answer the next of ``statuses``."""
        received = Received(await request.read(), request.headers)
        self.requests.append(received)
        self._arrivals.put_nowait(received)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.json_response({"ok": status < 300}, status=status)

    async def next(self) -> Received:
        """The next request to arrive (or the oldest not yet taken)."""
        return await self._arrivals.get()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A :class:`Receiver` serving ``POST /hook`` until the test ends."""
    endpoint = Receiver()
    app = web.Application()
    app.router.add_post("/hook", endpoint.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    endpoint.url = f"http://127.0.0.1:{port}/hook"
    yield endpoint
    await runner.cleanup()


async def create_job_with_webhook(
    http: aiohttp.ClientSession, endpoint: str, url: str, initial_data: Any = None
) -> str:
    """``POST /api/v1/{endpoint}`` with a ``webhook_url``; the new job's id."""
    body = {"initial_data": initial_data or {}, "webhook_url": url}
    response = await http.post(f"/api/v1/{endpoint}", json=body)
    answer = await response.json()
    assert response.status == 202, answer
    job_id: str = answer["job_id"]
    return job_id
