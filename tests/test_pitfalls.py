"""Regressions for the reference system's blueprint pitfalls (DESIGN §9, and
the 1.0b13 bugs our blueprint API fixes), one test each, through REST and
the gRPC worker stream.

Pitfalls of §9 tested elsewhere: secrets in job records
(``test_rest_errors``), a memory backend dropping concurrent jobs
(``test_concurrency``), equal priorities out of FIFO order
(``test_worker_stream``), results from a worker without the lease or for an
earlier attempt (``test_result_guards``).
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from avtomatika import ActionFactory, JobContext, OrchestratorEngine, StateMachineBlueprint
from avtomatika.v1.task_pb2 import ErrorCode, TaskResult, TaskResultStatus
from tests.support import RawWorker, create_job, get_job, success, wait_for_status
from tests.support.blueprints import fan_out_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


def single_task(
    name: str, transitions: dict[str, str], **task_options: Any
) -> StateMachineBlueprint:
    """start -> one ``work`` task; every transition target is an end state."""
    bp = StateMachineBlueprint(name, api_endpoint=f"jobs/{name}", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task("work", transitions=transitions, **task_options)

    async def end() -> None:
        return None

    for state in set(transitions.values()):
        bp.handler_for(state, is_end=True, outcome="finished")(end)
    return bp


async def approve(
    orchestrator: OrchestratorEngine, job_id: str, decision: str
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{orchestrator.rest_port}") as public:
        response = await public.post(
            f"/_public/webhooks/approval/{job_id}", json={"decision": decision}
        )
        return response.status, await response.json()


async def test_the_approval_webhook_cannot_push_a_job_waiting_for_a_worker(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    bp = single_task("guarded", {"success": "done", "approved": "shortcut"})
    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/guarded")
    await wait_for_status(http, job_id, "waiting_for_worker")

    code, body = await approve(orchestrator, job_id, "approved")

    assert code == 409, body
    assert "waiting_for_worker" in body["error"]
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["work"])
    assert (await worker.succeed(await worker.next_task(), None)).result_ack.accepted
    job = await wait_for_status(http, job_id, "finished")
    assert job["current_state"] == "done"


async def test_no_other_worker_can_complete_a_branch(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    bp = StateMachineBlueprint("pair", api_endpoint="jobs/pair", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_parallel(
            tasks=[{"type": "work", "params": {"n": n}} for n in range(2)], aggregate_into="join"
        )

    @bp.aggregator_for("join")
    async def join(aggregation_results: dict[str, Any], state_history: dict[str, Any],
                   actions: ActionFactory) -> None:  # fmt: skip
        state_history["by"] = sorted(r["worker_id"] for r in aggregation_results.values())
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    first = RawWorker(grpc_channel(orchestrator), "first")
    second = RawWorker(grpc_channel(orchestrator), "second")
    await first.hello(["work"])
    await second.hello(["work"])
    job_id = await create_job(http, "jobs/pair")
    mine, theirs = await first.next_task(), await second.next_task()

    # "second" reports "first"'s branch as well as its own.
    forged = (await second.succeed(mine, {"forged": True})).result_ack
    assert (forged.accepted, forged.reason) == (False, "stale")
    assert (await second.succeed(theirs, None)).result_ack.accepted
    assert (await get_job(http, job_id))["status"] == "waiting_for_parallel_tasks"
    assert (await first.succeed(mine, None)).result_ack.accepted

    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"by": ["first", "second"]}


async def test_a_fan_out_completes_whatever_order_its_branches_end_in(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    bp = fan_out_blueprint(5)

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["work"], credits=5)
    job_id = await create_job(http, "jobs/fan")
    tasks = [await worker.next_task() for _ in range(5)]

    # Last dispatched first: the reference only ever accepted the last one.
    for task in reversed(tasks):
        assert (await worker.succeed(task, RawWorker.params(task))).result_ack.accepted

    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"ns": [0, 1, 2, 3, 4]}


async def test_a_child_failed_by_its_worker_resumes_the_parent(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    child = single_task("child", {"success": "done"})
    parent = StateMachineBlueprint("parent", api_endpoint="jobs/parent", api_version="v1")

    @parent.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.run_blueprint(
            "child", initial_data={}, transitions={"success": "done", "failure": "recovered"}
        )

    @parent.handler_for("done", is_end=True, outcome="finished")
    @parent.handler_for("recovered", is_end=True, outcome="finished")
    async def end() -> None:
        return None

    orchestrator = await start_orchestrator([child, parent])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["work"])
    job_id = await create_job(http, "jobs/parent")

    task = await worker.next_task()
    await worker.fail(task, ErrorCode.ERROR_CODE_INVALID_INPUT, "no such file")

    job = await wait_for_status(http, job_id, "finished")
    assert job["current_state"] == "recovered"
    result = job["state_history"][f"sub_job_{task.job_id}_result"]
    assert (result["outcome"], result["status"]) == ("failure", "failed")
    assert "no such file" in result["error_message"]


async def test_a_cancelled_job_stays_cancelled_whatever_its_worker_reports(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    """Cookbook recipe 10's blueprint has a ``cancelled`` transition; the
    client's cancel is final all the same."""
    transitions = {
        "success": "finished_successfully",
        "failure": "task_failed",
        "cancelled": "task_cancelled",
    }
    orchestrator = await start_orchestrator([single_task("cancellable", transitions)])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["work"])
    job_id = await create_job(http, "jobs/cancellable")
    task = await worker.next_task()

    response = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert (await response.json()) == {"status": "cancellation_request_sent"}
    await worker.expect("cancel")

    cancelled = TaskResult(
        task_id=task.task_id,
        job_id=job_id,
        status=TaskResultStatus.TASK_RESULT_STATUS_CANCELLED,
    )
    for result in (cancelled, success(task, {"late": True})):
        ack = (await worker.report(result)).result_ack
        assert (ack.accepted, ack.reason) == (False, "cancelled")
    job = await get_job(http, job_id)
    assert (job["status"], job["current_state"]) == ("cancelled", "start")
    assert job["state_history"] == {}


async def test_an_end_state_with_any_name_finishes_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    bp = single_task("named", {"success": "published"})
    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["work"])
    job_id = await create_job(http, "jobs/named")

    await worker.succeed(await worker.next_task(), None)

    job = await wait_for_status(http, job_id, "finished")
    assert job["current_state"] == "published"
    assert job["error"] is None


async def test_the_failure_transition_is_followed(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    bp = single_task("fallible", {"success": "done", "failure": "handle_failure"})
    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["work"])
    job_id = await create_job(http, "jobs/fallible")

    await worker.fail(await worker.next_task(), ErrorCode.ERROR_CODE_PERMANENT)

    job = await wait_for_status(http, job_id, "finished")
    assert job["current_state"] == "handle_failure"


async def test_a_task_waits_for_a_worker_instead_of_failing_at_once(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([single_task("patient", {"success": "done"})])
    http = http_client(orchestrator)
    response = await http.post(
        "/api/v1/jobs/patient", json={"initial_data": {}, "dispatch_timeout": 3600}
    )
    job_id = (await response.json())["job_id"]
    job = await wait_for_status(http, job_id, "waiting_for_worker")
    assert (job["retry_count"], job["error"]) == (0, None)

    # No worker had the skill when the task was dispatched; one comes later.
    worker = RawWorker(grpc_channel(orchestrator), "late-comer")
    await worker.hello(["work"])
    await worker.succeed(await worker.next_task(), None)

    await wait_for_status(http, job_id, "finished")


async def test_deadlines_are_wall_clock_epoch_milliseconds(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    """A deadline another host can read: epoch ms, not a monotonic reading."""
    bp = single_task("timed", {"success": "done"}, result_timeout_seconds=3600)
    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["work"])

    before = int(time.time() * 1000)
    await create_job(http, "jobs/timed")
    task = await worker.next_task()
    after = int(time.time() * 1000)

    assert before <= task.result_deadline_ms - 3_600_000 <= after


async def test_context_can_be_asked_for_with_other_names(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("mixed", api_endpoint="jobs/mixed", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(job_id: str, context: JobContext, user: str, actions: ActionFactory) -> None:
        context.state_history["seen"] = [job_id == context.job_id, user]
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/mixed", {"user": "ada"})
    job = await wait_for_status(http, job_id, "finished")

    assert job["state_history"] == {"seen": [True, "ada"]}


async def test_a_blueprint_that_cycles_forever_is_stopped(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("loop", api_endpoint="jobs/loop", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("ping")

    @bp.handler_for("ping")
    async def ping(state_history: dict[str, Any], actions: ActionFactory) -> None:
        state_history["pings"] = state_history.get("pings", 0) + 1
        actions.transition_to("pong")

    @bp.handler_for("pong")
    async def pong(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        if initial_data.get("stop"):
            actions.transition_to("done")
        else:
            actions.transition_to("ping")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([bp], max_transitions_per_job=10)
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/loop")
    job = await wait_for_status(http, job_id, "failed")

    assert "MAX_TRANSITIONS_PER_JOB" in job["error"]
    assert "'loop'" in job["error"]
    assert job["state_history"]["pings"] <= 10
