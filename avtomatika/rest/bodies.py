"""Reading and validating request bodies; every problem is a 400 naming the field."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from avtomatika.errors import InvalidArgument
from avtomatika.payload import decode_json
from avtomatika.services.requests import JobRequest

__all__ = ["job_request", "read_json_object"]


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidArgument("the request body must be a JSON object")
    try:
        value = decode_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return value


def job_request(body: dict[str, Any], *, allow_private_webhooks: bool = False) -> JobRequest:
    """A ``POST /api/{version}/{endpoint}`` body as a validated request."""
    if "initial_data" not in body:
        # The original's legacy form: the whole body is the initial data.
        return JobRequest(body)
    return JobRequest.check(
        body["initial_data"],
        body.get("webhook_url"),
        body.get("dispatch_timeout"),
        body.get("result_timeout"),
        allow_private_webhooks=allow_private_webhooks,
    )
