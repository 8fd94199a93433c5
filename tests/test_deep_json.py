"""Deeply nested JSON is refused before it is parsed deeply: 400 JSON on
every REST endpoint that reads a body (the public approval webhook needs no
credential at all), INVALID_ARGUMENT over gRPC, never a 500 nor a traceback
in the log. Two shapes: 1,000 levels of objects (the depth at which orjson
still parses but every encoder recurses out), and 100,000 levels of arrays
around a 19-digit integer (which sends the text to the standard library's
recursive parser)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

from avtomatika.payload import JSON_ENCODING, MAX_JSON_DEPTH, decode_json
from avtomatika.v1 import job_service_pb2_grpc
from avtomatika.v1.job_service_pb2 import CreateJobRequest
from avtomatika.v1.payload_pb2 import Payload
from tests.support import CLIENT_TOKEN, create_job, wait_for_status
from tests.support.blueprints import approval_blueprint, echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.support.rest_worker import RestWorkers

DEEP_OBJECTS = b'{"a":' * 1000 + b"1" + b"}" * 1000
DEEP_ARRAYS = b"[" * 100_000 + b"1234567890123456789" + b"]" * 100_000


def inside(field: str, deep: bytes) -> bytes:
    """``deep`` as the value of ``field`` in an object."""
    return b'{"' + field.encode() + b'":' + deep + b"}"


def test_the_limit_counts_brackets_outside_strings_only() -> None:
    at_limit = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert decode_json(at_limit) == decode_json(at_limit)  # parses
    with pytest.raises(ValueError, match="deeper than"):
        decode_json(b"[" + at_limit + b"]")
    # Brackets inside strings (escaped quotes included) do not nest anything.
    text = b'["' + b"[" * 1000 + b'\\"' + b"{" * 1000 + b'"]'
    assert decode_json(text) == ["[" * 1000 + '"' + "{" * 1000]


@pytest.mark.parametrize("deep", [DEEP_OBJECTS, DEEP_ARRAYS], ids=["objects", "arrays"])
async def test_every_rest_body_refuses_deep_json_with_400(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    rest_worker: RestWorkers,
    caplog: pytest.LogCaptureFixture,
    deep: bytes,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint(), approval_blueprint("review")])
    http = http_client(orchestrator)
    anonymous = http_client(orchestrator, token=None)
    worker = rest_worker(orchestrator)
    await worker.register()
    waiting = await create_job(http, "jobs/review")
    await wait_for_status(http, waiting, "waiting_for_human")
    echo = await create_job(http, "jobs/echo")
    task = await worker.next_task()
    headers = {"Content-Type": "application/json"}
    caplog.set_level(logging.WARNING)

    refusals = [
        await http.post("/api/v1/jobs/echo", data=deep, headers=headers),
        await http.post("/api/v1/jobs/echo", data=inside("initial_data", deep), headers=headers),
        await anonymous.post(
            f"/_public/webhooks/approval/{waiting}",
            data=inside("decision", deep),
            headers=headers,
        ),
        await worker.http.post("/_worker/workers/register", data=deep, headers=headers),
        await worker.http.patch(f"/_worker/workers/{worker.worker_id}", data=deep, headers=headers),
        await worker.http.post(
            "/_worker/tasks/result",
            data=b'{"job_id":"%s","task_id":"%s","worker_id":"%s","status":"success","data":%s}'
            % (echo.encode(), task["task_id"].encode(), worker.worker_id.encode(), deep),
            headers=headers,
        ),
    ]

    for response in refusals:
        assert response.status == 400, await response.text()
        body: dict[str, Any] = await response.json()
        assert "deeper than" in body["error"]
    assert not [r for r in caplog.records if r.exc_info], "a refusal logged a traceback"
    # Nothing was half-written: the two jobs are as they were, no third one.
    assert sum((await orchestrator.engine.storage.count_jobs()).values()) == 2
    await wait_for_status(http, waiting, "waiting_for_human")
    assert (await worker.report(task, data={"ok": True}))["status"] == "accepted"


@pytest.mark.parametrize("deep", [DEEP_OBJECTS, DEEP_ARRAYS], ids=["objects", "arrays"])
async def test_grpc_create_refuses_deep_json_as_invalid_argument(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, deep: bytes
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    jobs = job_service_pb2_grpc.JobServiceStub(grpc_channel(orchestrator))
    request = CreateJobRequest(
        api_version="v1",
        endpoint="jobs/echo",
        initial_data=Payload(encoding=JSON_ENCODING, data=deep),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await jobs.CreateJob(request, metadata=(("x-client-token", CLIENT_TOKEN),))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "deeper than" in (refused.value.details() or "")
    assert await orchestrator.engine.storage.count_jobs() == {}
