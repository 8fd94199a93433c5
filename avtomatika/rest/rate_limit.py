"""Rate limiting of ``/api`` requests, per authenticated client.

Runs after client authentication (it counts per client, so a request with no
valid token is refused with 401 before it could be counted), and answers 429
JSON with ``Retry-After`` in whole seconds. The monthly job quota is applied
where jobs are created (:func:`avtomatika.rest.client_api.create_job`).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from avtomatika.limits.client_limits import ClientLimits
from avtomatika.rest.state import CLIENT

__all__ = ["LIMITS", "rate_limit_middleware"]

LIMITS = web.AppKey("limits", ClientLimits)
"""The process's :class:`ClientLimits`; without it nothing is limited."""


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    client = request.get(CLIENT)
    limits = request.app.get(LIMITS)
    if client is not None and limits is not None:
        await limits.check_rate(client.id)
    return await handler(request)
