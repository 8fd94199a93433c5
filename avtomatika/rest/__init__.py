"""The REST transport (aiohttp): public, client and worker HTTP APIs."""

from __future__ import annotations

from aiohttp import web

from avtomatika.access.authenticator import Authenticator
from avtomatika.engine.core import Engine
from avtomatika.rest.follow_api import close_followers
from avtomatika.rest.metrics_api import count_rate_limited_middleware
from avtomatika.rest.middleware import client_auth_middleware, error_middleware
from avtomatika.rest.rate_limit import rate_limit_middleware
from avtomatika.rest.routes import add_routes
from avtomatika.rest.state import AUTH, ENGINE
from avtomatika.rest.worker_api.handlers import add_protocol_header, release_rest_workers

__all__ = ["build_app"]

# Bodies larger than this are refused with 413 before they are read. File
# uploads stream and are not subject to it.
_MAX_BODY_BYTES = 16 * 1024 * 1024


def build_app(engine: Engine, auth: Authenticator) -> web.Application:
    """The aiohttp application for ``engine``; the engine's lifecycle is the
    caller's (see :mod:`avtomatika.server`)."""
    app = web.Application(
        # The 429 counter is outermost: it sees errors already rendered.
        middlewares=[
            count_rate_limited_middleware,
            error_middleware,
            client_auth_middleware,
            rate_limit_middleware,
        ],
        client_max_size=_MAX_BODY_BYTES,
    )
    app[ENGINE] = engine
    app[AUTH] = auth
    add_routes(app)
    app.on_shutdown.append(close_followers)
    app.on_shutdown.append(release_rest_workers)
    app.on_response_prepare.append(add_protocol_header)
    return app
