"""Batches on the worker stream: ``RequestBatch`` from workers (the Welcome
says the server reads them) and ``ResponseBatch`` to workers whose Hello
accepts them. A batch means exactly its messages, in order; workers that do
not ask for batches never get one."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from avtomatika.v1.worker_pb2 import WorkerRegistration
from avtomatika.v1.worker_service_pb2 import (
    ConnectRequest,
    ConnectResponse,
    Credit,
    Heartbeat,
    Hello,
    RequestBatch,
    TaskAssignment,
)
from tests.support import RawWorker, create_job, success, wait_for_status
from tests.support.blueprints import echo_blueprint, fan_out_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator


async def receive_flat(worker: RawWorker, count: int) -> tuple[list[ConnectResponse], int]:
    """The server's next ``count`` messages with batches opened, and how
    many batches carried them."""
    messages: list[ConnectResponse] = []
    batches = 0
    while len(messages) < count:
        message = await worker.receive()
        assert message is not None, "the stream ended"
        if message.WhichOneof("kind") == "batch":
            batches += 1
            messages.extend(
                m for m in message.batch.messages if m.WhichOneof("kind") != "heartbeat"
            )
        else:
            messages.append(message)
    return messages, batches


def batch(*messages: ConnectRequest) -> ConnectRequest:
    return ConnectRequest(batch=RequestBatch(messages=messages))


async def jobs_waiting(http: aiohttp.ClientSession, count: int) -> list[str]:
    """``count`` echo jobs, created in order, each waiting for a worker."""
    job_ids = [await create_job(http, "jobs/echo", {"n": n}) for n in range(count)]
    for job_id in job_ids:
        await wait_for_status(http, job_id, "waiting_for_worker")
    return job_ids


async def holding_tasks(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    *,
    jobs: int,
    credits: int,
) -> tuple[aiohttp.ClientSession, RawWorker, list[str], list[TaskAssignment]]:
    """An orchestrator with ``jobs`` echo jobs waiting for a worker: a client
    session to it, and worker w-1 (taking batches) holding the tasks of the
    first ``credits`` of them."""
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_ids = await jobs_waiting(http, jobs)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], credits, accepts_batches=True)
    messages, _ = await receive_flat(worker, credits)
    return http, worker, job_ids, [m.task for m in messages]


async def test_the_welcome_says_the_server_reads_batches(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    welcome = await worker.hello(["echo"], 1, accepts_batches=False)
    assert welcome.welcome.accepts_batches


async def test_results_and_credits_in_one_batch_are_handled_in_order(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    http, worker, job_ids, tasks = await holding_tasks(
        start_orchestrator, http_client, grpc_channel, jobs=4, credits=2
    )

    # Two results, a heartbeat and the two credits they free, as one message.
    await worker.send(
        batch(
            ConnectRequest(result=success(tasks[0], {"n": 0})),
            ConnectRequest(result=success(tasks[1], {"n": 1})),
            ConnectRequest(heartbeat=Heartbeat(sent_at_ms=1)),
            ConnectRequest(credit=Credit(credits=2)),
        )
    )
    after, _ = await receive_flat(worker, 4)
    acks = [m.result_ack for m in after if m.WhichOneof("kind") == "result_ack"]
    tasks += [m.task for m in after if m.WhichOneof("kind") == "task"]

    assert [(a.task_id, a.accepted) for a in acks] == [
        (tasks[0].task_id, True),
        (tasks[1].task_id, True),
    ]
    # The credits brought the two remaining tasks.
    assert sorted(t.job_id for t in tasks) == sorted(job_ids)
    for task in tasks[2:]:
        await worker.send(ConnectRequest(result=success(task, None)))
    await receive_flat(worker, 2)
    for job_id in job_ids:
        await wait_for_status(http, job_id, "finished")


async def test_a_worker_that_does_not_accept_batches_gets_every_message_alone(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_ids = await jobs_waiting(http, 3)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], 3, accepts_batches=False)
    tasks = [await worker.next_task() for _ in range(3)]

    # Its results may come batched; the three acks still come one by one.
    await worker.send(batch(*(ConnectRequest(result=success(t, None)) for t in tasks)))
    acks = [(await worker.expect("result_ack")).result_ack for _ in tasks]

    assert [a.task_id for a in acks] == [t.task_id for t in tasks]
    for job_id in job_ids:
        await wait_for_status(http, job_id, "finished")


async def test_a_worker_that_accepts_batches_gets_what_was_queued_together(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    http, worker, job_ids, tasks = await holding_tasks(
        start_orchestrator, http_client, grpc_channel, jobs=5, credits=5
    )
    assert sorted(t.job_id for t in tasks) == sorted(job_ids)

    await worker.send(batch(*(ConnectRequest(result=success(t, None)) for t in tasks)))
    acks, batches = await receive_flat(worker, 5)

    # Acks in the order of the results, fewer stream messages than acks.
    assert [a.result_ack.task_id for a in acks] == [t.task_id for t in tasks]
    assert batches >= 1
    for job_id in job_ids:
        await wait_for_status(http, job_id, "finished")


async def test_a_hello_or_a_batch_inside_a_batch_is_skipped_and_the_stream_goes_on(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo", {"n": 1})
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], 1, accepts_batches=False)
    task = await worker.next_task()
    result = ConnectRequest(result=success(task, None))
    intruders = (
        ConnectRequest(hello=Hello(registration=WorkerRegistration(worker_id="w-2"))),
        batch(result),  # nested: skipped, so the result counts once
    )

    await worker.send(batch(*intruders, result))
    ack = (await worker.expect("result_ack")).result_ack

    assert ack.accepted
    await wait_for_status(http, job_id, "finished")
    assert [w.registration.worker_id for w in orchestrator.engine.workers.list()] == ["w-1"]
    # Nothing else came back: the next message is the answer to this credit's task.
    await worker.credit()
    follow_up = await create_job(http, "jobs/echo", {"n": 2})
    assert (await worker.next_task()).job_id == follow_up


async def test_results_between_credits_are_acked_in_order_and_a_repeat_is_late(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    http, worker, job_ids, tasks = await holding_tasks(
        start_orchestrator, http_client, grpc_channel, jobs=3, credits=3
    )
    # As the SDK sends them: each result followed by the credit it frees;
    # the first result comes twice (a retry after a reconnect, say).
    reported = [tasks[0], tasks[1], tasks[0], tasks[2]]
    messages = []
    for n, task in enumerate(reported):
        messages.append(ConnectRequest(result=success(task, {"n": n})))
        if n != 2:  # the repeat frees no slot
            messages.append(ConnectRequest(credit=Credit(credits=1)))
    await worker.send(batch(*messages))

    acks, _ = await receive_flat(worker, 4)

    assert [(a.result_ack.task_id, a.result_ack.accepted) for a in acks] == [
        (tasks[0].task_id, True),
        (tasks[1].task_id, True),
        (tasks[0].task_id, False),
        (tasks[2].task_id, True),
    ]
    assert acks[2].result_ack.reason == "late"
    for job_id in job_ids:
        await wait_for_status(http, job_id, "finished")


async def test_the_results_of_one_fan_out_in_one_batch_are_all_accepted(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    # Six branches of one job, reported together: they all change the same
    # job, so they are settled in turn rather than racing for its version.
    bp = fan_out_blueprint(6, task_type="echo")

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/fan", {})
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], 6, accepts_batches=True)
    tasks = [m.task for m in (await receive_flat(worker, 6))[0]]

    results = [ConnectRequest(result=success(task, {"n": n})) for n, task in enumerate(tasks)]
    await worker.send(batch(*results))
    acks, _ = await receive_flat(worker, 6)

    assert [(a.result_ack.task_id, a.result_ack.accepted) for a in acks] == [
        (t.task_id, True) for t in tasks
    ]
    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"]["ns"] == list(range(6))


async def test_results_that_arrive_while_one_is_settled_are_settled_together(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker that sends each result in a message of its own: the stream
    # reads on while the first is settled, and the rest settle as one batch
    # (concurrently, their store calls sharing round trips), not one by one.
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_ids = [await create_job(http, "jobs/echo", {"n": n}) for n in range(4)]
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], 4, accepts_batches=True)
    tasks = [m.task for m in (await receive_flat(worker, 4))[0]]

    engine, storage = orchestrator.engine, orchestrator.engine.storage
    reads, touch = storage.get_task_and_job, engine.workers.touch
    first_read, release, all_read = asyncio.Event(), asyncio.Event(), asyncio.Event()
    received, in_flight, most_in_flight = 0, 0, 0

    async def first_read_waits(*args: Any) -> Any:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        try:
            if not first_read.is_set():
                first_read.set()
                await release.wait()
            await asyncio.sleep(0)  # a read that suspends, as over a network
            return await reads(*args)
        finally:
            in_flight -= 1

    def counted_touch(worker_id: str) -> None:
        nonlocal received
        received += 1
        if received == len(tasks):
            all_read.set()
        touch(worker_id)

    monkeypatch.setattr(storage, "get_task_and_job", first_read_waits)
    monkeypatch.setattr(engine.workers, "touch", counted_touch)
    await worker.send(ConnectRequest(result=success(tasks[0], {"n": 0})))
    await first_read.wait()
    for n, task in enumerate(tasks[1:], start=1):
        await worker.send(ConnectRequest(result=success(task, {"n": n})))
    await all_read.wait()  # the server read them while the first waits
    release.set()
    acks, _ = await receive_flat(worker, 4)

    assert [(a.result_ack.task_id, a.result_ack.accepted) for a in acks] == [
        (t.task_id, True) for t in tasks
    ]
    assert most_in_flight == len(tasks) - 1
    for job_id in job_ids:
        await wait_for_status(http, job_id, "finished")


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_backlog_reaches_a_worker_in_one_claim_and_in_order(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    request: pytest.FixtureRequest,
    store: str,
) -> None:
    # Five tasks queued before the worker comes, and credits for four: one
    # claim leases four, first queued first, and they go out in one message;
    # the fifth comes once a result frees a slot.
    settings = {"redis_url": request.getfixturevalue("redis_url")} if store == "redis" else {}
    orchestrator = await start_orchestrator([echo_blueprint()], **settings)
    http = http_client(orchestrator)
    job_ids = await jobs_waiting(http, 5)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], 4, accepts_batches=True)

    messages, batches = await receive_flat(worker, 4)

    assert [m.task.job_id for m in messages] == job_ids[:4]
    assert batches == 1
    await worker.send(
        batch(
            ConnectRequest(result=success(messages[0].task, None)),
            ConnectRequest(credit=Credit(credits=1)),
        )
    )
    after, _ = await receive_flat(worker, 2)
    assert [m.WhichOneof("kind") for m in after] == ["result_ack", "task"]
    assert after[1].task.job_id == job_ids[4]


async def test_one_claim_leases_at_most_64_tasks_whatever_the_credits(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A claim is one script, holding Redis for every instance while it runs:
    # a worker granting a thousand credits does not make it a thousand long.
    orchestrator = await start_orchestrator([echo_blueprint()])
    storage = orchestrator.engine.storage
    claims, asked = storage.claim_tasks, []

    async def noted(worker: Any, timeout: float | None, limit: int = 1) -> Any:
        asked.append(limit)
        return await claims(worker, timeout, limit)

    monkeypatch.setattr(storage, "claim_tasks", noted)
    job_ids = await jobs_waiting(http_client(orchestrator), 3)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], 1000, accepts_batches=True)
    messages, _ = await receive_flat(worker, 3)

    assert sorted(m.task.job_id for m in messages) == sorted(job_ids)
    assert asked[0] == 64
