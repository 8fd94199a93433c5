"""``GET /api/v1/dashboard``: aggregate statistics (shape documented in
:mod:`avtomatika.monitoring.dashboard`)."""

from __future__ import annotations

from aiohttp import web

from avtomatika.rest.state import CLIENT_API, client_of

__all__ = ["dashboard"]


async def dashboard(request: web.Request) -> web.Response:
    return web.json_response(await request.app[CLIENT_API].dashboard(client_of(request)))
