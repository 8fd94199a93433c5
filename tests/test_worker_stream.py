"""``WorkerService.Connect``: authentication, the Hello handshake, credits as
flow control, dispatch order, and what happens to a task whose worker goes
away."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import grpc
import pytest

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.grpc.worker_stream import WorkerStreamService
from avtomatika.services.worker_api import WorkerApi
from avtomatika.v1 import task_pb2
from avtomatika.v1.task_pb2 import TaskResult
from avtomatika.v1.worker_pb2 import WorkerRegistration
from avtomatika.v1.worker_service_pb2 import (
    CancelAck,
    ConnectRequest,
    ConnectResponse,
    Credit,
    Hello,
    TaskProgress,
)
from tests.support import (
    CLIENT_TOKEN,
    WORKER_TOKEN,
    RawWorker,
    create_job,
    get_job,
    hello_request,
    wait_for,
    wait_for_status,
)
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator


def ranked_blueprint() -> StateMachineBlueprint:
    """Dispatches a ``ranked`` task at the priority given in initial_data."""
    bp = StateMachineBlueprint("ranked", api_endpoint="/jobs/ranked", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], priority: float, actions: ActionFactory) -> None:
        actions.dispatch_task(
            "ranked", params=initial_data, transitions={"success": "done"}, priority=priority
        )

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


# -- handshake --


@pytest.mark.parametrize("token", ["wrong-token", None])
async def test_a_bad_or_missing_token_is_unauthenticated(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, token: str | None
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = RawWorker(grpc_channel(orchestrator), "w-1", token=token)
    assert await worker.call.code() == grpc.StatusCode.UNAUTHENTICATED
    assert orchestrator.engine.workers.list() == []


async def test_the_first_message_must_be_a_hello(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.send(ConnectRequest(credit=Credit(credits=1)))
    assert await worker.call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Hello" in await worker.call.details()


@pytest.mark.parametrize(
    ("worker_id", "skills", "complaint"),
    [
        ("bad id!", ["echo"], "worker_id"),
        ("", ["echo"], "worker_id"),
        ("w-1", [], "skill"),
        ("w-1", ["echo", ""], "skill"),
        ("w" * 10_000, ["echo"], "at most 128 characters"),
        ("w-1", [f"s{n}" for n in range(257)], "at most 256 skills"),
        ("w-1", ["s" * 129], "at most 128 characters"),
    ],
)
async def test_a_bad_hello_is_an_invalid_argument(
    start_orchestrator: StartOrchestrator,
    grpc_channel: GrpcChannel,
    worker_id: str,
    skills: list[str],
    complaint: str,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = RawWorker(grpc_channel(orchestrator), worker_id)
    registration = WorkerRegistration(worker_id=worker_id, skills=skills)
    await worker.send(ConnectRequest(hello=Hello(registration=registration, initial_credits=1)))
    assert await worker.call.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = await worker.call.details()
    assert complaint in details
    assert len(details) < 200  # an oversized value is not echoed
    assert orchestrator.engine.workers.list() == []


async def test_the_welcome_names_the_worker_and_the_heartbeat_interval(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], worker_heartbeat_interval_seconds=2.5
    )
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    welcome = (await worker.hello(["echo"])).welcome
    assert (welcome.worker_id, welcome.heartbeat_interval_ms) == ("w-1", 2500)


# -- flow control and order --


async def test_a_worker_gets_no_more_tasks_than_its_credits(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    storage = orchestrator.engine.storage
    job_ids = [await create_job(http, "jobs/echo", {"n": n}) for n in range(3)]
    for job_id in job_ids:
        await wait_for_status(http, job_id, "waiting_for_worker")
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], credits=1)

    received = [await worker.next_task()]
    # A result is not a credit: the next message is its ack, not a task.
    assert (await worker.succeed(received[0], None)).result_ack.accepted
    assert await storage.queue_depths() == {"echo": 2}

    for remaining in (1, 0):
        await worker.credit()
        received.append(await worker.next_task())
        assert (await worker.succeed(received[-1], None)).result_ack.accepted
        assert await storage.queue_depths() == ({"echo": remaining} if remaining else {})

    assert [t.job_id for t in received] == job_ids
    for job_id in job_ids:
        await wait_for_status(http, job_id, "finished")


async def test_a_credit_sent_before_the_result_it_frees_still_brings_the_next_task(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    first = await create_job(http, "jobs/echo", {"n": 1})
    await wait_for_status(http, first, "waiting_for_worker")
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    task = await worker.next_task()

    # The credit first: the server looks for a task while the worker still
    # holds one, at its declared limit. Then the result frees it.
    await worker.credit()
    assert (await worker.succeed(task, None)).result_ack.accepted
    second = await create_job(http, "jobs/echo", {"n": 2})

    assert (await worker.next_task()).job_id == second
    await wait_for_status(http, first, "finished")


async def test_tasks_go_out_by_priority_then_first_queued_first(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([ranked_blueprint()])
    http = http_client(orchestrator)
    jobs = [("a", 0), ("b", 5), ("c", 0), ("d", 9), ("e", 5), ("f", 0)]
    for name, priority in jobs:
        job_id = await create_job(http, "jobs/ranked", {"name": name, "priority": priority})
        # One at a time, so that the queue order is the creation order.
        await wait_for_status(http, job_id, "waiting_for_worker")

    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["ranked"], credits=len(jobs))
    received = [RawWorker.params(await worker.next_task())["name"] for _ in jobs]

    assert received == ["d", "b", "e", "a", "c", "f"]


async def test_a_worker_only_gets_tasks_of_its_skills(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint(), ranked_blueprint()])
    http = http_client(orchestrator)
    echo_job = await create_job(http, "jobs/echo")
    await wait_for_status(http, echo_job, "waiting_for_worker")
    ranked_job = await create_job(http, "jobs/ranked", {"priority": 0})
    await wait_for_status(http, ranked_job, "waiting_for_worker")

    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["ranked"])

    assert (await worker.next_task()).job_id == ranked_job
    assert await orchestrator.engine.storage.queue_depths() == {"echo": 1}


# -- workers that go away --


async def test_a_task_held_by_a_worker_that_disconnects_goes_to_another_worker(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    leaver = RawWorker(grpc_channel(orchestrator), "leaver")
    await leaver.hello(["echo"])
    job_id = await create_job(http, "jobs/echo", {"frame": 7})
    first = await leaver.next_task()

    await leaver.close()
    assert await leaver.receive() is None  # the server ended the stream
    assert await leaver.call.code() == grpc.StatusCode.OK
    job = await get_job(http, job_id)
    assert (job["status"], job["retry_count"]) == ("waiting_for_worker", 1)

    taker = RawWorker(grpc_channel(orchestrator), "taker")
    await taker.hello(["echo"])
    second = await taker.next_task()
    assert (second.job_id, second.attempt) == (job_id, 2)
    assert second.task_id != first.task_id
    assert RawWorker.params(second) == {"frame": 7}
    assert (await taker.succeed(second, {"done_by": "taker"})).result_ack.accepted
    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"done_by": "taker"}


@pytest.mark.parametrize("mistake", ["rejected result", "unprompted cancel ack"])
async def test_a_worker_keeps_its_task_through_a_mistake_and_leaving_requeues_it(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    mistake: str,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    leaver = RawWorker(grpc_channel(orchestrator), "leaver")
    await leaver.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    task = await leaver.next_task()
    if mistake == "rejected result":
        bogus = await leaver.report(TaskResult(task_id=task.task_id, job_id="another-job"))
        assert not bogus.result_ack.accepted
    else:
        await leaver.send(ConnectRequest(cancel_ack=CancelAck(task_id=task.task_id)))

    # The lease still stands, so when the worker leaves the task is
    # re-queued rather than lost.
    await leaver.close()
    assert await leaver.receive() is None
    taker = RawWorker(grpc_channel(orchestrator), "taker")
    await taker.hello(["echo"])
    retry = await taker.next_task()
    assert (retry.job_id, retry.attempt) == (job_id, 2)


async def test_a_silent_worker_is_dropped_and_its_task_requeued(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], worker_heartbeat_interval_seconds=0.1
    )
    http = http_client(orchestrator)
    # The task is queued first, so the worker gets it with its Welcome,
    # before the server could give up on it.
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    silent = RawWorker(grpc_channel(orchestrator), "silent")
    await silent.hello(["echo"])
    await silent.next_task()

    # It never answers the server's heartbeats: the server ends its stream.
    assert await silent.receive() is None

    assert await orchestrator.engine.storage.queue_depths() == {"echo": 1}
    job = await get_job(http, job_id)
    assert (job["status"], job["retry_count"]) == ("waiting_for_worker", 1)
    assert orchestrator.engine.workers.list() == []


# -- the workers list --


async def test_the_workers_list_shows_grpc_workers_and_no_token(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], credits=3)

    response = await http.get("/api/v1/workers")
    text = await response.text()
    assert response.status == 200
    assert WORKER_TOKEN not in text
    assert CLIENT_TOKEN not in text
    workers = await response.json()
    assert [w["worker_id"] for w in workers] == ["w-1"]
    assert workers[0]["transport"] == "grpc"
    assert workers[0]["skills"] == ["echo"]
    assert workers[0]["resources"]["max_concurrent_tasks"] == 3
    assert not [key for key in _keys(workers) if "token" in key.lower()]

    await worker.close()
    assert await worker.receive() is None
    response = await http.get("/api/v1/workers")
    assert await response.json() == []


async def test_the_workers_list_gives_a_grpc_workers_supported_skills_as_registered(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    """1.0b13 clients read ``supported_skills``: the skills of the worker's
    hello, in their order, beside our ``skills``."""
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["transcode", "echo", "ocr"])

    (listed,) = await (await http_client(orchestrator).get("/api/v1/workers")).json()

    assert listed["supported_skills"] == listed["skills"] == ["transcode", "echo", "ocr"]
    await worker.close()


def _keys(value: Any) -> list[str]:
    """Every key of every object nested in ``value``."""
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in (key, *_keys(item))]
    if isinstance(value, list):
        return [k for item in value for k in _keys(item)]
    return []


async def test_progress_from_the_lease_holder_shows_on_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    task = await worker.next_task()

    progress = TaskProgress(task_id=task.task_id, job_id=job_id, progress=1.7, message="almost")
    await worker.send(ConnectRequest(progress=progress))

    job = await wait_for(http, job_id, lambda job: job["progress_message"] == "almost")
    assert (job["status"], job["progress"]) == ("waiting_for_worker", 1.0)  # clamped
    await worker.succeed(task, None)
    job = await wait_for_status(http, job_id, "finished")
    assert (job["progress"], job["progress_message"]) == (0.0, None)


class ServicerContext:
    """What ``Connect`` reads of its grpc.aio context: the metadata and the
    auth context."""

    def __init__(self, token: str) -> None:
        self._metadata = (("x-worker-token", token),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}  # a plaintext call: no client certificate

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"the stream was aborted: {code} {details}")


async def test_a_stream_grpc_closes_mid_write_lets_go_of_its_worker_at_once(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    silent = asyncio.Event()

    async def requests() -> AsyncIterator[ConnectRequest]:
        yield hello_request("w-1", ["echo"])
        await silent.wait()  # the worker says nothing more

    polling = WorkerApi(orchestrator.auth, orchestrator.polling_workers)
    service = WorkerStreamService(orchestrator.engine, orchestrator.auth, polling)
    stream = cast(
        AsyncGenerator[ConnectResponse, None],
        service.Connect(requests(), cast(Any, ServicerContext(WORKER_TOKEN))),
    )
    assert (await anext(stream)).WhichOneof("kind") == "welcome"
    await create_job(http, "jobs/echo")
    assigned = await anext(stream)
    assert assigned.WhichOneof("kind") == "task"
    # grpc gives the stream up while it writes the task (the worker died):
    # the worker is gone and its task back in the queue by the time the
    # stream is closed, not whenever the garbage collector gets to it.
    gc.disable()
    try:
        await stream.aclose()
        assert orchestrator.engine.workers.info("w-1") is None
        task = await orchestrator.engine.storage.get_task(assigned.task.task_id)
        assert task is not None
        assert task.state != task_pb2.TASK_STATE_LEASED
    finally:
        gc.enable()
