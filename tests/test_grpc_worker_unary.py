"""The unary worker RPCs (RegisterWorker, Heartbeat, NextTask, SubmitResult)
over a real grpc.aio server: a worker that polls instead of holding a
stream, with the same rules as the REST worker API they mirror."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest

from avtomatika import OrchestratorEngine
from avtomatika.payload import from_payload, to_payload
from avtomatika.v1 import job_pb2, job_service_pb2_grpc, task_pb2, worker_service_pb2_grpc
from avtomatika.v1.job_service_pb2 import CancelJobRequest, CreateJobRequest, GetJobRequest
from avtomatika.v1.job_service_pb2_grpc import JobServiceStub
from avtomatika.v1.task_pb2 import TaskResult
from avtomatika.v1.worker_pb2 import WorkerRegistration, WorkerResources
from avtomatika.v1.worker_service_pb2 import (
    HeartbeatRequest,
    NextTaskRequest,
    RegisterWorkerRequest,
    ReportEventRequest,
    SubmitResultRequest,
)
from tests.support import CLIENT_TOKEN, WORKER_TOKEN
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, StartOrchestrator

pytestmark = pytest.mark.both_stores

CLIENT = (("x-client-token", CLIENT_TOKEN),)
WORKER = (("x-worker-token", WORKER_TOKEN),)


def registration(
    worker_id: str = "poller-1", skills: tuple[str, ...] = ("echo",)
) -> RegisterWorkerRequest:
    return RegisterWorkerRequest(
        registration=WorkerRegistration(
            worker_id=worker_id,
            skills=list(skills),
            resources=WorkerResources(max_concurrent_tasks=1),
        )
    )


async def stubs(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, **settings: object
) -> tuple[
    worker_service_pb2_grpc.WorkerServiceAsyncStub, job_service_pb2_grpc.JobServiceAsyncStub
]:
    return await stubs_for(await start_orchestrator([echo_blueprint()], **settings), grpc_channel)


async def stubs_for(
    orchestrator: OrchestratorEngine, grpc_channel: GrpcChannel
) -> tuple[
    worker_service_pb2_grpc.WorkerServiceAsyncStub, job_service_pb2_grpc.JobServiceAsyncStub
]:
    channel = grpc_channel(orchestrator)
    return worker_service_pb2_grpc.WorkerServiceStub(channel), JobServiceStub(channel)


async def create(jobs: job_service_pb2_grpc.JobServiceAsyncStub) -> str:
    request = CreateJobRequest(
        api_version="v1", endpoint="jobs/echo", initial_data=to_payload({"n": 1})
    )
    return str((await jobs.CreateJob(request, metadata=CLIENT)).job_id)


async def test_a_polling_worker_registers_takes_a_task_and_finishes_the_job(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    workers, jobs = await stubs(start_orchestrator, grpc_channel)
    assert (await workers.RegisterWorker(registration(), metadata=WORKER)).status == "registered"
    job_id = await create(jobs)
    task = (await workers.NextTask(NextTaskRequest(worker_id="poller-1"), metadata=WORKER)).task
    assert (task.job_id, task.type, task.attempt) == (job_id, "echo", 1)
    result = TaskResult(
        job_id=job_id,
        task_id=task.task_id,
        worker_id="poller-1",
        status=task_pb2.TASK_RESULT_STATUS_SUCCESS,
        data=to_payload({"echoed": from_payload(task.params)}),
    )
    verdict = await workers.SubmitResult(SubmitResultRequest(result=result), metadata=WORKER)
    assert verdict.status == "accepted"
    job = (await jobs.GetJob(GetJobRequest(job_id=job_id, wait=10), metadata=CLIENT)).job
    assert job.status == job_pb2.JOB_STATUS_FINISHED
    # A result sent again is not applied twice.
    again = await workers.SubmitResult(SubmitResultRequest(result=result), metadata=WORKER)
    assert again.status == "ignored"


async def test_next_task_is_a_long_poll_that_ends_empty(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    workers, _ = await stubs(start_orchestrator, grpc_channel, worker_poll_timeout_seconds=0.2)
    await workers.RegisterWorker(registration(), metadata=WORKER)
    answer = await workers.NextTask(NextTaskRequest(worker_id="poller-1"), metadata=WORKER)
    assert not answer.HasField("task")


async def test_heartbeats_refresh_and_name_the_tasks_of_cancelled_jobs(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    workers, jobs = await stubs(start_orchestrator, grpc_channel)
    await workers.RegisterWorker(registration(), metadata=WORKER)
    idle = await workers.Heartbeat(HeartbeatRequest(worker_id="poller-1"), metadata=WORKER)
    assert (idle.status, list(idle.cancel_task_ids)) == ("ok", [])
    job_id = await create(jobs)
    task = (await workers.NextTask(NextTaskRequest(worker_id="poller-1"), metadata=WORKER)).task
    beat = HeartbeatRequest(worker_id="poller-1", status="busy", current_tasks=[task.task_id])
    assert list((await workers.Heartbeat(beat, metadata=WORKER)).cancel_task_ids) == []
    await jobs.CancelJob(CancelJobRequest(job_id=job_id), metadata=CLIENT)
    answer = await workers.Heartbeat(beat, metadata=WORKER)
    assert (answer.status, list(answer.cancel_task_ids)) == ("ok", [task.task_id])


async def test_tokens_and_bad_requests_are_refused(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, tmp_path: Path
) -> None:
    workers_toml = tmp_path / "workers.toml"
    workers_toml.write_text('[gpu-1]\ntoken = "gpu-1-secret-token"\n')
    workers, _ = await stubs(start_orchestrator, grpc_channel, workers_config_path=workers_toml)

    def register(request: RegisterWorkerRequest, token: str | None) -> Awaitable[object]:
        metadata = (("x-worker-token", token),) if token else ()
        return workers.RegisterWorker(request, metadata=metadata)

    cases: list[tuple[Awaitable[object], grpc.StatusCode]] = [
        (register(registration(), None), grpc.StatusCode.UNAUTHENTICATED),
        (register(registration(), "wrong"), grpc.StatusCode.UNAUTHENTICATED),
        # A listed worker must use its own token, and its token is for it alone.
        (register(registration("gpu-1"), WORKER_TOKEN), grpc.StatusCode.UNAUTHENTICATED),
        (register(registration("cpu-2"), "gpu-1-secret-token"), grpc.StatusCode.UNAUTHENTICATED),
        (register(registration("bad id!"), WORKER_TOKEN), grpc.StatusCode.INVALID_ARGUMENT),
        (
            register(registration(skills=("echo", "")), WORKER_TOKEN),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            workers.NextTask(NextTaskRequest(worker_id="never-registered"), metadata=WORKER),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            workers.SubmitResult(
                SubmitResultRequest(result=TaskResult(task_id="t", worker_id="poller-1")),
                metadata=WORKER,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for call, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == code
    own = (("x-worker-token", "gpu-1-secret-token"),)
    assert (
        await workers.RegisterWorker(registration("gpu-1"), metadata=own)
    ).status == "registered"


async def test_a_result_for_a_task_the_worker_does_not_hold_is_ignored(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    workers, jobs = await stubs(start_orchestrator, grpc_channel)
    await workers.RegisterWorker(registration(), metadata=WORKER)
    await workers.RegisterWorker(registration("poller-2"), metadata=WORKER)
    job_id = await create(jobs)
    task = (await workers.NextTask(NextTaskRequest(worker_id="poller-1"), metadata=WORKER)).task
    stolen = TaskResult(job_id=job_id, task_id=task.task_id, worker_id="poller-2")
    verdict = await workers.SubmitResult(SubmitResultRequest(result=stolen), metadata=WORKER)
    assert verdict.status == "ignored"
    assert verdict.reason


async def test_a_task_leased_to_a_poll_cancelled_meanwhile_goes_back_to_the_queue(
    start_orchestrator: StartOrchestrator,
    grpc_channel: GrpcChannel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The poll is cancelled (a gRPC caller's deadline) in the very turn its
    claim leases a task: the task must not stay leased to nobody."""
    orchestrator = await start_orchestrator([echo_blueprint()])
    workers, jobs = await stubs_for(orchestrator, grpc_channel)
    await workers.RegisterWorker(registration(), metadata=WORKER)
    job_id = await create(jobs)
    engine = orchestrator.engine
    claim = engine.next_task
    polls: list[asyncio.Task[object]] = []

    async def leased_then_cancelled(*args: Any, **kwargs: Any) -> Any:
        task = await claim(*args, **kwargs)
        polls[0].cancel()  # lands before the poll sees the claim's result
        return task

    monkeypatch.setattr(engine, "next_task", leased_then_cancelled)
    polls.append(asyncio.create_task(orchestrator.polling_workers.next_task("poller-1")))
    with pytest.raises(asyncio.CancelledError):
        await polls[0]
    monkeypatch.undo()

    again = (await workers.NextTask(NextTaskRequest(worker_id="poller-1"), metadata=WORKER)).task
    assert again.job_id == job_id


async def test_progress_events_of_held_tasks_are_recorded_others_ignored(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    workers, jobs = await stubs(start_orchestrator, grpc_channel)
    await workers.RegisterWorker(registration(), metadata=WORKER)
    await workers.RegisterWorker(registration("poller-2"), metadata=WORKER)
    job_id = await create(jobs)
    task = (await workers.NextTask(NextTaskRequest(worker_id="poller-1"), metadata=WORKER)).task

    def progress(worker_id: str, event_type: str = "progress") -> ReportEventRequest:
        return ReportEventRequest(
            worker_id=worker_id,
            task_id=task.task_id,
            event_type=event_type,
            progress=0.4,
            message="warming up",
        )

    accepted = await workers.ReportEvent(progress("poller-1"), metadata=WORKER)
    assert accepted.status == "event_accepted"
    job = (await jobs.GetJob(GetJobRequest(job_id=job_id), metadata=CLIENT)).job
    assert (job.progress, job.progress_message) == (0.4, "warming up")
    stale = await workers.ReportEvent(progress("poller-2"), metadata=WORKER)
    assert (stale.status, stale.reason) == ("ignored", "stale")
    other = await workers.ReportEvent(progress("poller-1", "log"), metadata=WORKER)
    assert (other.status, other.reason) == ("ignored", "unsupported")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await workers.ReportEvent(progress("poller-1"), metadata=(("x-worker-token", "no"),))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
