"""Fan-out/fan-in from the 1.0b13 docs: the README's ``process_files`` (tasks
keyed ``task_type``) and cookbook recipe 3's aggregation of branch results by
status, with several branches, through REST and SDK workers.

Their end states are named ``processing_complete`` and ``end``, so a job that
gets there ends ``failed``, as 1.0b13 ends it (only an end state named
``finished`` finishes a job)."""

from __future__ import annotations

from typing import Any

import pytest

from avtomatika import ActionFactory, JobContext, StateMachineBlueprint
from avtomatika.worker import TaskContext, TaskFailure
from tests.support import create_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores


def file_blueprint() -> StateMachineBlueprint:
    """README "Parallel Execution and Aggregation", its stray ``)`` removed."""
    my_blueprint = StateMachineBlueprint("files", api_endpoint="jobs/files", api_version="v1")

    @my_blueprint.handler_for("process_files", is_start=True)
    async def fan_out_handler(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        tasks_to_dispatch = [
            {"task_type": "file_analysis", "params": {"file": file}}
            for file in initial_data.get("files", [])
        ]
        actions.dispatch_parallel(tasks=tasks_to_dispatch, aggregate_into="aggregate_results")

    @my_blueprint.aggregator_for("aggregate_results")
    async def aggregator_handler(
        aggregation_results: dict[str, Any], state_history: dict[str, Any], actions: ActionFactory
    ) -> None:
        summary = [res.get("data") for res in aggregation_results.values()]
        state_history["summary"] = summary
        state_history["results"] = aggregation_results
        actions.transition_to("processing_complete")

    @my_blueprint.handler_for("processing_complete", is_end=True)
    async def complete() -> None:
        return None

    return my_blueprint


async def analyse(params: Params, task: TaskContext) -> Params:
    return {"file": params["file"], "size": len(params["file"])}


async def test_every_branch_is_aggregated(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([file_blueprint()])
    http = http_client(orchestrator)
    files = [f"part-{n}.csv" for n in range(3)]

    async with serving(orchestrator, {"file_analysis": analyse}, max_concurrency=3):
        job_id = await create_job(http, "jobs/files", {"files": files})
        job = await wait_for_status(http, job_id, "failed")

    history = job["state_history"]
    assert job["current_state"] == "processing_complete"
    assert sorted(history["summary"], key=lambda d: d["file"]) == [
        {"file": f, "size": len(f)} for f in files
    ]
    # Branch data reaches the aggregator only, not state_history.
    assert set(history) == {"summary", "results"}
    for task_id, result in history["results"].items():
        assert result["task_id"] == task_id
        assert result["job_id"] == job_id
        assert result["worker_id"] == "sdk-1"
        assert (result["status"], result["error"]) == ("success", None)


async def test_many_branches_over_several_workers_all_arrive(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([file_blueprint()])
    http = http_client(orchestrator)
    files = [f"chunk-{n:02}" for n in range(40)]

    async with (
        serving(orchestrator, {"file_analysis": analyse}, worker_id="a", max_concurrency=4),
        serving(orchestrator, {"file_analysis": analyse}, worker_id="b", max_concurrency=4),
    ):
        job_id = await create_job(http, "jobs/files", {"files": files})
        job = await wait_for_status(http, job_id, "failed")

    summary = job["state_history"]["summary"]
    assert sorted(item["file"] for item in summary) == files


async def test_no_branches_go_straight_to_the_aggregator(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([file_blueprint()])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/files", {"files": []})
    job = await wait_for_status(http, job_id, "failed")

    assert job["state_history"] == {"summary": [], "results": {}}


def parallel_flow_example() -> StateMachineBlueprint:
    """Cookbook recipe 3, with its two ``dispatch_task`` calls written as the
    one ``dispatch_parallel`` they mean."""
    parallel_bp = StateMachineBlueprint(
        name="parallel_flow_example", api_version="v1", api_endpoint="/jobs/parallel_example"
    )

    @parallel_bp.handler_for("start", is_start=True)
    async def start_parallel_tasks(context: JobContext, actions: ActionFactory) -> None:
        actions.dispatch_parallel(
            tasks=[
                {"type": "task_A", "params": {"input": "data_for_A"}},
                {"type": "task_B", "params": {"input": "data_for_B"}},
                {"type": "task_B", "params": {"input": "bad_data_for_B"}},
            ],
            aggregate_into="aggregate_results",
        )

    @parallel_bp.aggregator_for("aggregate_results")
    async def aggregate_results_handler(context: JobContext, actions: ActionFactory) -> None:
        assert context.aggregation_results is not None
        processed_results = {}
        failed = []
        for task_id, result in context.aggregation_results.items():
            if result.get("status") == "success":
                processed_results[task_id] = result.get("data")
            else:
                failed.append(result["error"])
        context.state_history["aggregated_data"] = processed_results
        context.state_history["failed"] = failed
        actions.transition_to("end")

    @parallel_bp.handler_for("end", is_end=True)
    async def end_flow(context: JobContext, actions: ActionFactory) -> None:
        return None

    return parallel_bp


async def test_failed_branches_are_aggregated_with_their_error(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([parallel_flow_example()])
    http = http_client(orchestrator)
    attempts: dict[str, int] = {}

    async def task_a(params: Params, task: TaskContext) -> Params:
        # Transient failures of a branch are retried like any task's.
        attempts[params["input"]] = task.attempt
        if task.attempt == 1:
            raise TaskFailure.transient("warming up")
        return {"a": params["input"]}

    async def task_b(params: Params, task: TaskContext) -> Params:
        attempts[params["input"]] = task.attempt
        if params["input"].startswith("bad"):
            raise TaskFailure.permanent("unreadable", details={"input": params["input"]})
        return {"b": params["input"]}

    async with serving(orchestrator, {"task_A": task_a, "task_B": task_b}, max_concurrency=3):
        job_id = await create_job(http, "jobs/parallel_example")
        job = await wait_for_status(http, job_id, "failed")

    history = job["state_history"]
    assert sorted(history["aggregated_data"].values(), key=str) == [
        {"a": "data_for_A"},
        {"b": "data_for_B"},
    ]
    assert history["failed"] == [
        {
            "code": "PERMANENT_ERROR",
            "message": "unreadable",
            "details": {"input": "bad_data_for_B"},
        }
    ]
    assert attempts == {"data_for_A": 2, "data_for_B": 1, "bad_data_for_B": 1}


async def test_recipe_3_as_printed_fails_the_job_saying_why(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """Recipe 3 calls ``dispatch_task`` twice in one handler; a handler takes
    one action, so the job fails naming the second call rather than running
    half of the fan-out."""
    parallel_bp = StateMachineBlueprint(
        name="parallel_as_printed", api_version="v1", api_endpoint="/jobs/parallel_as_printed"
    )

    @parallel_bp.handler_for("start", is_start=True)
    async def start_parallel_tasks(context: JobContext, actions: ActionFactory) -> None:
        actions.dispatch_task(
            task_type="task_A",
            params={"input": "data_for_A"},
            transitions={"success": "aggregate_results", "failure": "failed"},
        )
        actions.dispatch_task(
            task_type="task_B",
            params={"input": "data_for_B"},
            transitions={"success": "aggregate_results", "failure": "failed"},
        )

    @parallel_bp.aggregator_for("aggregate_results")
    async def aggregate(actions: ActionFactory) -> None:
        actions.transition_to("end")

    @parallel_bp.handler_for("end", is_end=True)
    @parallel_bp.handler_for("failed", is_end=True)
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([parallel_bp])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/parallel_as_printed")
    job = await wait_for_status(http, job_id, "failed")

    assert "one action" in job["error"]
    assert "task_A" in job["error"]
    assert await orchestrator.engine.storage.queue_depths() == {}
