"""``GET /_public/metrics``, and the middleware that counts 429 answers."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from avtomatika.monitoring.metrics import Metrics
from avtomatika.rest.state import PUBLIC_API

__all__ = ["METRICS", "count_rate_limited_middleware", "metrics"]

METRICS = web.AppKey("metrics", Metrics)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (OpenMetrics when the scraper asks for it)."""
    body, content_type = await request.app[PUBLIC_API].metrics_text(
        request.headers.get("Accept", "")
    )
    return web.Response(body=body, headers={"Content-Type": content_type})


@web.middleware
async def count_rate_limited_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Count every 429, whoever answered it (rate limit or quota). It must
    be the outermost middleware, so errors are responses by the time it
    looks."""
    response = await handler(request)
    if response.status == 429:
        collector = request.app.get(METRICS)
        if collector is not None:
            resource = request.match_info.route.resource
            collector.count_rate_limited(resource.canonical if resource else "unmatched")
    return response
