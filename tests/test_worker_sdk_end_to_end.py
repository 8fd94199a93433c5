"""The worker SDK against the real orchestrator: jobs created over REST run
through an SDK worker on the gRPC stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from avtomatika import OrchestratorEngine
from avtomatika.worker import ConnectionSettings, TaskContext, TaskFailure, Worker
from tests.support import WORKER_TOKEN, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator

WAIT = 5.0

Params = dict[str, Any]


def sdk_worker(orchestrator: OrchestratorEngine, max_concurrency: int = 1) -> Worker:
    return Worker(
        worker_id="sdk-1",
        addresses=[f"127.0.0.1:{orchestrator.grpc_port}"],
        token=WORKER_TOKEN,
        max_concurrency=max_concurrency,
        settings=ConnectionSettings(reconnect_initial_delay=0.01, reconnect_max_delay=0.05),
    )


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        await worker.stop(grace_seconds=0)
        await task


async def test_a_rest_job_finishes_through_an_sdk_worker(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = sdk_worker(orchestrator)

    @worker.skill("echo")
    async def echo(params: Params, task: TaskContext) -> Params:
        await task.report_progress(0.5, "echoing")
        return {"echoed": params["id"], "attempt": task.attempt}

    async with running(worker):
        job_id = await create_job(http, "jobs/echo", {"id": 12345678901234567})
        job = await wait_for_status(http, job_id, "finished")

    assert job["state_history"] == {"echoed": 12345678901234567, "attempt": 1}


async def test_invalid_input_fails_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = sdk_worker(orchestrator)

    @worker.skill("echo")
    async def echo(params: Params, task: TaskContext) -> Params:
        raise TaskFailure.invalid_input("no id")

    async with running(worker):
        job_id = await create_job(http, "jobs/echo", {})
        await wait_for_status(http, job_id, "failed")


async def test_cancelling_the_job_cancels_the_handler(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = sdk_worker(orchestrator)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @worker.skill("echo")
    async def echo(params: Params, task: TaskContext) -> Params:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    async with running(worker):
        job_id = await create_job(http, "jobs/echo", {})
        async with asyncio.timeout(WAIT):
            await started.wait()
        response = await http.post(f"/api/v1/jobs/{job_id}/cancel")
        body = await response.json()
        async with asyncio.timeout(WAIT):
            await cancelled.wait()
        await wait_for_status(http, job_id, "cancelled")

    assert response.status == 200, body
    assert body["status"] == "cancellation_request_sent"


async def test_stop_lets_the_running_task_finish_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = sdk_worker(orchestrator)
    started = asyncio.Event()
    release = asyncio.Event()

    @worker.skill("echo")
    async def echo(params: Params, task: TaskContext) -> Params:
        started.set()
        await release.wait()
        return {"done": True}

    run = asyncio.create_task(worker.run())
    job_id = await create_job(http, "jobs/echo", {})
    async with asyncio.timeout(WAIT):
        await started.wait()
    stopping = asyncio.create_task(worker.stop(grace_seconds=WAIT))
    release.set()
    async with asyncio.timeout(WAIT):
        await stopping
        await run

    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"done": True}
