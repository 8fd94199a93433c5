"""``dispatch_task`` examples from the 1.0b13 docs: the README's
``transcode_video`` with a custom status, recipe 7's priorities and recipe
13's error types, each through REST and a worker."""

from __future__ import annotations

from typing import Any

import pytest

from avtomatika import ActionFactory, JobContext, StateMachineBlueprint
from avtomatika.worker import TaskContext, TaskFailure, TaskOutcome
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores


def transcoding_blueprint() -> StateMachineBlueprint:
    """README "Delegating Tasks to Workers (dispatch_task)"."""
    my_blueprint = StateMachineBlueprint(
        "transcoder", api_endpoint="jobs/transcode", api_version="v1"
    )

    @my_blueprint.handler_for("transcode_video", is_start=True)
    async def transcode_handler(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        actions.dispatch_task(
            task_type="video_transcoding",
            params={"input_path": initial_data.get("path")},
            transitions={
                "success": "publish_video",
                "failure": "transcoding_failed",
                "needs_review": "manual_review",
            },
        )

    @my_blueprint.handler_for("publish_video")
    async def publish(actions: ActionFactory) -> None:
        actions.transition_to("published")

    @my_blueprint.handler_for("published", is_end=True)
    @my_blueprint.handler_for("transcoding_failed", is_end=True)
    @my_blueprint.handler_for("manual_review", is_end=True)
    async def done() -> None:
        return None

    return my_blueprint


@pytest.mark.parametrize(
    ("outcome", "state", "history"),
    [
        ({"output": "/v/1.mp4"}, "published", {"output": "/v/1.mp4"}),
        (
            TaskOutcome("needs_review", data={"reason": "blurry"}),
            "manual_review",
            {"reason": "blurry"},
        ),
        (TaskFailure.transient("disk full"), "transcoding_failed", {}),
        (TaskFailure.invalid_input("not a video"), "transcoding_failed", {}),
    ],
    ids=["success", "custom-status", "transient-failure", "invalid-input"],
)
async def test_the_workers_status_picks_the_transition(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    outcome: Params | TaskOutcome | TaskFailure,
    state: str,
    history: Params,
) -> None:
    orchestrator = await start_orchestrator([transcoding_blueprint()])
    http = http_client(orchestrator)
    attempts: list[int] = []

    async def video_transcoding(params: Params, task: TaskContext) -> Params | TaskOutcome:
        assert params == {"input_path": "/raw/1.mov"}
        attempts.append(task.attempt)
        if isinstance(outcome, TaskFailure):
            raise outcome
        return outcome

    async with serving(orchestrator, {"video_transcoding": video_transcoding}):
        job_id = await create_job(http, "jobs/transcode", {"path": "/raw/1.mov"})
        # None of its end states is named "finished", so, as in 1.0b13, each
        # fails the job (its handler ran, and the job carries no error).
        job = await wait_for_status(http, job_id, "failed")

    assert job["current_state"] == state
    assert job["error"] is None
    assert job["state_history"] == history
    # A failure transition is taken at once, whatever the error code.
    assert attempts == [1]


async def test_a_status_without_a_transition_fails_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([transcoding_blueprint()])
    http = http_client(orchestrator)

    async def video_transcoding(params: Params, task: TaskContext) -> TaskOutcome:
        return TaskOutcome("too_long")

    async with serving(orchestrator, {"video_transcoding": video_transcoding}):
        job_id = await create_job(http, "jobs/transcode", {"path": "/raw/1.mov"})
        job = await wait_for_status(http, job_id, "failed")

    assert job["current_state"] == "transcode_video"
    assert "'too_long'" in job["error"]


def priority_flow() -> StateMachineBlueprint:
    """Cookbook recipe 7."""
    priority_pipeline = StateMachineBlueprint(
        name="priority_flow", api_version="v1", api_endpoint="jobs/priority_flow"
    )

    @priority_pipeline.handler_for("start", is_start=True)
    async def start_priority_task(context: JobContext, actions: ActionFactory) -> None:
        is_urgent = context.initial_data.get("is_urgent", False)
        actions.dispatch_task(
            task_type="computation",
            params=context.initial_data,
            priority=10.0 if is_urgent else 0.0,
            transitions={"success": "finished"},
        )

    @priority_pipeline.handler_for("finished", is_end=True)
    async def priority_finished(context: JobContext, actions: ActionFactory) -> None:
        return None

    return priority_pipeline


async def test_urgent_tasks_run_first_then_first_come_first_served(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([priority_flow()])
    http = http_client(orchestrator)
    jobs = {}
    for name, urgent in (("normal-1", False), ("urgent", True), ("normal-2", False)):
        jobs[name] = await create_job(http, "jobs/priority_flow", {"is_urgent": urgent})
        await wait_for_status(http, jobs[name], "waiting_for_worker")

    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["computation"], credits=1)
    order = []
    for _ in jobs:
        task = await worker.next_task()
        order.append(task.job_id)
        await worker.succeed(task, None)
        await worker.credit()

    assert order == [jobs["urgent"], jobs["normal-1"], jobs["normal-2"]]
    for job_id in jobs.values():
        await wait_for_status(http, job_id, "finished")


def api_blueprint() -> StateMachineBlueprint:
    """Cookbook recipe 13, minus the ``failure`` transition: the error code
    decides."""
    bp = StateMachineBlueprint("external_api", api_endpoint="jobs/external", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start_api_call(context: JobContext, actions: ActionFactory) -> None:
        actions.dispatch_task(
            task_type="fetch_external_data",
            params=context.initial_data,
            transitions={"success": "finished_successfully"},
        )

    @bp.handler_for("finished_successfully", is_end=True)
    async def done() -> None:
        return None

    return bp


@pytest.mark.parametrize(
    ("failures", "status", "attempts"),
    [
        # Success reaches "finished_successfully", which, not being named
        # "finished", fails the job as in 1.0b13.
        ([TaskFailure.transient("API timed out")] * 2, "failed", 3),
        ([TaskFailure.transient("API timed out")] * 3, "quarantined", 3),
        ([TaskFailure.permanent("Invalid API key")], "quarantined", 1),
        ([TaskFailure.invalid_input("API key is missing")], "failed", 1),
    ],
    ids=["transient-then-success", "transient-exhausted", "permanent", "invalid-input"],
)
async def test_error_types_decide_retry_quarantine_or_failure(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    failures: list[TaskFailure],
    status: str,
    attempts: int,
) -> None:
    orchestrator = await start_orchestrator([api_blueprint()], job_max_retries=2)
    http = http_client(orchestrator)
    seen: list[int] = []

    async def fetch_external_data(params: Params, task: TaskContext) -> Params:
        seen.append(task.attempt)
        if len(seen) <= len(failures):
            raise failures[len(seen) - 1]
        return {"payload": "ok"}

    async with serving(orchestrator, {"fetch_external_data": fetch_external_data}):
        job_id = await create_job(http, "jobs/external", {"api_key": "k"})
        job = await wait_for_status(http, job_id, status)

    assert seen == list(range(1, attempts + 1))
    if job["current_state"] == "finished_successfully":
        assert job["state_history"] == {"payload": "ok"}
        assert job["error"] is None
    else:
        assert failures[-1].message in job["error"]
