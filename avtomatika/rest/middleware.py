"""Errors as JSON, and client authentication (with its rate limit) for ``/api``.

Every error leaves as ``{"error": "..."}`` with the status from
:func:`avtomatika.errors.http_status`; aiohttp's own errors (unknown route,
wrong method, oversized body) are rendered the same way, so a client never
sees a text/plain page.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from avtomatika.errors import AvtomatikaError, RateLimited, http_status
from avtomatika.rest.state import CLIENT, CLIENT_API

__all__ = ["client_auth_middleware", "error_middleware", "json_error"]

log = logging.getLogger(__name__)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error response in the documented shape."""
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AvtomatikaError as exc:
        headers = (
            {"Retry-After": str(exc.retry_after_seconds)} if isinstance(exc, RateLimited) else None
        )
        return json_error(http_status(exc), exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and exc.content_type == "application/json" else exc.reason
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            # aiohttp's text names the limit and the size, never the body.
            message = f"request body too large: {exc.text}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return json_error(exc.status, message, headers)
    except RequestPayloadError:
        # The body's framing or encoding is broken (a bad chunk size, gzip
        # that does not inflate): the client's fault, said without its bytes.
        return json_error(400, "the request body could not be read: malformed encoding")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal error")


@web.middleware
async def client_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        # X-Client-Token is documented; X-Avtomatika-Token is what the
        # original's client code sent, accepted so those clients keep working.
        token = request.headers.get("X-Client-Token") or request.headers.get("X-Avtomatika-Token")
        request[CLIENT] = await request.app[CLIENT_API].caller(token, credential="X-Client-Token")
    return await handler(request)
