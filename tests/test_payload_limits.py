"""One payload limit everywhere (issue 17, finding 1): ``MAX_PAYLOAD_BYTES``
bounds initial data at creation (413 JSON, RESOURCE_EXHAUSTED over gRPC,
naming the limit), task params at dispatch and results; the gRPC message
limits of the server, the worker SDK and the client follow from it. A task
too big for its worker's channel fails its job saying so, instead of
tearing the worker's stream down on every attempt, and the worker goes on
with other jobs. Every worker here is the real ``avtomatika.worker`` SDK."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.client import Client, RateLimited
from avtomatika.payload import DEFAULT_MAX_PAYLOAD_BYTES, message_limit
from avtomatika.worker import TaskContext
from tests.support import CLIENT_TOKEN, create_job, wait_for_status, wait_for_terminal
from tests.support.blueprints import echo_blueprint
from tests.support.jobs import create_big_job, post_big_job
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores

FIVE_MB = 5 * 1000 * 1000
RAISED = 8 * 1024 * 1024


def blob(size: int) -> dict[str, str]:
    """Initial data whose JSON is about ``size`` bytes."""
    return {"blob": "x" * size}


async def echo(params: Params, task: TaskContext) -> Params:
    return {"length": len(params.get("blob", ""))}


async def test_a_5mb_job_is_refused_at_creation_over_rest_and_grpc_naming_the_limit(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """Finding 1: with the default limits a 5 MB job never reaches a worker:
    413 over REST, RESOURCE_EXHAUSTED over gRPC, both naming MAX_PAYLOAD_BYTES,
    and nothing is stored."""
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    async with serving(orchestrator, {"echo": echo}):
        response = await post_big_job(http, "jobs/echo", blob(FIVE_MB))
        assert response.status == 413
        body: dict[str, Any] = await response.json()
        assert "MAX_PAYLOAD_BYTES" in body["error"]
        assert str(DEFAULT_MAX_PAYLOAD_BYTES) in body["error"]

        async with Client(f"127.0.0.1:{orchestrator.grpc_port}", CLIENT_TOKEN) as client:
            with pytest.raises(RateLimited, match="MAX_PAYLOAD_BYTES") as refused:
                await client.create_job("jobs/echo", blob(FIVE_MB))
            assert refused.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
            # A job at the limit still goes, and runs on the SDK worker.
            job_id = await client.create_job("jobs/echo", blob(DEFAULT_MAX_PAYLOAD_BYTES - 20))
        finished = await wait_for_status(http, job_id, "finished")
        assert finished["state_history"]["length"] == DEFAULT_MAX_PAYLOAD_BYTES - 20
    assert sum((await orchestrator.engine.storage.count_jobs()).values()) == 1


async def test_a_body_beyond_the_message_limit_is_413_json_naming_the_size(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """A body too big to read at all is refused before it is read, as JSON."""
    orchestrator = await start_orchestrator([echo_blueprint()], max_payload_bytes=1000)
    http = http_client(orchestrator)
    response = await post_big_job(http, "jobs/echo", blob(message_limit(1000) + 10))
    assert response.status == 413
    assert response.content_type == "application/json"
    assert str(message_limit(1000)) in (await response.json())["error"]


async def test_a_5mb_job_runs_on_an_sdk_worker_when_the_limits_are_raised_together(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """Finding 1: raising MAX_PAYLOAD_BYTES and the SDK's limit together
    lets a 5 MB task through the stream both ways (the result echoes it)."""
    orchestrator = await start_orchestrator([echo_blueprint()], max_payload_bytes=RAISED)
    http = http_client(orchestrator)

    async def echo_all(params: Params, task: TaskContext) -> Params:
        return params

    async with serving(orchestrator, {"echo": echo_all}, max_message_bytes=message_limit(RAISED)):
        job_id = await create_big_job(http, "jobs/echo", blob(FIVE_MB))
        finished = await wait_for_status(http, job_id, "finished")
    assert len(finished["state_history"]["blob"]) == FIVE_MB


async def test_a_task_too_big_for_the_worker_fails_its_job_and_the_worker_goes_on(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """Finding 1: the server accepts 5 MB but the worker's channel only its
    default 5 MiB minus nothing to spare: the task is never sent (it would end
    the stream on every attempt and the job would end quarantined with "the
    assignment was lost"); the job fails naming the worker's limit, and the
    next job on the same worker runs."""
    orchestrator = await start_orchestrator([echo_blueprint()], max_payload_bytes=RAISED)
    http = http_client(orchestrator)
    async with serving(orchestrator, {"echo": echo}) as worker:
        big = await create_big_job(http, "jobs/echo", blob(6 * 1000 * 1000))
        failed = await wait_for_terminal(http, big)
        assert failed["status"] == "failed", failed
        assert "could not be delivered" in failed["error"]
        assert str(message_limit()) in failed["error"]
        small = await create_job(http, "jobs/echo", blob(10))
        done = await wait_for_status(http, small, "finished")
        assert done["state_history"]["length"] == 10
        listed = orchestrator.engine.workers.list()
        assert worker.worker_id in {w.registration.worker_id for w in listed}


async def test_task_params_over_the_limit_fail_the_job_at_dispatch(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """A blueprint that builds params bigger than MAX_PAYLOAD_BYTES from a
    small input: the job fails at once, naming the limit and the task."""
    bp = StateMachineBlueprint("grow", api_endpoint="/jobs/grow", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task("echo", params=blob(5000), transitions={"success": "done"})

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([bp], max_payload_bytes=1000)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/grow")
    failed = await wait_for_terminal(http, job_id)
    assert failed["status"] == "failed"
    assert "MAX_PAYLOAD_BYTES (1000 bytes)" in failed["error"]
    assert "'echo'" in failed["error"]


async def test_a_result_over_the_limit_fails_the_job_and_the_stream_stays(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """An SDK handler returning more than the server keeps: the SDK learns
    the limit from the Welcome and reports a failure naming it; the next
    job on the same worker runs."""
    orchestrator = await start_orchestrator([echo_blueprint()], max_payload_bytes=10_000)
    http = http_client(orchestrator)

    async def swell(params: Params, task: TaskContext) -> Params:
        return blob(50_000) if params.get("swell") else {"ok": True}

    async with serving(orchestrator, {"echo": swell}):
        big = await create_job(http, "jobs/echo", {"swell": True})
        failed = await wait_for_terminal(http, big)
        assert failed["status"] == "failed", failed
        assert "MAX_PAYLOAD_BYTES" in failed["error"]
        small = await create_job(http, "jobs/echo", {})
        await wait_for_status(http, small, "finished")


async def test_the_settings_refuse_a_limit_below_one(
    start_orchestrator: StartOrchestrator,
) -> None:
    with pytest.raises(Exception, match="MAX_PAYLOAD_BYTES must be >= 1"):
        await start_orchestrator([], max_payload_bytes=0)
