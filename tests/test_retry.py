"""``POST /api/v1/jobs/{id}/retry`` and ``JobService.RetryJob``: a failed or
quarantined job runs again from the state where it stopped (the state before
a failing end state it ran), as a new attempt in its history; any other
status is refused, and of two retries racing exactly one wins."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from avtomatika import ActionFactory, OrchestratorEngine, StateMachineBlueprint
from avtomatika.v1.task_pb2 import ERROR_CODE_PERMANENT
from tests.support import RawWorker, create_job, get_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.client_api import TRANSPORTS, Api, ApiError, ConnectApi, reaches
from tests.support.orchestrator import (
    OTHER_CLIENT_TOKEN,
    GrpcChannel,
    HttpClient,
    StartOrchestrator,
    with_other_client,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.both_stores


RACE_ROUNDS = 10


def second_try() -> StateMachineBlueprint:
    """``jobs/second_try``: the first run of ``start`` ends in the failing
    end state ``gave_up``; once retried, ``start`` dispatches a ``work``
    task (no transition for a failure: a permanent error quarantines)."""
    bp = StateMachineBlueprint("second_try", api_endpoint="jobs/second_try", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(state_history: dict[str, Any], actions: ActionFactory) -> None:
        if state_history.get("attempted"):
            actions.dispatch_task("work", transitions={"success": "done"})
        else:
            state_history["attempted"] = True  # saved with the step
            actions.transition_to("gave_up")

    @bp.handler_for("gave_up", is_end=True, outcome="failed")
    async def gave_up() -> None:
        return None

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


async def start(start_orchestrator: StartOrchestrator, tmp_path: Path) -> OrchestratorEngine:
    return await start_orchestrator([second_try()], **with_other_client(tmp_path))


async def refused(api: Api, job_id: str, kind: str) -> str:
    with pytest.raises(ApiError) as error:
        await api.retry(job_id)
    assert error.value.kind == kind, error.value
    return error.value.message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_job_that_ran_a_failing_end_state_runs_again_from_the_state_before(
    transport: str,
    start_orchestrator: StartOrchestrator,
    connect_api: ConnectApi,
    tmp_path: Path,
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    api = connect_api(transport, orchestrator)
    job_id = await api.create("jobs/second_try")
    failed = await reaches(api, job_id, "failed")
    assert failed["current_state"] == "gave_up"

    retried = await api.retry(job_id)
    assert retried["id"] == job_id
    assert retried["status"] in ("running", "waiting_for_worker")
    assert retried["current_state"] == "start"
    assert retried["error"] is None
    assert retried["state_history"] == {"attempted": True}  # kept: it restarts where it stopped
    job = await reaches(api, job_id, "waiting_for_worker")
    assert job["current_state"] == "start"

    async def retried_in_history() -> list[str] | None:
        names = await api.history(job_id)
        return names if "job_retried" in names else None

    names = await wait_until(retried_in_history, message="the retry is in the history")
    assert names.index("job_ended") < names.index("job_retried")

    # Running now: a second retry is refused, as for any status but
    # failed, error and quarantined.
    assert "waiting_for_worker" in await refused(api, job_id, "failed_precondition")
    await refused(api, "no-such-job", "not_found")
    await refused(api.as_client(OTHER_CLIENT_TOKEN), job_id, "not_found")


async def test_a_quarantined_job_runs_its_task_again_and_can_finish(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    tmp_path: Path,
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/second_try")
    await wait_for_status(http, job_id, "failed")
    assert (await retry(http, job_id))[0] == 200
    await wait_for_status(http, job_id, "waiting_for_worker")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.grpc_port}") as channel:
        worker = RawWorker(channel, "w-retry")
        await worker.hello(["work"])
        first = await worker.next_task()
        await worker.fail(first, ERROR_CODE_PERMANENT, "disk full")
        quarantined = await wait_for_status(http, job_id, "quarantined")
        assert "disk full" in quarantined["error"]

        status, body = await retry(http, job_id)
        assert status == 200, body
        assert (body["status"], body["error"]) == ("running", None)
        await worker.credit()
        second = await worker.next_task()
        assert second.task_id != first.task_id  # a new attempt, a new task
        await worker.succeed(second, {"ok": True})
        job = await wait_for_status(http, job_id, "finished")
        await worker.close()
    assert job["result"] == {"attempted": True, "ok": True}
    history = await (await http.get(f"/api/v1/jobs/{job_id}/history")).json()
    retries = [event for event in history if event["type"] == "job_retried"]
    assert [event["details"]["previous_status"] for event in retries] == ["failed", "quarantined"]
    assert retries[1]["details"]["previous_error"].endswith("disk full")
    assert retries[1]["state"] == "start"


async def test_a_job_timed_out_by_its_result_timeout_gets_the_whole_of_it_again(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    response = await http.post(
        "/api/v1/jobs/echo", json={"initial_data": {"n": 1}, "result_timeout": 1.5}
    )
    job_id = (await response.json())["job_id"]
    failed = await wait_for_status(http, job_id, "failed")  # no worker came in time
    assert "result timeout" in failed["error"]
    worker = RawWorker(grpc_channel(orchestrator), "w-late")
    await worker.hello(["echo"])
    # The job's result_timeout counts from its creation, long past: once
    # retried, from the retry, or the new task would be late at once.
    assert (await retry(http, job_id))[0] == 200
    task = await worker.next_task()
    ack = await worker.succeed(task, {"done": True})
    assert ack.result_ack.accepted, ack
    job = await wait_for_status(http, job_id, "finished")
    assert job["result"] == {"done": True}
    await worker.close()


async def retry(http: aiohttp.ClientSession, job_id: str) -> tuple[int, dict[str, Any]]:
    response = await http.post(f"/api/v1/jobs/{job_id}/retry", json={})
    body = await response.json()
    assert isinstance(body, dict)
    return response.status, body


async def test_bad_retries_are_refused_with_their_status(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/second_try")
    await wait_for_status(http, job_id, "failed")
    response = await http.post(f"/api/v1/jobs/{job_id}/retry", data=b"[1]")
    assert (response.status, (await response.json())["error"]) == (
        400,
        "the request body must be a JSON object",
    )
    assert (await retry(http, "no-such-job"))[0] == 404
    assert (await retry(http_client(orchestrator, OTHER_CLIENT_TOKEN), job_id))[0] == 404
    assert (await retry(http_client(orchestrator, "wrong-token"), job_id))[0] == 401
    assert (await get_job(http, job_id))["status"] == "failed"  # none of them touched it
    # A cancelled job stays cancelled: cancelled is not a failure.
    assert (await retry(http, job_id))[0] == 200
    assert (await http.post(f"/api/v1/jobs/{job_id}/cancel")).status == 200
    status, body = await retry(http, job_id)
    assert (status, body) == (409, {"error": body["error"]})
    assert "cancelled" in body["error"]


async def test_of_two_retries_racing_exactly_one_wins(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    http = http_client(orchestrator)
    for _ in range(RACE_ROUNDS):
        job_id = await create_job(http, "jobs/second_try")
        await wait_for_status(http, job_id, "failed")
        answers = await asyncio.gather(retry(http, job_id), retry(http, job_id))
        assert sorted(status for status, _ in answers) == [200, 409], answers
        await wait_for_status(http, job_id, "waiting_for_worker")


async def test_a_retry_racing_a_cancel_leaves_one_consistent_outcome(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    http = http_client(orchestrator)
    outcomes = set()
    for _ in range(RACE_ROUNDS):
        job_id = await create_job(http, "jobs/second_try")
        await wait_for_status(http, job_id, "failed")
        (retried, _), cancel = await asyncio.gather(
            retry(http, job_id), http.post(f"/api/v1/jobs/{job_id}/cancel")
        )
        # Cancelling a failed job is refused; once retried it is cancellable.
        # The retry wins either way, and the cancel counts only if it came after.
        assert retried == 200
        assert cancel.status in (200, 409)
        if cancel.status == 200:
            job = await wait_for_status(http, job_id, "cancelled")
        else:
            job = await wait_for_status(http, job_id, "waiting_for_worker")
        outcomes.add(job["status"])
        assert job["current_state"] == "start"
    assert outcomes <= {"cancelled", "waiting_for_worker"}
