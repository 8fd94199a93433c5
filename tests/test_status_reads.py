"""Status reads go last on a saturated server: ``GET /api/v1/jobs/{id}``
without ``?wait=`` is held until the job changes (at most
``STATUS_READ_HOLD_SECONDS``) once the event loop is saturated, and answered
at once otherwise. The saturation is real: a callback that keeps the
orchestrator's loop busy (the test shares it), no stand-in for the measure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from avtomatika import OrchestratorEngine
from avtomatika.services.status_reads import RELIEVED_UNDER_SECONDS, SATURATED_AFTER_SECONDS
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.follow import followers_reach
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.both_stores


@asynccontextmanager
async def saturated_loop(seconds: float = 0.004) -> AsyncIterator[None]:
    """The running loop kept busy: ``seconds`` of work in every iteration,
    as a server answering more requests than it can gets."""
    loop = asyncio.get_running_loop()
    running = True

    def busy() -> None:
        if running:
            time.sleep(seconds)  # blocks the loop on purpose: that is the load
            loop.call_soon(busy)

    loop.call_soon(busy)
    try:
        yield
    finally:
        running = False


async def cancelled_job(http: aiohttp.ClientSession) -> str:
    """A job that has ended (cancelled while it waited for a worker)."""
    job_id = await create_job(http, "jobs/echo")
    assert (await http.post(f"/api/v1/jobs/{job_id}/cancel")).status == 200
    await wait_for_status(http, job_id, "cancelled")
    return job_id


async def test_a_saturated_server_holds_a_status_read_until_the_job_changes(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], status_read_hold_seconds=30, job_wait_max_seconds=30
    )
    http = http_client(orchestrator)
    done = await cancelled_job(http)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    async with saturated_loop():
        # Reads of an ended job answer at once, held or not: they let the
        # server measure its loop until it knows it is saturated.
        async def measured() -> bool:
            response = await http.get(f"/api/v1/jobs/{done}")
            assert (await response.json())["status"] == "cancelled"
            return orchestrator.client_api.status_reads.lag_seconds > SATURATED_AFTER_SECONDS

        await wait_until(measured)
        reading = asyncio.create_task(http.get(f"/api/v1/jobs/{job_id}"))
        # Held: it follows the job, as ?wait= would.
        await followers_reach(orchestrator, 1)
        assert not reading.done()
        worker = RawWorker(grpc_channel(orchestrator), "w1")
        await worker.hello(["echo"])
        await worker.succeed(await worker.next_task(), {"echo": 2})
        response = await reading
    assert response.status == 200
    # Answered once the job changed: never the state it was read in.
    assert (await response.json())["status"] in ("running", "finished")


async def test_a_saturated_server_holds_reads_until_its_loop_is_well_below_saturation(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    """Holding the reads is what makes the loop's yields short, so the hold
    lasts until they are under RELIEVED_UNDER_SECONDS, well below the
    threshold where it began; then reads answer at once again."""
    orchestrator = await start_orchestrator(
        [echo_blueprint()], status_read_hold_seconds=30, job_wait_max_seconds=30
    )
    http = http_client(orchestrator)
    reads = orchestrator.client_api.status_reads
    done = await cancelled_job(http)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")

    async def read_done() -> None:
        response = await http.get(f"/api/v1/jobs/{done}")
        assert (await response.json())["status"] == "cancelled"

    async def measured(saturated: bool) -> bool:
        await read_done()
        return reads.saturated is saturated

    async with saturated_loop():
        await wait_until(lambda: measured(True))
    # Unloaded, the yields are short again, and the smoothed one shrinks by
    # a fifth at most per read: the first read to bring it under the
    # threshold where the hold began leaves it well over the one where the
    # hold ends.
    while reads.lag_seconds >= SATURATED_AFTER_SECONDS:
        await read_done()
    assert reads.saturated
    assert reads.lag_seconds >= RELIEVED_UNDER_SECONDS
    reading = asyncio.create_task(http.get(f"/api/v1/jobs/{job_id}"))
    await followers_reach(orchestrator, 1)
    assert not reading.done()  # still held
    worker = RawWorker(grpc_channel(orchestrator), "w1")
    await worker.hello(["echo"])
    await worker.succeed(await worker.next_task(), {"echo": 2})
    assert (await (await reading).json())["status"] in ("running", "finished")
    # Then it lets go, and reads answer at once.
    await wait_until(lambda: measured(False))
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    response = await http.get(f"/api/v1/jobs/{job_id}")
    assert (await response.json())["status"] == "waiting_for_worker"


async def test_a_server_that_is_not_saturated_answers_a_status_read_at_once(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], status_read_hold_seconds=30, job_wait_max_seconds=30
    )
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    for _ in range(10):
        response = await http.get(f"/api/v1/jobs/{job_id}")
        # Nothing happens to the job: a held read would never answer.
        assert (await response.json())["status"] == "waiting_for_worker"
    assert orchestrator.client_api.status_reads.lag_seconds <= SATURATED_AFTER_SECONDS


async def test_with_no_hold_a_saturated_server_answers_at_once_and_measures_nothing(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator: OrchestratorEngine = await start_orchestrator(
        [echo_blueprint()], status_read_hold_seconds=0, job_wait_max_seconds=30
    )
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    async with saturated_loop():
        for _ in range(10):
            response = await http.get(f"/api/v1/jobs/{job_id}")
            assert (await response.json())["status"] == "waiting_for_worker"
    assert orchestrator.client_api.status_reads.lag_seconds == 0
