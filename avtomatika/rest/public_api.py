"""Public endpoints under ``/_public`` (no authentication)."""

from __future__ import annotations

from aiohttp import web

from avtomatika.errors import InvalidArgument
from avtomatika.rest.bodies import read_json_object
from avtomatika.rest.state import ENGINE

__all__ = ["approval", "status"]


async def status(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def approval(request: web.Request) -> web.Response:
    """A human decision for a job in ``waiting_for_human``: 400 for a
    decision the blueprint does not offer, 409 if the job is not waiting for
    one (a job waiting for a worker cannot be pushed along from here)."""
    job_id = request.match_info["job_id"]
    decision = (await read_json_object(request)).get("decision")
    if not isinstance(decision, str) or not decision:
        raise InvalidArgument("decision must be a non-empty string")
    await request.app[ENGINE].submit_approval(job_id, decision)
    return web.json_response({"status": "approval_received", "job_id": job_id})
