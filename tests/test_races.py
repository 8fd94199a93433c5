"""Races on one job: a worker's result, the task's result timeout and a
client's cancel arriving together leave exactly one outcome, written once;
branch results arriving together run the aggregator once."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import pytest

from avtomatika import ActionFactory, OrchestratorEngine, StateMachineBlueprint
from avtomatika.status import TERMINAL
from avtomatika.storage import CommitOutcome, MemoryStorage
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.worker_service_pb2 import ConnectRequest, ResultAck, TaskAssignment
from tests.support import RawWorker, create_job, success, wait_for_status, wait_for_terminal
from tests.support.blueprints import fan_out_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator, make_settings

pytestmark = pytest.mark.both_stores


_T = TypeVar("_T")

ROUNDS = 30
RESULT_TIMEOUT = 0.05
# Milliseconds around the result deadline at which the result and the cancel
# are sent, varied round by round so that every ordering gets its turn.
OFFSETS_MS = (-4, -2, -1, 0, 1, 2, 4)


class RecordingStorage(MemoryStorage):
    """Memory storage that remembers the status of every committed write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: defaultdict[str, list[JobStatus.ValueType]] = defaultdict(list)

    async def commit(self, job: Job, **options: Any) -> CommitOutcome:
        outcome = await super().commit(job, **options)
        if outcome is CommitOutcome.OK:
            self.writes[job.id].append(job.status)
        return outcome


def timed_blueprint() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("timed", api_endpoint="jobs/timed", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task(
            "work", transitions={"success": "done"}, result_timeout_seconds=RESULT_TIMEOUT
        )

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


@asynccontextmanager
async def recorded_orchestrator(
    bp: StateMachineBlueprint,
) -> AsyncIterator[tuple[OrchestratorEngine, RecordingStorage]]:
    storage = RecordingStorage()
    orchestrator = OrchestratorEngine(storage, make_settings(), blueprints=[bp])
    await orchestrator.start()
    try:
        yield orchestrator, storage
    finally:
        await orchestrator.stop()


async def test_a_result_a_timeout_and_a_cancel_together_leave_one_outcome(
    http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    async with recorded_orchestrator(timed_blueprint()) as (orchestrator, storage):
        http = http_client(orchestrator)
        worker = RawWorker(grpc_channel(orchestrator), "w-1")
        await worker.hello(["work"])
        winners: list[str] = []
        job_ids = []

        for round_ in range(ROUNDS):
            job_id = await create_job(http, "jobs/timed")
            job_ids.append(job_id)
            task = await next_task(worker)
            assert task.job_id == job_id
            deadline = task.result_deadline_ms / 1000
            result_at = deadline + OFFSETS_MS[round_ % len(OFFSETS_MS)] / 1000
            cancel_at = deadline + OFFSETS_MS[(round_ // len(OFFSETS_MS)) % len(OFFSETS_MS)] / 1000

            ack, (code, body) = await asyncio.gather(
                at(result_at, report(worker, task, {"round": round_})),
                at(cancel_at, cancel(http, job_id)),
            )
            job = await wait_for_terminal(http, job_id)
            winners.append(check_one_outcome(job, ack, code, body, round_))
            await worker.credit()

        # A timer due after every one above: once it has fired, so have they.
        sentinel = await create_job(http, "jobs/timed")
        assert (await next_task(worker)).job_id == sentinel
        await wait_for_status(http, sentinel, "failed")

        for job_id in job_ids:
            writes = storage.writes[job_id]
            terminal = [n for n, status in enumerate(writes) if status in TERMINAL]
            assert terminal == [len(writes) - 1], (job_id, writes)
    # Not an assertion on timing: the outcomes only show the race was run.
    assert winners


def check_one_outcome(
    job: dict[str, Any], ack: ResultAck, code: int, body: dict[str, Any], round_: int
) -> str:
    """The job's end agrees with what each side was told; which side won."""
    status = job["status"]
    if status == "finished":  # the result won; the cancel came too late
        assert ack.accepted
        assert code == 409, body
        assert job["state_history"] == {"round": round_}
        return "result"
    if status == "failed":  # the timeout won
        assert "result timeout" in job["error"]
        assert not ack.accepted
        assert code == 409, body
        assert job["state_history"] == {}
        return "timeout"
    assert status == "cancelled", job
    assert code == 200, body
    if ack.accepted:
        # The result won, then the cancel landed before the end state ran.
        assert body["status"] == "cancellation_request_accepted"
        assert job["state_history"] == {"round": round_}
        return "result, then cancel"
    assert ack.reason in ("cancelled", "late"), ack
    assert job["state_history"] == {}
    return "cancel"


async def next_task(worker: RawWorker) -> TaskAssignment:
    """The next task, skipping cancel pushes for earlier rounds' tasks."""
    while True:
        message = await worker.receive()
        assert message is not None, "the stream ended"
        kind = message.WhichOneof("kind")
        if kind == "task":
            return message.task
        assert kind == "cancel", message


async def report(worker: RawWorker, task: TaskAssignment, data: Any) -> ResultAck:
    """Send a success result and return its ack, skipping cancel pushes."""
    await worker.send(ConnectRequest(result=success(task, data)))
    while True:
        message = await worker.receive()
        assert message is not None, "the stream ended"
        if message.WhichOneof("kind") == "result_ack":
            return message.result_ack
        assert message.WhichOneof("kind") == "cancel", message


async def cancel(http: aiohttp.ClientSession, job_id: str) -> tuple[int, dict[str, Any]]:
    response = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    return response.status, await response.json()


async def at(moment: float, work: Awaitable[_T]) -> _T:
    """Start ``work`` at wall-clock ``moment`` (to line it up with a deadline)."""
    await asyncio.sleep(max(moment - time.time(), 0))
    return await work


BRANCHES = 4


async def test_branch_results_arriving_together_run_the_aggregator_once(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    aggregated: dict[str, int] = {}
    bp = fan_out_blueprint(BRANCHES, aggregated=aggregated)

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    workers = [RawWorker(grpc_channel(orchestrator), f"w-{n}") for n in range(BRANCHES)]
    for worker in workers:
        await worker.hello(["work"])

    job_ids = []
    for _ in range(ROUNDS // 2):
        job_id = await create_job(http, "jobs/fan")
        job_ids.append(job_id)
        tasks = [await worker.next_task() for worker in workers]
        acks = await asyncio.gather(
            *(w.succeed(t, RawWorker.params(t)) for w, t in zip(workers, tasks, strict=True))
        )
        assert all(ack.result_ack.accepted for ack in acks)
        job = await wait_for_status(http, job_id, "finished")
        assert job["state_history"] == {"ns": list(range(BRANCHES))}
        for worker in workers:
            await worker.credit()

    assert aggregated == dict.fromkeys(job_ids, 1)
