"""Public endpoints under ``/_public`` (no authentication)."""

from __future__ import annotations

from aiohttp import web

from avtomatika.errors import Unavailable
from avtomatika.rest.bodies import read_json_object
from avtomatika.rest.state import PUBLIC_API

__all__ = ["approval", "ready", "status"]


async def status(request: web.Request) -> web.Response:
    """Liveness: 200 while the process runs, whatever its store does."""
    return web.json_response({"status": request.app[PUBLIC_API].status()})


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 ``{"status": "ready"}`` while the store answers, else
    503 ``{"status": "not_ready", "error": ...}`` (a body a probe can read,
    beside the error every 503 carries)."""
    try:
        await request.app[PUBLIC_API].ready()
    except Unavailable as exc:
        return web.json_response({"status": "not_ready", "error": str(exc)}, status=503)
    return web.json_response({"status": "ready"})


async def approval(request: web.Request) -> web.Response:
    """A human decision for a job in ``waiting_for_human``: 400 for a
    decision the blueprint does not offer, 409 if the job is not waiting for
    one (a job waiting for a worker cannot be pushed along from here).

    With ``APPROVAL_TOKEN_REQUIRED=true`` the call must also carry the
    approval token of the wait (shown to the job's owner in its JSON), in the
    ``X-Approval-Token`` header or the body's ``token`` field; 401 otherwise.
    """
    job_id = request.match_info["job_id"]
    body = await read_json_object(request)
    token = request.headers.get("X-Approval-Token", body.get("token"))
    await request.app[PUBLIC_API].submit_approval(job_id, body.get("decision"), token)
    return web.json_response({"status": "approval_received", "job_id": job_id})
