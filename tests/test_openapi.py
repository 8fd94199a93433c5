"""``GET /_public/openapi.json`` and ``GET /_public/docs``: a valid OpenAPI
3.1 document generated from the route table (one create path per
blueprint), whose schemas describe what the server really answers, and a
self-contained page over it."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import aiohttp
import jsonschema_rs
from openapi_spec_validator import validate

from avtomatika.rest import build_app
from avtomatika.rest.api_shapes import CREATE_JOB, OPERATIONS, SCHEMAS
from avtomatika.rest.console_api import CONSOLE_PATHS
from avtomatika.rest.openapi import annotated_rpcs, template
from avtomatika.rest.worker_api.websocket import WEBSOCKET_PATHS
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

CATCH_ALL = ("POST", "/api/{api_version}/{endpoint}")


async def fetch_document(http: aiohttp.ClientSession) -> dict[str, Any]:
    response = await http.get("/_public/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document = await response.json()
    assert isinstance(document, dict)
    return document


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def conforms(instance: Any, schema_name: str) -> None:
    """Validate against a component schema, its references resolved."""
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": {"schemas": SCHEMAS}}
    jsonschema_rs.validator_for(root).validate(instance)


async def test_the_document_is_valid_openapi_3_1(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    document = await fetch_document(http_client(orchestrator, token=None))

    validate(document)
    assert document["openapi"].startswith("3.1")


async def test_every_route_is_documented_under_its_rpc_name(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    documented = operations(await fetch_document(http_client(orchestrator)))

    app = build_app(orchestrator.engine, orchestrator.auth)
    # WebSockets are left out (OpenAPI cannot describe them), and so are
    # the console's pages (not API).
    served = {
        (route.method, template(route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None
        and template(route.resource.canonical) not in WEBSOCKET_PATHS | CONSOLE_PATHS
    }
    rpcs = annotated_rpcs()
    assert served - {CATCH_ALL} == set(documented) - {("POST", "/api/v1/jobs/echo")}
    for key in served - {CATCH_ALL}:
        assert documented[key]["operationId"] == rpcs[key].name


async def test_each_blueprint_gets_its_own_create_path(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint(), echo_blueprint("video")])
    http = http_client(orchestrator)
    # Registered after start: the document is rebuilt for every request.
    orchestrator.register_blueprint(echo_blueprint("late"))

    documented = operations(await fetch_document(http))

    creates = {key: op for key, op in documented.items() if op["tags"] == ["blueprints"]}
    assert set(creates) == {
        ("POST", "/api/v1/jobs/echo"),
        ("POST", "/api/v1/jobs/video"),
        ("POST", "/api/v1/jobs/late"),
    }
    create = creates[("POST", "/api/v1/jobs/video")]
    assert create["operationId"] == "CreateJob_video"
    assert create["x-avtomatika-blueprint"] == "video"
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CreateJobBody"}
    assert set(create["responses"]) == {"202", "400", "401", "413", "429"}
    assert CATCH_ALL not in documented, "the generic catch-all is replaced by the concrete paths"
    # ...and each of them really creates a job of its blueprint.
    job_id = await create_job(http, "jobs/late")
    assert (await (await http.get(f"/api/v1/jobs/{job_id}")).json())["blueprint_name"] == "late"


def test_every_annotated_rpc_has_documented_shapes() -> None:
    missing = {rpc.name for rpc in annotated_rpcs().values()} - set(OPERATIONS)
    assert not missing, (
        f"add an Operation for {sorted(missing)} in avtomatika/rest/api_shapes.py "
        "(its bodies, replies and status codes)"
    )
    assert CREATE_JOB in OPERATIONS


async def test_security_follows_the_path_prefix(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    document = await fetch_document(http_client(orchestrator))

    assert document["components"]["securitySchemes"] == {
        "clientToken": {"type": "apiKey", "in": "header", "name": "X-Client-Token"},
        "workerToken": {"type": "apiKey", "in": "header", "name": "X-Worker-Token"},
    }
    for (_, path), operation in operations(document).items():
        expected = {"/api/": "clientToken", "/_worker/": "workerToken"}.get(
            re.sub(r"^(/[^/]+/).*", r"\1", path)
        )
        if expected is None:
            assert "security" not in operation, path
        else:
            assert operation["security"] == [{expected: []}], path
            assert "401" in operation["responses"], path


async def test_query_parameters_come_from_the_request_messages(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator()
    documented = operations(await fetch_document(http_client(orchestrator)))

    def parameters(key: tuple[str, str]) -> dict[str, tuple[str, bool]]:
        return {p["name"]: (p["in"], p["required"]) for p in documented[key]["parameters"]}

    assert parameters(("GET", "/api/v1/jobs/{job_id}/files/upload")) == {
        "job_id": ("path", True),
        "filename": ("query", True),
        "expires_in": ("query", False),
    }
    assert parameters(("GET", "/api/v1/jobs/{job_id}")) == {
        "job_id": ("path", True),
        "wait": ("query", False),
        "fields": ("query", False),  # REST only: added by api_shapes
    }
    assert parameters(("GET", "/api/v1/jobs"))["fields"] == ("query", False)
    assert "parameters" not in documented[("GET", "/api/v1/workers")]


async def test_the_documented_shapes_are_what_the_server_answers(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-docs")
    await worker.hello(["echo"])
    response = await http.post("/api/v1/jobs/echo", json={"initial_data": {"n": 1}})
    accepted = await response.json()
    conforms(accepted, "JobAccepted")
    await worker.succeed(await worker.next_task(), {"big": 12345678901234567})

    conforms(await wait_for_status(http, accepted["job_id"], "finished"), "Job")
    conforms((await (await http.get("/api/v1/workers")).json())[0], "Worker")
    conforms(await (await http.get("/api/v1/jobs/nope")).json(), "Error")
    conforms(await (await http.post(f"/api/v1/jobs/{accepted['job_id']}/cancel")).json(), "Error")


async def test_the_docs_page_is_self_contained(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator()
    response = await http_client(orchestrator, token=None).get("/_public/docs")
    page = await response.text()

    assert response.status == 200
    assert response.content_type == "text/html"
    assert "/_public/openapi.json" in page
    # Nothing from elsewhere: no URL, no src= or href= at all.
    assert not re.search(r"https?://|\ssrc=|\shref=|@import", page)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    # The policy admits exactly the inline script and style it carries.
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}';" in policy
