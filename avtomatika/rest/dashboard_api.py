"""``GET /api/v1/dashboard``: aggregate statistics (shape documented in
:mod:`avtomatika.monitoring.dashboard`)."""

from __future__ import annotations

from aiohttp import web

from avtomatika.clock import iso_from_ms
from avtomatika.rest.state import CLIENT_API, client_of

__all__ = ["dashboard"]


async def dashboard(request: web.Request) -> web.Response:
    snapshot = await request.app[CLIENT_API].dashboard(client_of(request))
    # Times as the rest of the REST API writes them, ISO 8601.
    oldest = snapshot.pop("oldest_queued_at_by_skill_ms")
    snapshot["oldest_queued_at_by_skill"] = {skill: iso_from_ms(ms) for skill, ms in oldest.items()}
    return web.json_response(snapshot)
