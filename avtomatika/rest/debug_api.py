"""``POST /_public/debug/flush_db``: empty the job store, for development.

Off unless ``DEBUG_FLUSH_ENABLED=true``: until then the route answers 404
like any unknown path, so a production server does not even reveal it.
Flushing removes every job, task and queue; followers of a job learn that it
is gone.
"""

from __future__ import annotations

from aiohttp import web

from avtomatika.rest.state import PUBLIC_API

__all__ = ["flush_db"]


async def flush_db(request: web.Request) -> web.Response:
    await request.app[PUBLIC_API].flush()
    return web.json_response({"status": "db_flushed"})
