"""A worker back within its grace period says which tasks it still holds;
any other task leased to it lost its assignment with the earlier stream (an
instance died between leasing and sending it) and is re-queued at once,
instead of waiting, leased to a worker that never heard of it, forever."""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from avtomatika.v1.worker_service_pb2 import TaskAssignment
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


async def leased_then_disconnected(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> tuple[aiohttp.ClientSession, grpc.aio.Channel, str, TaskAssignment]:
    """A job whose task was leased to worker w-1 on a stream that then
    ended; w-1 has a minute to come back."""
    orchestrator = await start_orchestrator([echo_blueprint()], worker_reconnect_grace_seconds=60)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo", {"n": 1})
    channel = grpc_channel(orchestrator)
    first = RawWorker(channel, "w-1")
    await first.hello(["echo"])
    task = await first.next_task()
    await first.close()
    return http, channel, job_id, task


async def test_a_lease_the_returning_worker_does_not_hold_is_requeued_at_once(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    http, channel, job_id, lost = await leased_then_disconnected(
        start_orchestrator, http_client, grpc_channel
    )
    again = RawWorker(channel, "w-1")
    await again.hello(["echo"], held=[])  # the assignment never arrived
    retried = await again.next_task()
    assert (retried.job_id, retried.attempt) == (job_id, 2)
    assert retried.task_id != lost.task_id
    assert (await again.succeed(retried, {"n": 1})).result_ack.accepted
    await wait_for_status(http, job_id, "finished")


@pytest.mark.parametrize(
    "reports", [True, False], ids=["it reports holding it", "an older worker: no report"]
)
async def test_a_task_the_returning_worker_holds_keeps_its_lease(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    reports: bool,
) -> None:
    http, channel, job_id, task = await leased_then_disconnected(
        start_orchestrator, http_client, grpc_channel
    )
    again = RawWorker(channel, "w-1")
    await again.hello(["echo"], credits=0, held=[task.task_id] if reports else None)
    assert (await again.succeed(task, {"n": 1})).result_ack.accepted
    await wait_for_status(http, job_id, "finished")
