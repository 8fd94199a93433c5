"""The aiohttp route table and the proto's google.api.http annotations are the
same set of (method, path): the proto is the one source of truth for routes."""

from __future__ import annotations

import re

from google.api import annotations_pb2, http_pb2

from avtomatika.access.authenticator import Authenticator
from avtomatika.config import Settings
from avtomatika.engine.core import Engine
from avtomatika.rest import build_app
from avtomatika.rest.console_api import CONSOLE_PATHS
from avtomatika.rest.worker_api.websocket import WEBSOCKET_PATHS
from avtomatika.v1 import job_service_pb2, public_service_pb2, worker_service_pb2

_SERVICES = (
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"],
    public_service_pb2.DESCRIPTOR.services_by_name["PublicService"],
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
)


def _normalise(path: str) -> str:
    """``{name=**}`` (google.api) and ``{name:regex}`` (aiohttp) -> ``{name}``."""
    return re.sub(r"\{([a-z_]+)[=:][^}]*\}", r"{\1}", path)


def annotated_routes() -> set[tuple[str, str]]:
    routes = set()
    for service in _SERVICES:
        for method in service.methods:
            rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb is None:
                continue  # Connect: the stream has no REST mapping
            routes.add((verb.upper(), _normalise(getattr(rule, verb))))
    return routes


def aiohttp_routes() -> set[tuple[str, str]]:
    # With the debug routes, which a default server does not register at all.
    app = build_app(Engine(config=Settings(debug_flush_enabled=True)), Authenticator(Settings()))
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str)
        routes.add((route.method, _normalise(path)))
    return routes


def test_every_annotated_path_is_served_and_nothing_else() -> None:
    annotated = annotated_routes()
    # The worker WebSockets are an exception: an upgrade has no
    # google.api.http mapping, so they are served without an annotation.
    # The console's pages are the other: web pages, not API.
    unannotated = {("GET", path) for path in WEBSOCKET_PATHS | CONSOLE_PATHS}
    served = aiohttp_routes()
    assert unannotated <= served
    served -= unannotated
    assert annotated - served == set(), "annotated in proto/ but not served"
    assert served - annotated == set(), "served but not annotated in proto/"


def test_the_documented_paths_are_all_annotated() -> None:
    # A spot check against the reference document, so an annotation typo
    # cannot make both sides agree on a wrong path.
    documented = {
        ("GET", "/_public/status"),
        ("POST", "/api/{api_version}/{endpoint}"),
        ("GET", "/api/v1/jobs/{job_id}"),
        ("POST", "/api/v1/jobs/{job_id}/cancel"),
        ("PATCH", "/_worker/workers/{worker_id}"),
        ("GET", "/_worker/workers/{worker_id}/tasks/next"),
        ("PUT", "/api/v1/jobs/{job_id}/files/content/{filename}"),
    }
    assert documented <= annotated_routes()
