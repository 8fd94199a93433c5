"""Child blueprints, cookbook recipe 14 (``main_flow`` runs ``text_processor``)
and the ways a child can end: its outcome (``success``, ``failure``,
``cancelled``) picks the parent's transition, and its result lands in the
parent's ``state_history`` as ``sub_job_<child id>_result``."""

from __future__ import annotations

from typing import Any

import pytest

from avtomatika import ActionFactory, JobContext, StateMachineBlueprint
from avtomatika.worker import TaskContext, TaskFailure
from tests.support import RawWorker, create_job, get_job, wait_for, wait_for_status
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores


def text_processor() -> StateMachineBlueprint:
    """Recipe 14's child: no api_endpoint, so only run_blueprint starts it."""
    text_processing_bp = StateMachineBlueprint(name="text_processor")

    @text_processing_bp.handler_for("start", is_start=True)
    async def process(context: JobContext, actions: ActionFactory) -> None:
        text = context.initial_data.get("text", "")
        if not text:
            actions.transition_to("failed")
        else:
            context.state_history["processed_text"] = text.upper()
            actions.transition_to("finished")

    @text_processing_bp.handler_for("finished", is_end=True)
    async def text_processing_finished(context: JobContext, actions: ActionFactory) -> None:
        pass

    @text_processing_bp.handler_for("failed", is_end=True)
    async def text_processing_failed(context: JobContext, actions: ActionFactory) -> None:
        pass

    return text_processing_bp


def main_flow() -> StateMachineBlueprint:
    """Recipe 14's parent."""
    main_pipeline = StateMachineBlueprint(
        name="main_flow", api_version="v1", api_endpoint="jobs/main_flow"
    )

    @main_pipeline.handler_for("start", is_start=True)
    async def parent_start(context: JobContext, actions: ActionFactory) -> None:
        actions.transition_to("process_user_text")

    @main_pipeline.handler_for("process_user_text")
    async def main_handler(context: JobContext, actions: ActionFactory) -> None:
        user_text = context.initial_data.get("raw_text", "")
        actions.run_blueprint(
            blueprint_name="text_processor",
            initial_data={"text": user_text},
            transitions={"success": "final_step", "failure": "sub_job_failed"},
        )

    @main_pipeline.handler_for("final_step")
    async def final_step_handler(context: JobContext, actions: ActionFactory) -> None:
        sub_job_result = None
        for key, value in context.state_history.items():
            if key.startswith("sub_job_") and "outcome" in value:
                sub_job_result = value
                break
        assert sub_job_result is not None
        context.state_history["found"] = sub_job_result["outcome"]
        actions.transition_to("finished")

    @main_pipeline.handler_for("sub_job_failed")
    async def sub_job_failed_handler(context: JobContext, actions: ActionFactory) -> None:
        actions.transition_to("failed")

    @main_pipeline.handler_for("finished", is_end=True)
    @main_pipeline.handler_for("failed", is_end=True)
    async def main_end(context: JobContext, actions: ActionFactory) -> None:
        pass

    return main_pipeline


def child_result(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The parent's one child id and the result it recorded for it."""
    [child_id] = job["child_job_ids"]
    return child_id, job["state_history"][f"sub_job_{child_id}_result"]


async def test_the_child_runs_and_the_parent_gets_its_result(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([text_processor(), main_flow()])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/main_flow", {"raw_text": "abc"})
    job = await wait_for_status(http, job_id, "finished")

    child_id, result = child_result(job)
    assert job["current_state"] == "finished"
    assert job["state_history"]["found"] == "success"
    assert result == {
        "outcome": "success",
        "final_state": "finished",
        "status": "finished",
        "error_message": None,
        "state_history": {"processed_text": "ABC"},
    }
    child = await get_job(http, child_id)
    assert (child["blueprint_name"], child["parent_job_id"]) == ("text_processor", job_id)
    assert child["initial_data"] == {"text": "abc"}


async def test_a_child_ending_in_its_failed_end_state_takes_the_parents_failure_path(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """As in 1.0b13, an end state named ``failed`` fails the job, so recipe
    14's child that ends there reports ``failure``, and the parent takes its
    ``failure`` transition to its own ``failed`` end state."""
    orchestrator = await start_orchestrator([text_processor(), main_flow()])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/main_flow", {"raw_text": ""})
    job = await wait_for_status(http, job_id, "failed")

    child_id, result = child_result(job)
    assert job["current_state"] == "failed"
    assert (result["outcome"], result["final_state"], result["status"]) == (
        "failure",
        "failed",
        "failed",
    )
    assert (await get_job(http, child_id))["status"] == "failed"


def checker() -> StateMachineBlueprint:
    """A child whose start state is not called ``start``; ``mode`` in its
    initial data makes it fail in various ways."""
    bp = StateMachineBlueprint("checker")

    @bp.handler_for("inspect", is_start=True)
    async def inspect(text: str, actions: ActionFactory, mode: str = "work") -> None:
        if mode == "raise":
            raise RuntimeError("the checker crashed")
        if mode == "work":
            actions.dispatch_task("inspect", params={"text": text}, transitions={"success": "ok"})

    @bp.handler_for("ok", is_end=True, outcome="finished")
    async def ok() -> None:
        return None

    return bp


@pytest.mark.parametrize(
    ("raw_text", "mode", "child_status"),
    [
        ("bad input", "work", "failed"),  # the worker says INVALID_INPUT_ERROR
        ("fine", "raise", "quarantined"),  # the child's handler keeps crashing
        ("fine", "idle", "failed"),  # the child's blueprint takes no action
    ],
)
async def test_a_child_failing_in_any_way_resumes_the_parent(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    raw_text: str,
    mode: str,
    child_status: str,
) -> None:
    parent = StateMachineBlueprint("guarded", api_endpoint="jobs/guarded", api_version="v1")

    @parent.handler_for("start", is_start=True)
    async def start(raw_text: str, mode: str, actions: ActionFactory) -> None:
        actions.run_blueprint(
            "checker",
            initial_data={"text": raw_text, "mode": mode},
            transitions={"success": "accepted", "failure": "rejected"},
        )

    @parent.handler_for("accepted", is_end=True, outcome="finished")
    @parent.handler_for("rejected", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([checker(), parent], job_max_retries=0)
    http = http_client(orchestrator)

    async def inspect(params: Params, task: TaskContext) -> Params:
        if params["text"] == "bad input":
            raise TaskFailure.invalid_input("unreadable text")
        return {"clean": True}

    async with serving(orchestrator, {"inspect": inspect}):
        job_id = await create_job(http, "jobs/guarded", {"raw_text": raw_text, "mode": mode})
        job = await wait_for_status(http, job_id, "finished")

    child_id, result = child_result(job)
    assert job["current_state"] == "rejected"
    assert (result["outcome"], result["status"]) == ("failure", child_status)
    assert result["final_state"] == "inspect"
    assert result["error_message"]
    child = await get_job(http, child_id)
    assert child["status"] == child_status


def waiting_parent(**extra: str) -> StateMachineBlueprint:
    """A parent whose child waits for an ``inspect`` worker."""
    parent = StateMachineBlueprint("waiting", api_endpoint="jobs/waiting", api_version="v1")

    @parent.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.run_blueprint(
            "checker",
            initial_data={"text": "slow"},
            transitions={"success": "accepted", "failure": "rejected", **extra},
        )

    @parent.handler_for("accepted", is_end=True, outcome="finished")
    @parent.handler_for("rejected", is_end=True, outcome="finished")
    @parent.handler_for("child_cancelled", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return parent


async def test_cancelling_the_parent_cancels_its_child_and_withdraws_the_task(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([checker(), waiting_parent()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["inspect"])
    job_id = await create_job(http, "jobs/waiting")
    task = await worker.next_task()
    job = await get_job(http, job_id)
    [child_id] = job["child_job_ids"]
    assert task.job_id == child_id

    response = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status == 200
    assert (await response.json())["status"] == "cancellation_request_sent"

    command = (await worker.expect("cancel")).cancel
    assert command.task_id == task.task_id
    assert (await get_job(http, job_id))["status"] == "cancelled"
    assert (await get_job(http, child_id))["status"] == "cancelled"
    ack = (await worker.succeed(task, {"clean": True})).result_ack
    assert (ack.accepted, ack.reason) == (False, "cancelled")


@pytest.mark.parametrize(
    ("extra", "state"),
    [({"cancelled": "child_cancelled"}, "child_cancelled"), ({}, "rejected")],
    ids=["cancelled-transition", "falls-back-to-failure"],
)
async def test_a_cancelled_child_resumes_the_parent(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    extra: dict[str, str],
    state: str,
) -> None:
    orchestrator = await start_orchestrator([checker(), waiting_parent(**extra)])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/waiting")
    job = await wait_for(http, job_id, lambda j: j["status"] == "waiting_for_sub_job")
    [child_id] = job["child_job_ids"]

    response = await http.post(f"/api/v1/jobs/{child_id}/cancel")
    assert response.status == 200

    job = await wait_for_status(http, job_id, "finished")
    _, result = child_result(job)
    assert job["current_state"] == state
    assert (result["outcome"], result["status"]) == ("cancelled", "cancelled")


async def test_an_outcome_the_parent_has_no_transition_for_fails_it(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    parent = StateMachineBlueprint("optimist", api_endpoint="jobs/optimist", api_version="v1")

    @parent.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.run_blueprint(
            "checker", initial_data={"text": "x", "mode": "idle"}, transitions={"success": "done"}
        )

    @parent.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([checker(), parent])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/optimist")
    job = await wait_for_status(http, job_id, "failed")

    child_id, result = child_result(job)
    assert result["outcome"] == "failure"
    assert child_id in job["error"]
    assert "'failure'" in job["error"]
