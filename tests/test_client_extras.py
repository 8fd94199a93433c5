"""The client's extras: ``?fields=`` on a job read and on a listing (REST
only), and a blueprint whose ``input_schema`` is no valid JSON Schema.

(A job's ``result`` and the check of ``initial_data`` against an
``input_schema`` are in the scenario table of
:mod:`tests.test_client_api_matrix`, over both transports.)
"""

from __future__ import annotations

from typing import Any

import pytest

from avtomatika import StateMachineBlueprint
from avtomatika.errors import BlueprintError
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


async def test_fields_select_what_a_job_read_answers_and_id_is_always_there(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-fields")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo", {"n": 1})
    await worker.succeed(await worker.next_task(), {"doubled": 2})
    whole = await wait_for_status(http, job_id, "finished")

    async def read(query: str) -> dict[str, object]:
        response = await http.get(f"/api/v1/jobs/{job_id}?{query}")
        assert response.status == 200, await response.text()
        answer: dict[str, object] = await response.json()
        return answer

    assert await read("fields=status,result") == {
        "id": job_id,
        "status": "finished",
        "result": {"doubled": 2},
    }
    # Repeated, with spaces, in any order: the job's own order comes back.
    assert list(await read("fields=result&fields= status")) == ["id", "status", "result"]
    assert await read("fields=id") == {"id": job_id}
    # approval_token is there only while the job waits for a human.
    assert await read("fields=approval_token") == {"id": job_id}
    assert await read("fields=") == whole  # empty: every field


async def test_fields_select_each_listed_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    ids = [await create_job(http, "jobs/echo", {"n": n}) for n in range(3)]

    response = await http.get("/api/v1/jobs?fields=initial_data,result")
    page = await response.json()
    # (Jobs created in one millisecond may list in any order among themselves.)
    assert sorted(page["jobs"], key=lambda job: job["initial_data"]["n"]) == [
        {"id": job_id, "initial_data": {"n": n}, "result": None}  # running: no result yet
        for n, job_id in enumerate(ids)
    ]
    assert page["next_page_token"] == ""


@pytest.mark.parametrize("path", ["/api/v1/jobs/{job_id}", "/api/v1/jobs"])
async def test_an_unknown_field_is_refused_by_name(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, path: str
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")

    response = await http.get(path.format(job_id=job_id), params={"fields": "status,client_token"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert "'client_token' is not a field of a job" in error
    assert "status, current_state" in error  # the names that would do


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "objekt"}, "(at type): 'objekt' is not valid under any of the given schemas"),
        (
            {"properties": {"items": {"items": {"minimum": "zero"}}}},
            "(at properties/items/items/minimum): 'zero' is not of type 'number'",
        ),
        ({"required": "customer"}, "(at required): 'customer' is not of type 'array'"),
        ({"enum": {1, 2}}, "input_schema is not JSON"),
    ],
    ids=["unknown type", "deep", "required not a list", "not JSON"],
)
async def test_an_invalid_input_schema_is_refused_at_registration(
    start_orchestrator: StartOrchestrator, schema: dict[str, Any], problem: str
) -> None:
    orchestrator = await start_orchestrator()
    with pytest.raises(BlueprintError) as caught:
        orchestrator.register_blueprint(echo_blueprint("order", input_schema=schema))
    assert caught.value.message.startswith("blueprint 'order': input_schema is not ")
    assert problem in caught.value.message
    assert "order" not in orchestrator.blueprints


def test_an_input_schema_must_be_an_object() -> None:
    with pytest.raises(BlueprintError, match="input_schema must be a JSON Schema object"):
        StateMachineBlueprint("order", input_schema=[{"type": "object"}])  # type: ignore[arg-type]
