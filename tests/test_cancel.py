"""``POST /api/v1/jobs/{id}/cancel``: cancelled is terminal at once, queued
tasks are withdrawn, a worker running the task is told, and its late result
changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
import pytest

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.v1.worker_service_pb2 import (
    CancelTask,
    ConnectRequest,
    ResultAck,
    TaskAssignment,
)
from tests.support import (
    RawWorker,
    create_job,
    get_job,
    success,
    wait_for_status,
    wait_for_terminal,
)
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


_T = TypeVar("_T")

RACE_ROUNDS = 30
_STAGGER = ((0.0, 0.0), (0.0, 0.002), (0.002, 0.0), (0.0, 0.005), (0.005, 0.0))


async def cancel(http: aiohttp.ClientSession, job_id: str) -> tuple[int, dict[str, str]]:
    response = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    body = await response.json()
    assert isinstance(body, dict)
    return response.status, body


async def test_cancelling_a_queued_task_withdraws_it(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    doomed = await create_job(http, "jobs/echo", {"which": "doomed"})
    await wait_for_status(http, doomed, "waiting_for_worker")

    assert await cancel(http, doomed) == (200, {"status": "cancellation_request_accepted"})
    assert (await get_job(http, doomed))["status"] == "cancelled"

    # A worker arriving later never sees the withdrawn task: it gets the
    # next job's task, although that one was queued after it.
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    survivor = await create_job(http, "jobs/echo", {"which": "survivor"})
    task = await worker.next_task()
    assert task.job_id == survivor
    await worker.succeed(task, None)
    await wait_for_status(http, survivor, "finished")
    assert (await get_job(http, doomed))["status"] == "cancelled"


async def test_cancelling_a_leased_task_tells_the_worker_and_ignores_its_result(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    task = await worker.next_task()

    assert await cancel(http, job_id) == (200, {"status": "cancellation_request_sent"})

    command = (await worker.expect("cancel")).cancel
    assert (command.task_id, command.job_id) == (task.task_id, job_id)
    assert command.reason
    ack = (await worker.succeed(task, {"too": "late"})).result_ack
    assert (ack.accepted, ack.reason) == (False, "cancelled")
    job = await get_job(http, job_id)
    assert (job["status"], job["state_history"]) == ("cancelled", {})


async def test_cancelling_a_job_while_its_handler_runs_drops_the_step(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    bp = StateMachineBlueprint("slow", api_endpoint="/jobs/slow", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        entered.set()
        await release.wait()
        actions.dispatch_task("echo", transitions={"success": "done"})

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([bp, echo_blueprint()])
    http = http_client(orchestrator)
    slow = await create_job(http, "jobs/slow")
    await entered.wait()

    assert await cancel(http, slow) == (200, {"status": "cancellation_request_accepted"})
    release.set()

    # The handler's dispatch lost to the cancel: the first task a worker
    # gets is another job's.
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    other = await create_job(http, "jobs/echo")
    assert (await worker.next_task()).job_id == other
    job = await get_job(http, slow)
    assert (job["status"], job["current_state"]) == ("cancelled", "start")


async def test_cancelling_a_terminal_job_is_a_conflict(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    finished = await create_job(http, "jobs/echo")
    await worker.succeed(await worker.next_task(), None)
    await wait_for_status(http, finished, "finished")
    cancelled = await create_job(http, "jobs/echo")
    await wait_for_status(http, cancelled, "waiting_for_worker")
    assert (await cancel(http, cancelled))[0] == 200

    for job_id, status in ((finished, "finished"), (cancelled, "cancelled")):
        code, body = await cancel(http, job_id)
        assert code == 409
        assert status in body["error"]
        assert (await get_job(http, job_id))["status"] == status


async def test_cancelling_an_unknown_job_is_not_found(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    code, body = await cancel(http_client(orchestrator), "no-such-job")
    assert code == 404
    assert "no-such-job" in body["error"]


async def test_cancel_racing_a_success_result_leaves_one_consistent_outcome(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    """Whoever commits first wins. Three outcomes are consistent:

    - the cancel wins: it is pushed to the worker (``sent``), the result is
      ignored (``cancelled``) and its data never reaches the job;
    - the result wins and the job finishes: the cancel gets 409;
    - the result wins but the cancel lands before the end state's handler
      ran: the job is cancelled after the result (``accepted``: no task was
      left to push a cancel to).
    """
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])

    for round_ in range(RACE_ROUNDS):
        job_id = await create_job(http, "jobs/echo", {"round": round_})
        task = await worker.next_task()
        assert task.job_id == job_id

        # Stagger the two sides a little, round by round, so that every
        # interleaving gets its turn; the assertions hold for all of them.
        cancel_delay, result_delay = _STAGGER[round_ % len(_STAGGER)]
        (code, body), (ack, cancels) = await asyncio.gather(
            _after(cancel_delay, cancel(http, job_id)),
            _after(result_delay, _report_success(worker, task, round_)),
        )
        job = await wait_for_terminal(http, job_id)

        if code == 409:
            assert ack.accepted
            assert job["status"] == "finished"
            assert job["state_history"] == {"round": round_}
        else:
            assert code == 200
            assert job["status"] == "cancelled"
            if body["status"] == "cancellation_request_sent":
                assert (ack.accepted, ack.reason) == (False, "cancelled")
                assert job["state_history"] == {}
                while not cancels:  # the push may trail the ack
                    cancels.append((await worker.expect("cancel")).cancel)
                assert [c.task_id for c in cancels] == [task.task_id]
            else:
                assert body["status"] == "cancellation_request_accepted"
                assert ack.accepted
        if code == 409 or body["status"] != "cancellation_request_sent":
            assert cancels == []
        await worker.credit()


async def _after(delay: float, work: Awaitable[_T]) -> _T:
    await asyncio.sleep(delay)
    return await work


async def _report_success(
    worker: RawWorker, task: TaskAssignment, round_: int
) -> tuple[ResultAck, list[CancelTask]]:
    """Send a success result; its ack, and any cancel that came before it."""
    await worker.send(ConnectRequest(result=success(task, {"round": round_})))
    cancels: list[CancelTask] = []
    while True:
        message = await worker.receive()
        assert message is not None, "the stream ended"
        if message.WhichOneof("kind") == "cancel":
            cancels.append(message.cancel)
            continue
        assert message.WhichOneof("kind") == "result_ack", message
        return message.result_ack, cancels
