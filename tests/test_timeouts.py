"""Task deadlines: a task no worker takes before its dispatch timeout, or
whose result does not come before its result timeout, fails the job with a
message naming the deadline, unless the blueprint has a ``timeout``
transition. Timeouts come from the create-job body (for the whole job) or
from ``dispatch_task`` (for one task)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.worker import TaskContext
from tests.support import RawWorker, wait_for_status
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores


SHORT = 0.2
"""Seconds: a deadline that passes quickly. Nothing asserts how quickly."""


def render_blueprint(**task_options: Any) -> StateMachineBlueprint:
    """start -> a ``render`` task -> done; ``timeout`` -> gave_up."""
    bp = StateMachineBlueprint("render", api_endpoint="jobs/render", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        if initial_data.get("handle_timeout"):
            actions.dispatch_task(
                "render", transitions={"success": "done", "timeout": "gave_up"}, **task_options
            )
        else:
            actions.dispatch_task("render", transitions={"success": "done"}, **task_options)

    @bp.handler_for("done", is_end=True, outcome="finished")
    @bp.handler_for("gave_up", is_end=True, outcome="finished")
    async def end() -> None:
        return None

    return bp


async def create(http: aiohttp.ClientSession, **body: Any) -> str:
    response = await http.post("/api/v1/jobs/render", json=body)
    answer = await response.json()
    assert response.status == 202, answer
    job_id: str = answer["job_id"]
    return job_id


@pytest.mark.parametrize(
    ("task_options", "body"),
    [
        ({}, {"dispatch_timeout": SHORT}),
        ({"dispatch_timeout_seconds": SHORT}, {}),
        # The task's own timeout overrides the job's.
        ({"dispatch_timeout_seconds": SHORT}, {"dispatch_timeout": 3600}),
    ],
    ids=["job", "task", "task-overrides-job"],
)
async def test_a_task_no_worker_takes_fails_at_its_dispatch_timeout(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    task_options: dict[str, Any],
    body: dict[str, Any],
) -> None:
    orchestrator = await start_orchestrator([render_blueprint(**task_options)])
    http = http_client(orchestrator)

    job_id = await create(http, initial_data={}, **body)
    job = await wait_for_status(http, job_id, "failed")

    assert "dispatch timeout" in job["error"]
    assert "'render'" in job["error"]
    assert job["current_state"] == "start"
    # The task left the queue: a worker arriving now gets nothing.
    assert await orchestrator.engine.storage.queue_depths() == {}


async def test_a_timeout_transition_is_taken_instead_of_failing(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([render_blueprint(dispatch_timeout_seconds=SHORT)])
    http = http_client(orchestrator)

    job_id = await create(http, initial_data={"handle_timeout": True})
    job = await wait_for_status(http, job_id, "finished")

    assert job["current_state"] == "gave_up"
    assert job["error"] is None


@pytest.mark.parametrize(
    ("task_options", "body"),
    [
        ({"result_timeout_seconds": SHORT}, {}),
        ({"timeout_seconds": SHORT}, {}),
        ({}, {"result_timeout": SHORT}),
    ],
    ids=["result_timeout_seconds", "timeout_seconds", "job-result-timeout"],
)
async def test_a_result_that_does_not_come_in_time_fails_the_job_and_cancels_the_task(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    task_options: dict[str, Any],
    body: dict[str, Any],
) -> None:
    orchestrator = await start_orchestrator([render_blueprint(**task_options)])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["render"])

    job_id = await create(http, initial_data={}, **body)
    task = await worker.next_task()
    assert task.result_deadline_ms > 0

    command = (await worker.expect("cancel")).cancel
    job = await wait_for_status(http, job_id, "failed")
    assert command.task_id == task.task_id
    assert "result timeout" in job["error"]

    ack = (await worker.succeed(task, {"too": "late"})).result_ack
    assert not ack.accepted
    job = await wait_for_status(http, job_id, "failed")
    assert job["state_history"] == {}


def fan_out_blueprint() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("fan_out", api_endpoint="jobs/fan_out", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_parallel(
            tasks=[
                {"type": "fast", "params": {"n": 1}},
                {"type": "missing", "params": {"n": 2}, "dispatch_timeout_seconds": SHORT},
            ],
            aggregate_into="collect",
        )

    @bp.aggregator_for("collect")
    async def collect(
        aggregation_results: dict[str, Any], state_history: dict[str, Any], actions: ActionFactory
    ) -> None:
        state_history["statuses"] = sorted(r["status"] for r in aggregation_results.values())
        state_history["errors"] = [
            r["error"]["code"] for r in aggregation_results.values() if r["error"]
        ]
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


async def test_a_branch_that_times_out_is_aggregated_as_timed_out(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([fan_out_blueprint()])
    http = http_client(orchestrator)

    async def fast(params: Params, task: TaskContext) -> Params:
        return {"n": params["n"]}

    async with serving(orchestrator, {"fast": fast}):
        response = await http.post("/api/v1/jobs/fan_out", json={"initial_data": {}})
        job_id = (await response.json())["job_id"]
        job = await wait_for_status(http, job_id, "finished")

    assert job["state_history"] == {"statuses": ["success", "timeout"], "errors": ["TIMEOUT"]}
