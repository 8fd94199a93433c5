"""Result acks that linger: to a worker that takes batches, acks with
nothing else to go with them wait (``_ACK_LINGER_SECONDS``) for the next
message of another kind and go out with it, so at a moderate rate a job
costs the stream one write instead of two. Whatever ends the wait (a task,
a cancel, the worker draining, the stream ending), every ack still reaches
the worker, in the order of its results.

The tests that must see what ends the wait stretch the linger far beyond
the test's own time limit: an ack that arrives came for the reason tested,
not because the linger ran out."""

from __future__ import annotations

import aiohttp
import pytest

from avtomatika.grpc import worker_stream
from avtomatika.v1.worker_service_pb2 import (
    ConnectRequest,
    ConnectResponse,
    Credit,
    Drain,
    TaskAssignment,
)
from tests.support import RawWorker, create_job, success, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.test_worker_batches import batch, holding_tasks, jobs_waiting, receive_flat

# Longer than pytest's timeout for a test (pyproject.toml): a test waiting
# for the linger to run out fails instead.
FOREVER = 3600.0
# Heartbeats end the wait too; these tests must not count on one.
QUIET = {"worker_heartbeat_interval_seconds": 600.0}


@pytest.fixture
def endless_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_stream, "_ACK_LINGER_SECONDS", FOREVER)


async def one_ack_lingering(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> tuple[aiohttp.ClientSession, RawWorker, TaskAssignment]:
    """A batching worker whose one task's result is settled (its job
    finished) and whose ack waits for company: a client session, the
    worker, and the task. As the SDK does, the result came with the credit
    it frees."""
    orchestrator = await start_orchestrator([echo_blueprint()], **QUIET)
    http = http_client(orchestrator)
    (job_id,) = await jobs_waiting(http, 1)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], 1, accepts_batches=True)
    task = await worker.next_task()
    await worker.send(
        batch(ConnectRequest(result=success(task, None)), ConnectRequest(credit=Credit(credits=1)))
    )
    await wait_for_status(http, job_id, "finished")
    return http, worker, task


def kinds(message: ConnectResponse) -> list[str | None]:
    """The kinds of what one stream message carries, batches opened."""
    if message.WhichOneof("kind") == "batch":
        return [m.WhichOneof("kind") for m in message.batch.messages]
    return [message.WhichOneof("kind")]


async def test_acks_with_nothing_after_them_still_come_in_the_order_of_the_results(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    # A light load as the SDK makes it: one result (with the credit it
    # frees) at a time, and no task left to send.
    http, worker, job_ids, tasks = await holding_tasks(
        start_orchestrator, http_client, grpc_channel, jobs=3, credits=3
    )

    for n, task in enumerate(tasks):
        await worker.send(
            batch(
                ConnectRequest(result=success(task, {"n": n})),
                ConnectRequest(credit=Credit(credits=1)),
            )
        )
    acks, _ = await receive_flat(worker, 3)

    assert [(a.result_ack.task_id, a.result_ack.accepted) for a in acks] == [
        (t.task_id, True) for t in tasks
    ]
    for job_id in job_ids:
        await wait_for_status(http, job_id, "finished")


@pytest.mark.usefixtures("endless_linger")
async def test_an_ack_goes_out_with_the_next_task_in_one_batch(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    http, worker, task = await one_ack_lingering(start_orchestrator, http_client, grpc_channel)
    next_job = await create_job(http, "jobs/echo", {"n": 2})
    message = await worker.receive()

    assert message is not None
    assert kinds(message) == ["result_ack", "task"]
    ack, follow_up = message.batch.messages
    assert (ack.result_ack.task_id, ack.result_ack.accepted) == (task.task_id, True)
    assert follow_up.task.job_id == next_job


@pytest.mark.usefixtures("endless_linger")
async def test_a_draining_worker_gets_its_acks_without_waiting(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    _, worker, task = await one_ack_lingering(start_orchestrator, http_client, grpc_channel)
    # The SDK stops this way: Drain, then it waits for its acks.
    await worker.send(ConnectRequest(drain=Drain(reason="stopping")))
    ack = (await worker.expect("result_ack")).result_ack

    assert (ack.task_id, ack.accepted) == (task.task_id, True)


@pytest.mark.usefixtures("endless_linger")
async def test_the_acks_still_go_out_when_the_worker_ends_the_stream(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    _, worker, task = await one_ack_lingering(start_orchestrator, http_client, grpc_channel)
    await worker.close()
    ack = (await worker.expect("result_ack")).result_ack

    assert (ack.task_id, ack.accepted) == (task.task_id, True)
    assert await worker.receive() is None


@pytest.mark.usefixtures("endless_linger")
async def test_a_worker_that_takes_no_batches_gets_each_ack_at_once(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    # Without batches an ack could never share a message: it does not wait.
    orchestrator = await start_orchestrator([echo_blueprint()], **QUIET)
    http = http_client(orchestrator)
    job_ids = await jobs_waiting(http, 2)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], 2, accepts_batches=False)
    tasks = [await worker.next_task() for _ in job_ids]

    acks = [(await worker.succeed(task, None)).result_ack for task in tasks]

    assert [(a.task_id, a.accepted) for a in acks] == [(t.task_id, True) for t in tasks]
