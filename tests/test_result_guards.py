"""A result counts only from the worker holding the task's lease, once, for
the current attempt; anything else is acknowledged as rejected and changes
nothing."""

from __future__ import annotations

import pytest

from avtomatika.v1.task_pb2 import ErrorCode, TaskResult
from tests.support import RawWorker, create_job, get_job, success, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


async def test_a_result_from_a_worker_without_the_lease_is_stale(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    holder = RawWorker(grpc_channel(orchestrator), "holder")
    await holder.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    task = await holder.next_task()
    intruder = RawWorker(grpc_channel(orchestrator), "intruder")
    await intruder.hello(["echo"], credits=0)

    forged = success(task, {"by": "intruder"})
    forged.worker_id = "holder"  # the stream's identity wins over the claim
    ack = (await intruder.report(forged)).result_ack

    assert (ack.accepted, ack.reason, ack.task_id) == (False, "stale", task.task_id)
    job = await get_job(http, job_id)
    assert (job["status"], job["state_history"]) == ("waiting_for_worker", {})

    assert (await holder.succeed(task, {"by": "holder"})).result_ack.accepted
    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"by": "holder"}


async def test_the_same_result_twice_is_late_the_second_time(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    task = await worker.next_task()

    first = (await worker.succeed(task, {"n": 1})).result_ack
    second = (await worker.succeed(task, {"n": 2})).result_ack

    assert first.accepted
    assert (second.accepted, second.reason) == (False, "late")
    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"n": 1}


async def test_a_result_for_an_earlier_attempt_is_rejected(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    first = await worker.next_task()
    await worker.fail(first, ErrorCode.ERROR_CODE_TRANSIENT)
    await worker.credit()
    second = await worker.next_task()
    assert (second.attempt, second.job_id) == (2, job_id)
    assert second.task_id != first.task_id

    stale = (await worker.succeed(first, {"from": "attempt 1"})).result_ack

    assert (stale.accepted, stale.reason) == (False, "late")
    job = await get_job(http, job_id)
    assert (job["status"], job["state_history"]) == ("waiting_for_worker", {})
    assert (await worker.succeed(second, {"from": "attempt 2"})).result_ack.accepted
    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"from": "attempt 2"}


async def test_a_result_for_an_unknown_task_or_the_wrong_job_is_stale(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    task = await worker.next_task()

    unknown = await worker.report(TaskResult(task_id="no-such-task", job_id=job_id))
    wrong_job = await worker.report(TaskResult(task_id=task.task_id, job_id="another-job"))

    assert (unknown.result_ack.accepted, unknown.result_ack.reason) == (False, "stale")
    assert (wrong_job.result_ack.accepted, wrong_job.result_ack.reason) == (False, "stale")
    assert (await get_job(http, job_id))["status"] == "waiting_for_worker"
