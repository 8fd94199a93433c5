"""Bad input over real HTTP: always a 4xx JSON {"error": ...}, never a text
page or a 500, and nothing half-written."""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp
import pytest

from avtomatika import OrchestratorEngine
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import StartOrchestrator

HttpFactory = Callable[..., aiohttp.ClientSession]


async def error_of(response: aiohttp.ClientResponse, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert body["error"]
    return body["error"]


@pytest.fixture
async def orchestrator(start_orchestrator: StartOrchestrator) -> OrchestratorEngine:
    return await start_orchestrator([echo_blueprint()])


async def count_jobs(orchestrator: OrchestratorEngine) -> int:
    return sum((await orchestrator.engine.storage.count_jobs()).values())


async def test_malformed_json_is_400_and_creates_nothing(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    http = http_client(orchestrator)
    message = await error_of(await http.post("/api/v1/jobs/echo", data=b"{not json"), 400)
    assert "JSON" in message
    assert await count_jobs(orchestrator) == 0


@pytest.mark.parametrize("body", [b'{"initial_data": {"x": NaN}}', b'{"x": Infinity}', b"[1e400]"])
async def test_nan_or_infinity_in_a_body_is_400_and_creates_nothing(
    orchestrator: OrchestratorEngine, http_client: HttpFactory, body: bytes
) -> None:
    http = http_client(orchestrator)
    await error_of(await http.post("/api/v1/jobs/echo", data=body), 400)
    assert await count_jobs(orchestrator) == 0


async def test_integers_of_any_size_keep_every_digit(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    http = http_client(orchestrator)
    big = {"big": 123456789012345678901234567890, "u64": 2**64 - 1, "negative": -(2**63) - 1}
    response = await http.post("/api/v1/jobs/echo", json={"initial_data": big})
    assert response.status == 202
    job_id = (await response.json())["job_id"]
    job = json.loads(await (await http.get(f"/api/v1/jobs/{job_id}")).read())
    assert job["initial_data"] == big


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([1, 2], "body"),
        ({"initial_data": [1]}, "initial_data"),
        ({"initial_data": {}, "webhook_url": "ftp://x"}, "webhook_url"),
        ({"initial_data": {}, "webhook_url": 5}, "webhook_url"),
        ({"initial_data": {}, "dispatch_timeout": -1}, "dispatch_timeout"),
        ({"initial_data": {}, "dispatch_timeout": "soon"}, "dispatch_timeout"),
        ({"initial_data": {}, "result_timeout": 0}, "result_timeout"),
        ({"initial_data": {}, "result_timeout": True}, "result_timeout"),
    ],
)
async def test_invalid_fields_are_400_naming_the_field(
    orchestrator: OrchestratorEngine, http_client: HttpFactory, body: object, field: str
) -> None:
    http = http_client(orchestrator)
    message = await error_of(await http.post("/api/v1/jobs/echo", json=body), 400)
    assert field in message
    assert await count_jobs(orchestrator) == 0


async def test_legacy_body_without_initial_data_is_the_initial_data(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    http = http_client(orchestrator)
    response = await http.post("/api/v1/jobs/echo", json={"text": "hi"})
    assert response.status == 202
    job_id = (await response.json())["job_id"]
    job = await (await http.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["initial_data"] == {"text": "hi"}


async def test_unknown_blueprint_path_is_404_json(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    http = http_client(orchestrator)
    message = await error_of(await http.post("/api/v1/jobs/nope", json={}), 404)
    assert "/api/v1/jobs/nope" in message
    await error_of(await http.post("/api/v9/jobs/echo", json={}), 404)


async def test_unknown_job_is_404_json(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    http = http_client(orchestrator)
    message = await error_of(await http.get("/api/v1/jobs/does-not-exist"), 404)
    assert "does-not-exist" in message
    await error_of(await http.post("/api/v1/jobs/does-not-exist/cancel"), 404)


async def test_missing_or_wrong_client_token_is_401_json(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    for token in (None, "wrong-token", ""):
        http = http_client(orchestrator, token=token)
        await error_of(await http.post("/api/v1/jobs/echo", json={}), 401)
        await error_of(await http.get("/api/v1/jobs/x"), 401)
    assert await count_jobs(orchestrator) == 0


async def test_unknown_route_and_wrong_method_are_json(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    http = http_client(orchestrator)
    await error_of(await http.get("/no/such/route"), 404)
    response = await http.delete("/_public/status")
    await error_of(response, 405)
    assert "GET" in response.headers["Allow"]


async def test_worker_routes_without_a_worker_token_answer_401_json(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    http = http_client(orchestrator)  # a client token is not a worker token
    await error_of(await http.post("/_worker/tasks/result", json={}), 401)


async def test_status_endpoint_needs_no_token(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    response = await http_client(orchestrator, token=None).get("/_public/status")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_job_json_has_the_documented_fields_and_no_secrets(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    http = http_client(orchestrator)
    response = await http.post(
        "/api/v1/jobs/echo",
        json={"initial_data": {"a": 1}, "webhook_url": "https://example.test/hook"},
    )
    job_id = (await response.json())["job_id"]
    job = await (await http.get(f"/api/v1/jobs/{job_id}")).json()
    for field in (
        "id", "blueprint_name", "status", "current_state", "initial_data", "state_history",
        "result", "error", "progress", "progress_message", "created_at", "updated_at",
        "retry_count", "parent_job_id", "child_job_ids",
    ):  # fmt: skip
        assert field in job
    text = str(job)
    assert "test-client-token" not in text
    assert "X-Client-Token" not in text
    assert job["created_at"].endswith("+00:00")


async def test_answers_name_the_server_without_versions(
    orchestrator: OrchestratorEngine, http_client: HttpFactory
) -> None:
    """Neither aiohttp's nor Python's version is told to whoever asks."""
    http = http_client(orchestrator)
    for response in (
        await http.get("/_public/status"),
        await http.get("/no/such/path"),
        await http.post("/api/v1/jobs/echo", data=b"{not json"),
    ):
        assert response.headers["Server"] == "avtomatika"
