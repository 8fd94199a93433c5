"""Public endpoints under ``/_public`` (no authentication)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["status"]


async def status(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
