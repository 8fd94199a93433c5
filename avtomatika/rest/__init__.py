"""The REST transport (aiohttp): public, client and worker HTTP APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from avtomatika.access.authenticator import Authenticator
from avtomatika.config import Settings
from avtomatika.engine.core import Engine
from avtomatika.engine.followers import JobFollowers
from avtomatika.payload import message_limit
from avtomatika.rest.access_log import echo_request_id, request_scope_middleware
from avtomatika.rest.docs_api import RestDocuments
from avtomatika.rest.follow_api import close_followers
from avtomatika.rest.metrics_api import count_rate_limited_middleware
from avtomatika.rest.middleware import client_auth_middleware, error_middleware
from avtomatika.rest.peer import certificate_middleware
from avtomatika.rest.routes import add_routes
from avtomatika.rest.state import AUTH, CLIENT_API, ENGINE, PUBLIC_API
from avtomatika.rest.worker_api.handlers import add_protocol_header, release_rest_workers
from avtomatika.services.client_api import ClientApi
from avtomatika.services.public_api import PublicApi

__all__ = ["build_app"]


async def _name_the_server(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp would name itself and Python with their versions in every
    # answer (a scanner's first hint); the product's name is all a client needs.
    response.headers["Server"] = "avtomatika"


def build_app(
    engine: Engine,
    auth: Authenticator,
    client_api: ClientApi | None = None,
    public_api: PublicApi | None = None,
) -> web.Application:
    """The aiohttp application for ``engine``; the engine's lifecycle is the
    caller's (see :mod:`avtomatika.server`). Without ``client_api`` the
    client endpoints run with no limits, history or dashboard, and without
    ``public_api`` there are no metrics. The public API's documents become
    this application's."""
    app = web.Application(
        # The request's scope is outermost: whatever is logged while serving
        # carries its id. The 429 counter comes next: it sees errors
        # already rendered.
        middlewares=[
            request_scope_middleware,
            count_rate_limited_middleware,
            error_middleware,
            client_auth_middleware,
            # Workers' client certificates, read only when their ids are
            # bound to them.
            *([certificate_middleware] if engine.config.tls_bind_worker_identity else []),
        ],
        # Larger bodies are refused with 413 before they are read: a
        # payload at MAX_PAYLOAD_BYTES with room for the rest of the body,
        # or, with S3, one that goes on by reference (the claim-check).
        client_max_size=_body_limit(engine.config),
    )
    app[ENGINE] = engine
    app[AUTH] = auth
    if client_api is None:
        followers = JobFollowers(engine.events)
        client_api = ClientApi(engine, auth, followers)

        async def follow(app: web.Application) -> AsyncIterator[None]:
            await followers.start()  # else waits would wake only on their timeout
            yield
            await followers.stop()

        app.cleanup_ctx.append(follow)
    public_api = public_api or PublicApi(engine, client_api.followers)
    public_api.documents = RestDocuments(app)
    app[CLIENT_API] = client_api
    app[PUBLIC_API] = public_api
    add_routes(app, debug=engine.config.debug_flush_enabled)
    app.on_shutdown.append(close_followers)
    app.on_shutdown.append(release_rest_workers)
    app.on_response_prepare.append(add_protocol_header)
    app.on_response_prepare.append(echo_request_id)
    app.on_response_prepare.append(_name_the_server)
    return app


def _body_limit(settings: Settings) -> int:
    limit = message_limit(settings.max_payload_bytes)
    if settings.s3_endpoint_url:
        limit = max(limit, message_limit(settings.claim_check_max_bytes))
    return limit
