"""What a worker's result does to its job: the status picks the transition,
the data merges into state_history, and error codes decide between retry,
quarantine and failure."""

from __future__ import annotations

import pytest

from avtomatika.v1.task_pb2 import ErrorCode, TaskResult, TaskResultStatus
from tests.support import (
    RawWorker,
    create_job,
    custom,
    failure,
    get_job,
    success,
    wait_for_status,
)
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


async def test_success_follows_the_success_transition_and_merges_data(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo", {"n": 1})

    task = await worker.next_task()
    ack = (await worker.succeed(task, {"answer": 42, "nested": {"ok": True}})).result_ack

    assert (ack.accepted, ack.transition, ack.task_id) == (True, "done", task.task_id)
    job = await wait_for_status(http, job_id, "finished")
    assert job["current_state"] == "done"
    assert job["state_history"] == {"answer": 42, "nested": {"ok": True}}
    assert job["error"] is None


async def test_a_result_without_a_status_counts_as_success(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")

    task = await worker.next_task()
    ack = await worker.report(TaskResult(task_id=task.task_id, job_id=task.job_id))

    assert ack.result_ack.transition == "done"
    await wait_for_status(http, job_id, "finished")


async def test_a_custom_status_selects_its_transition(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    blueprint = echo_blueprint(transitions={"success": "done", "needs_review": "review"})
    orchestrator = await start_orchestrator([blueprint])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")

    task = await worker.next_task()
    ack = await worker.report(custom(task, "needs_review", {"score": 0.4}))

    assert ack.result_ack.transition == "review"
    job = await wait_for_status(http, job_id, "finished")
    assert job["current_state"] == "review"
    assert job["state_history"] == {"score": 0.4}


async def test_a_status_without_a_transition_fails_the_job_naming_it(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")

    task = await worker.next_task()
    ack = await worker.report(custom(task, "needs_review"))

    assert ack.result_ack.accepted
    job = await wait_for_status(http, job_id, "failed")
    assert "'needs_review'" in job["error"]
    assert job["current_state"] == "start"


async def test_a_failure_transition_is_followed_whatever_the_error_code(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    blueprint = echo_blueprint(transitions={"success": "done", "failure": "cleanup"})
    orchestrator = await start_orchestrator([blueprint])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")

    task = await worker.next_task()
    ack = await worker.report(failure(task, ErrorCode.ERROR_CODE_TRANSIENT, "disk full"))

    assert ack.result_ack.transition == "cleanup"
    job = await wait_for_status(http, job_id, "finished")
    assert job["current_state"] == "cleanup"
    assert job["retry_count"] == 0


@pytest.mark.parametrize("code", [ErrorCode.ERROR_CODE_TRANSIENT, ErrorCode.ERROR_CODE_UNSPECIFIED])
async def test_a_transient_error_is_retried_as_new_attempts_then_quarantined(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    code: ErrorCode.ValueType,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], job_max_retries=2)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo", {"video": "v.mp4"})

    seen: list[str] = []
    for attempt in (1, 2, 3):
        task = await worker.next_task()
        assert (task.job_id, task.attempt) == (job_id, attempt)
        assert RawWorker.params(task) == {"video": "v.mp4"}
        seen.append(task.task_id)
        ack = await worker.report(failure(task, code, f"try {attempt} failed"))
        assert ack.result_ack.accepted
        if attempt < 3:
            assert ack.result_ack.transition == "retry"
            job = await get_job(http, job_id)
            assert (job["status"], job["retry_count"]) == ("waiting_for_worker", attempt)
            await worker.credit()

    assert len(set(seen)) == 3  # a fresh task id per attempt
    job = await wait_for_status(http, job_id, "quarantined")
    assert job["retry_count"] == 2
    assert "try 3 failed" in job["error"]
    assert "2 retries" in job["error"]


async def test_no_retries_allowed_quarantines_at_once(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], job_max_retries=0)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")

    await worker.fail(await worker.next_task(), ErrorCode.ERROR_CODE_TRANSIENT)

    job = await wait_for_status(http, job_id, "quarantined")
    assert job["retry_count"] == 0


async def test_a_permanent_error_quarantines_without_retry(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")

    task = await worker.next_task()
    ack = await worker.fail(task, ErrorCode.ERROR_CODE_PERMANENT, "model missing")

    assert ack.result_ack.accepted
    job = await wait_for_status(http, job_id, "quarantined")
    assert job["retry_count"] == 0
    assert "model missing" in job["error"]
    assert await orchestrator.engine.storage.queue_depths() == {}


async def test_invalid_input_fails_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")

    task = await worker.next_task()
    await worker.fail(task, ErrorCode.ERROR_CODE_INVALID_INPUT, "not a video")

    job = await wait_for_status(http, job_id, "failed")
    assert job["retry_count"] == 0
    assert "not a video" in job["error"]


async def test_a_retried_task_can_still_succeed(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], job_max_retries=2)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")

    await worker.fail(await worker.next_task(), ErrorCode.ERROR_CODE_TRANSIENT)
    await worker.credit()
    second = await worker.next_task()
    ack = await worker.report(success(second, {"made_it": True}))

    assert ack.result_ack.transition == "done"
    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"made_it": True}


async def test_a_task_the_worker_gave_up_is_run_again(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    first = await worker.next_task()

    # The job was not cancelled: the worker gave the task up (shutting down).
    gave_up = TaskResult(
        task_id=first.task_id,
        job_id=job_id,
        status=TaskResultStatus.TASK_RESULT_STATUS_CANCELLED,
    )
    ack = await worker.report(gave_up)

    assert (ack.result_ack.accepted, ack.result_ack.transition) == (True, "retry")
    await worker.credit()
    second = await worker.next_task()
    assert (second.job_id, second.attempt) == (job_id, 2)
