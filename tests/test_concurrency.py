"""Many jobs at once: none dropped, none mixed up, no task delivered twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from avtomatika.v1.worker_service_pb2 import ConnectRequest, Credit, TaskAssignment
from tests.support import RawWorker, create_job, success, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


JOBS = 200


async def echo_until_closed(worker: RawWorker, delivered: list[TaskAssignment]) -> int:
    """Answer every task with its own params until the stream ends; the
    number of accepted results."""
    accepted = 0
    while (message := await worker.receive()) is not None:
        kind = message.WhichOneof("kind")
        if kind == "task":
            delivered.append(message.task)
            echoed = {"echo": RawWorker.params(message.task), "by": worker.worker_id}
            await worker.send(ConnectRequest(result=success(message.task, echoed)))
            await worker.send(ConnectRequest(credit=Credit(credits=1)))
        else:
            assert kind == "result_ack", message
            assert message.result_ack.accepted, message
            accepted += 1
    return accepted


async def test_concurrent_jobs_all_finish_with_their_own_results(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    workers = [RawWorker(grpc_channel(orchestrator), f"w-{n}") for n in range(2)]
    for worker in workers:
        await worker.hello(["echo"], credits=8)
    delivered: list[TaskAssignment] = []
    serving = [asyncio.create_task(echo_until_closed(w, delivered)) for w in workers]

    job_ids = await asyncio.gather(*(create_job(http, "jobs/echo", {"n": n}) for n in range(JOBS)))
    jobs = [await wait_for_status(http, job_id, "finished") for job_id in job_ids]

    for worker in workers:
        await worker.close()
    accepted = await asyncio.gather(*serving)

    assert len(set(job_ids)) == JOBS
    for n, job in enumerate(jobs):
        assert job["state_history"]["echo"] == {"n": n}
    assert sum(accepted) == JOBS
    assert len({task.task_id for task in delivered}) == len(delivered) == JOBS
    assert Counter(task.job_id for task in delivered) == Counter(dict.fromkeys(job_ids, 1))
    # Both workers took part: a credit-limited worker cannot take them all.
    assert {job["state_history"]["by"] for job in jobs} == {"w-0", "w-1"}
