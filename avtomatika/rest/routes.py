"""The REST route table: every documented path, in one place.

``tests/test_routes.py`` holds this table equal to the ``google.api.http``
annotations in ``proto/`` (the worker WebSockets aside: they have no HTTP
mapping; and the web console's pages, which are not API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from avtomatika.rest import (
    client_api,
    console_api,
    dashboard_api,
    debug_api,
    docs_api,
    files_api,
    follow_api,
    graph_api,
    history_api,
    metrics_api,
    public_api,
)
from avtomatika.rest.worker_api import handlers as worker_api
from avtomatika.rest.worker_api import websocket as worker_ws

__all__ = ["DEBUG_PATHS", "ROUTES", "add_routes"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# Order matters: aiohttp tries routes in order, and the blueprint catch-all
# POST /api/{api_version}/{endpoint} must come after every fixed /api path.
ROUTES: tuple[tuple[str, str, _Handler], ...] = (
    ("GET", "/_public/status", public_api.status),
    ("GET", "/_public/metrics", metrics_api.metrics),
    ("POST", "/_public/webhooks/approval/{job_id}", public_api.approval),
    ("POST", "/_public/debug/flush_db", debug_api.flush_db),
    ("GET", "/_public/docs", docs_api.docs),
    ("GET", "/_public/openapi.json", docs_api.openapi),
    ("GET", "/api/v1/jobs", client_api.list_jobs),
    ("GET", "/api/v1/jobs/{job_id}", client_api.get_job),
    ("GET", "/api/v1/jobs/{job_id}/events", follow_api.job_events),
    ("POST", "/api/v1/jobs/{job_id}/cancel", client_api.cancel_job),
    ("POST", "/api/v1/jobs/{job_id}/retry", client_api.retry_job),
    ("POST", "/api/v1/jobs/{job_id}/approve", client_api.approve_job),
    ("GET", "/api/v1/jobs/{job_id}/history", history_api.job_history),
    ("GET", "/api/v1/jobs/{job_id}/files/upload", files_api.upload_url),
    ("PUT", "/api/v1/jobs/{job_id}/files/content/{filename}", files_api.upload_content),
    ("GET", "/api/v1/jobs/{job_id}/files/download/{filename}", files_api.download),
    ("GET", "/api/v1/blueprints", client_api.list_blueprints),
    ("GET", "/api/v1/blueprints/{blueprint_name}/graph", graph_api.blueprint_graph),
    ("GET", "/api/v1/workers", client_api.list_workers),
    ("GET", "/api/v1/dashboard", dashboard_api.dashboard),
    ("POST", "/api/{api_version}/{endpoint:.+}", client_api.create_job),
    ("POST", "/_worker/workers/register", worker_api.register),
    ("PATCH", "/_worker/workers/{worker_id}", worker_api.heartbeat),
    ("GET", "/_worker/workers/{worker_id}/tasks/next", worker_api.next_task),
    ("POST", "/_worker/tasks/result", worker_api.submit_result),
    ("POST", "/_worker/events", worker_api.report_event),
    # WebSockets: not in the proto (see worker_api.websocket.WEBSOCKET_PATHS).
    ("GET", "/_worker/ws/{worker_id}", worker_ws.worker_socket),
    ("GET", "/_worker/ws", worker_ws.anonymous_socket),
    # The web console's pages: not API, so not in the proto either (see
    # console_api.CONSOLE_PATHS).
    ("GET", "/", console_api.page),
    ("GET", "/console", console_api.page),
    ("GET", "/console/{asset}", console_api.asset),
)


DEBUG_PATHS = frozenset({"/_public/debug/flush_db"})
"""Routes served only with ``DEBUG_FLUSH_ENABLED``: otherwise not registered
at all, so every method answers 404 like an unknown path (a registered POST
route would make GET answer 405, revealing it)."""


def add_routes(app: web.Application, *, debug: bool = False) -> None:
    """Register :data:`ROUTES` on ``app``; :data:`DEBUG_PATHS` only with
    ``debug``."""
    for method, path, handler in ROUTES:
        if debug or path not in DEBUG_PATHS:
            app.router.add_route(method, path, handler)
