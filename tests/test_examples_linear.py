"""Linear flows from the 1.0b13 docs, run through REST and an SDK worker:
the README quick start (``my_first_blueprint``) and cookbook recipe 1
(``simple_linear_flow``)."""

from __future__ import annotations

from typing import Any

import pytest

from avtomatika import ActionFactory, JobContext, StateMachineBlueprint
from avtomatika.worker import TaskContext, TaskFailure
from tests.support import create_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores


def quick_start() -> StateMachineBlueprint:
    """README "Quick Start", as printed (minus the prints)."""
    my_blueprint = StateMachineBlueprint(
        name="my_first_blueprint", api_version="v1", api_endpoint="/jobs/my_flow"
    )

    @my_blueprint.handler_for("start", is_start=True)
    async def start_handler(
        job_id: str, initial_data: dict[str, Any], actions: ActionFactory
    ) -> None:
        actions.transition_to("end")

    @my_blueprint.handler_for("end", is_end=True)
    async def end_handler(context: JobContext) -> None:
        context.state_history["completed"] = context.job_id

    return my_blueprint


def simple_linear_flow() -> StateMachineBlueprint:
    """Cookbook recipe 1: start -> step_A (a worker task) -> step_B -> finished."""
    simple_pipeline = StateMachineBlueprint(
        name="simple_linear_flow", api_version="v1", api_endpoint="jobs/simple_flow"
    )

    @simple_pipeline.handler_for("start", is_start=True)
    async def start_handler(context: JobContext, actions: ActionFactory) -> None:
        actions.transition_to("step_A")

    @simple_pipeline.handler_for("step_A")
    async def handler_a(context: JobContext, actions: ActionFactory) -> None:
        actions.dispatch_task(
            task_type="simple_task",
            params=context.initial_data,
            transitions={"success": "step_B", "failure": "failed"},
        )

    @simple_pipeline.handler_for("step_B")
    async def handler_b(context: JobContext, actions: ActionFactory) -> None:
        context.state_history["visited_step_b"] = True
        actions.transition_to("finished")

    @simple_pipeline.handler_for("finished", is_end=True)
    async def finished_handler(context: JobContext, actions: ActionFactory) -> None:
        return None

    @simple_pipeline.handler_for("failed", is_end=True)
    async def failed_handler(context: JobContext, actions: ActionFactory) -> None:
        return None

    return simple_pipeline


async def test_quick_start_reaches_its_end_state_and_fails_as_in_1_0b13(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([quick_start()])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/my_flow", {"video": "cat.mp4"})
    job = await wait_for_status(http, job_id, "failed")

    # The end state is called "end", not "finished": as in 1.0b13, reaching
    # it fails the job (its handler ran; the job carries no error).
    assert job["current_state"] == "end"
    assert job["error"] is None
    assert job["state_history"] == {"completed": job_id}
    assert job["initial_data"] == {"video": "cat.mp4"}


async def test_simple_linear_flow_runs_its_worker_step(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([simple_linear_flow()])
    http = http_client(orchestrator)
    seen: list[Params] = []

    async def simple_task(params: Params, task: TaskContext) -> Params:
        seen.append(params)
        return {"greeting": f"hello {params['name']}"}

    async with serving(orchestrator, {"simple_task": simple_task}):
        job_id = await create_job(http, "jobs/simple_flow", {"name": "Ada"})
        job = await wait_for_status(http, job_id, "finished")

    assert seen == [{"name": "Ada"}]
    assert job["current_state"] == "finished"
    assert job["state_history"] == {"greeting": "hello Ada", "visited_step_b": True}


async def test_simple_linear_flow_takes_its_failure_transition(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([simple_linear_flow()])
    http = http_client(orchestrator)

    async def simple_task(params: Params, task: TaskContext) -> Params:
        raise TaskFailure.permanent("the input is cursed")

    async with serving(orchestrator, {"simple_task": simple_task}):
        job_id = await create_job(http, "jobs/simple_flow", {"name": "Ada"})
        job = await wait_for_status(http, job_id, "failed")

    # The blueprint handled the failure itself: its "failed" end state ran,
    # and an end state named "failed" fails the job (1.0b13's rule).
    assert job["current_state"] == "failed"
    assert job["error"] is None
    assert "visited_step_b" not in job["state_history"]
