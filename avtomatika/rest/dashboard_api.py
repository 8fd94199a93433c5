"""``GET /api/v1/dashboard``: aggregate statistics (shape documented in
:mod:`avtomatika.monitoring.dashboard`)."""

from __future__ import annotations

from aiohttp import web

from avtomatika.monitoring.dashboard import Dashboard

__all__ = ["DASHBOARD", "dashboard"]

DASHBOARD = web.AppKey("dashboard", Dashboard)


async def dashboard(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DASHBOARD].snapshot())
