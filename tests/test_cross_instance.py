"""Two orchestrators on one real ``redis-server``, in this process: workers
connected to one are listed, cancelled, rescued and followed through the
other, over real gRPC streams, HTTP and WebSockets.

(``tests/test_cluster.py`` runs whole ``avtomatika serve`` processes under
load; this file pins down each cross-instance path on its own.)
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import redis.asyncio

from avtomatika import OrchestratorEngine
from avtomatika.cluster import Cluster
from avtomatika.cluster.relay import decode, encode
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import TaskState
from avtomatika.v1.worker_service_pb2 import ConnectRequest, Heartbeat, TaskAssignment, TaskProgress
from tests.support import RawWorker, create_job, get_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.follow import EventStream, followers_reach
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.support.redis import RedisServer
from tests.support.rest_worker import RestWorker
from tests.support.serve import serve_env, served
from tests.support.waiting import wait_until

# Short heartbeats: a worker is declared dead 3 x 0.5 s (+ grace) after it
# was last refreshed, so the tests of dead workers take seconds, not half a
# minute. (The raw test workers send no heartbeats: each is done with its
# stream well within 1.5 s.)
FAST = {"worker_heartbeat_interval_seconds": 0.5}

Pair = tuple[OrchestratorEngine, OrchestratorEngine]


@pytest.fixture
async def pair(
    start_orchestrator: StartOrchestrator, redis_url: str
) -> Callable[..., Awaitable[Pair]]:
    """Factory: instances A and B of one cluster (same blueprints, settings)."""

    async def start(**settings: Any) -> Pair:
        options = {**FAST, **settings, "redis_url": redis_url}
        a = await start_orchestrator([echo_blueprint()], instance_id="A", **options)
        b = await start_orchestrator([echo_blueprint()], instance_id="B", **options)
        return a, b

    return start


async def listed(http: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
    """``GET /api/v1/workers`` by worker id."""
    response = await http.get("/api/v1/workers")
    assert response.status == 200, await response.text()
    return {worker["worker_id"]: worker for worker in await response.json()}


async def until_listed(http: aiohttp.ClientSession, worker_id: str, present: bool = True) -> None:
    async def check() -> bool:
        return (worker_id in await listed(http)) is present

    await wait_until(check)


def cluster_of(orchestrator: OrchestratorEngine) -> Cluster:
    (cluster,) = (s for s in orchestrator.services if isinstance(s, Cluster))
    return cluster


# -- listing --


async def test_either_instance_lists_the_workers_of_both(
    pair: Callable[..., Awaitable[Pair]],
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    rest_worker: Any,
) -> None:
    a, b = await pair()
    streamed = RawWorker(grpc_channel(a), "on-a")
    await streamed.hello(["echo"])
    polling = rest_worker(b, "rest-on-b")
    await polling.register()

    for http in (http_client(a), http_client(b)):
        await until_listed(http, "on-a")
        await until_listed(http, "rest-on-b")
    workers = await listed(http_client(b))
    assert workers["on-a"]["transport"] == "grpc"
    assert workers["rest-on-b"]["transport"] == "rest"
    dashboard = await (await http_client(a).get("/api/v1/dashboard")).json()
    assert dashboard["workers_by_transport"] == {"grpc": 1, "rest": 1}

    # A worker that leaves (no grace: it held nothing) is gone from both.
    await streamed.close()
    for http in (http_client(a), http_client(b)):
        await until_listed(http, "on-a", present=False)


# -- cancels --


@dataclass
class RunningOnB:
    """A job created on A whose task a raw gRPC worker on B runs."""

    a: OrchestratorEngine
    b: OrchestratorEngine
    http_a: aiohttp.ClientSession
    worker: RawWorker
    job_id: str
    task: TaskAssignment


async def running_on_b(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> RunningOnB:
    a, b = await pair()
    http_a = http_client(a)
    worker = RawWorker(grpc_channel(b), "on-b")
    await worker.hello(["echo"])
    job_id = await create_job(http_a, "jobs/echo")
    task = await worker.next_task()
    await until_listed(http_a, "on-b")  # A knows where the worker is
    return RunningOnB(a, b, http_a, worker, job_id, task)


async def test_a_cancel_on_one_instance_reaches_a_grpc_worker_on_the_other(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    run = await running_on_b(pair, http_client, grpc_channel)
    b, http_a, worker, job_id, task = run.b, run.http_a, run.worker, run.job_id, run.task

    reply = await http_a.post(f"/api/v1/jobs/{job_id}/cancel")

    assert await reply.json() == {"status": "cancellation_request_sent"}
    cancel = (await worker.expect("cancel")).cancel
    assert (cancel.task_id, cancel.job_id) == (task.task_id, job_id)
    assert cancel.reason == "job cancelled by client"
    assert (await get_job(http_client(b), job_id))["status"] == "cancelled"


async def test_an_instance_that_stops_re_queues_its_workers_tasks_before_it_closes_the_store(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    # The worker hears Drain but keeps its stream open: the server cancels
    # the stream once the grace period is over, and the stream's clean-up,
    # which grpc runs after its stop returns, must still reach Redis.
    run = await running_on_b(pair, http_client, grpc_channel)

    await run.b.stop()

    job = await run.a.engine.storage.get_job(run.job_id)
    assert job is not None
    [task_id] = job.active_task_ids
    queued = await run.a.engine.storage.get_task(task_id)
    assert queued is not None
    assert queued.state == TaskState.TASK_STATE_QUEUED
    rescuer = RawWorker(grpc_channel(run.a), "rescuer")
    await rescuer.hello(["echo"])
    again = await rescuer.next_task()
    assert (again.job_id, again.attempt) == (run.job_id, 2)


async def test_a_cancel_sent_while_the_workers_instance_was_off_pub_sub_still_reaches_it(
    pair: Callable[..., Awaitable[Pair]],
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    redis_url: str,
) -> None:
    run = await running_on_b(pair, http_client, grpc_channel)
    http_a, worker, job_id, task = run.http_a, run.worker, run.job_id, run.task
    # Redis drops every subscription; B takes 0.1 s or more to subscribe
    # again, and A's cancel is published meanwhile, to nobody.
    async with redis.asyncio.Redis.from_url(redis_url) as client:
        assert await client.client_kill_filter(_type="pubsub") >= 2
    reply = await http_a.post(f"/api/v1/jobs/{job_id}/cancel")
    # Nobody heard it (unless B was quicker than this test): only accepted.
    status = (await reply.json())["status"]
    assert status in ("cancellation_request_accepted", "cancellation_request_sent")
    # Back on pub/sub, B looks for what it missed.
    cancel = (await worker.expect("cancel")).cancel
    assert (cancel.task_id, cancel.job_id) == (task.task_id, job_id)


async def test_a_cancel_on_one_instance_reaches_a_rest_workers_socket_on_the_other(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, rest_worker: Any
) -> None:
    a, b = await pair()
    http_a = http_client(a)
    worker = rest_worker(b, "socket-on-b")
    await worker.register()
    async with worker.http.ws_connect("/_worker/ws/socket-on-b") as ws:
        job_id = await create_job(http_a, "jobs/echo")
        task = await worker.next_task()
        # The socket's instance announced it: A forwards the cancel there.
        await wait_until(lambda: holder_is(a, "socket-on-b", b"B"))

        reply = await http_a.post(f"/api/v1/jobs/{job_id}/cancel")

        assert await reply.json() == {"status": "cancellation_request_sent"}
        assert await ws.receive_json() == {
            "command": "cancel_task",
            "task_id": task["task_id"],
            "job_id": job_id,
        }


async def holder_is(orchestrator: OrchestratorEngine, worker_id: str, value: bytes) -> bool:
    """Whether the worker's alive key holds ``value`` (an instance id)."""
    cluster = cluster_of(orchestrator)
    client = cluster._client
    keys = orchestrator.engine.storage.keys  # type: ignore[attr-defined]
    return bool(await client.get(keys.worker_alive(worker_id)) == value)


async def test_a_cancel_for_a_worker_connected_nowhere_is_only_accepted(
    pair: Callable[..., Awaitable[Pair]],
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    rest_worker: Any,
) -> None:
    # A REST worker without a socket: known to the cluster, connected nowhere.
    a, b = await pair(worker_reconnect_grace_seconds=60)
    http_a = http_client(a)
    polling = rest_worker(b, "no-socket")
    await polling.register()
    job_id = await create_job(http_a, "jobs/echo")
    task = await polling.next_task()
    await until_listed(http_a, "no-socket")
    reply = await http_a.post(f"/api/v1/jobs/{job_id}/cancel")
    assert await reply.json() == {"status": "cancellation_request_accepted"}
    # The heartbeat, on either instance, still tells it.
    beat = await rest_worker(a, "no-socket").beat(status="busy", current_tasks=[task["task_id"]])
    assert beat == {"status": "ok", "cancel_task_ids": [task["task_id"]]}

    # A gRPC worker in its grace period on B is not connected either.
    worker = RawWorker(grpc_channel(b), "in-grace")
    await worker.hello(["echo"])
    job_id = await create_job(http_a, "jobs/echo")
    await worker.next_task()
    await worker.close()
    await wait_until(lambda: holder_is(a, "in-grace", b"g:B"))
    reply = await http_a.post(f"/api/v1/jobs/{job_id}/cancel")
    assert await reply.json() == {"status": "cancellation_request_accepted"}


# -- followers --


async def test_a_wait_on_one_instance_returns_when_the_other_finishes_the_job(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    a, b = await pair(job_wait_max_seconds=60)
    http_a, http_b = http_client(a), http_client(b)
    worker = RawWorker(grpc_channel(a), "on-a")
    await worker.hello(["echo"])
    job_id = await create_job(http_a, "jobs/echo", {"x": 1})
    task = await worker.next_task()

    waiting = asyncio.ensure_future(http_b.get(f"/api/v1/jobs/{job_id}?wait=60"))
    await followers_reach(b, 1)
    assert (await worker.succeed(task, {"done": True})).result_ack.accepted

    response = await waiting
    assert response.status == 200
    assert (await response.json())["status"] in ("running", "finished")


async def test_the_event_stream_on_one_instance_follows_a_job_run_by_the_other(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    a, b = await pair()
    http_a, http_b = http_client(a), http_client(b)
    job_id = await create_job(http_a, "jobs/echo")
    await wait_for_status(http_a, job_id, "waiting_for_worker")
    stream = EventStream(await http_b.get(f"/api/v1/jobs/{job_id}/events"))
    first = await stream.next()
    assert first is not None
    assert first[1]["status"] == "waiting_for_worker"

    worker = RawWorker(grpc_channel(a), "on-a")
    await worker.hello(["echo"])
    task = await worker.next_task()
    progress = TaskProgress(task_id=task.task_id, job_id=job_id, progress=0.5, message="half")
    await worker.send(ConnectRequest(progress=progress))
    event = await stream.next()
    assert event is not None
    assert (event[1]["progress"], event[1]["progress_message"]) == (0.5, "half")
    await worker.succeed(task, {"ok": 1})
    while event is not None and event[1]["status"] != "finished":
        event = await stream.next()
    assert event is not None, "the stream ended before the job did"


# -- dead workers and reconnects --


async def moved_to_b(
    pair: Callable[..., Awaitable[Pair]],
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    credits: int = 1,
) -> tuple[
    OrchestratorEngine, OrchestratorEngine, aiohttp.ClientSession, str, TaskAssignment, RawWorker
]:
    """Worker "mover" leased a task through A, then its stream broke and it
    came back on B within a 0.3 s grace: (a, b, A's client, job id, task,
    the worker's stream on B)."""
    a, b = await pair(worker_reconnect_grace_seconds=0.3)
    http_a = http_client(a)
    first = RawWorker(grpc_channel(a), "mover")
    await first.hello(["echo"])
    job_id = await create_job(http_a, "jobs/echo")
    task = await first.next_task()
    await first.close()
    second = RawWorker(grpc_channel(b), "mover")
    await second.hello(["echo"], credits=credits)
    await wait_until(lambda: holder_is(a, "mover", b"B"))
    return a, b, http_a, job_id, task, second


async def test_a_worker_back_on_the_other_instance_within_its_grace_keeps_its_task(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    a, _, http_a, job_id, task, second = await moved_to_b(pair, http_client, grpc_channel)

    # A's grace period ends; the worker is B's now, so A re-queues nothing.
    await wait_until(lambda: no_entry(a, "mover"))
    await a.engine.workers.close()  # waits for A's release to have decided
    assert await a.engine.holds("mover", task.task_id)

    ack = await second.succeed(task, {"moved": True})
    assert ack.result_ack.accepted
    await wait_for_status(http_a, job_id, "finished")


async def test_a_second_stream_on_the_other_instance_replaces_the_first(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    # Heartbeats of 1 s: A's refresh (each second) comes well before it
    # would drop the silent raw worker (after 3 s).
    a, b = await pair(worker_reconnect_grace_seconds=60, worker_heartbeat_interval_seconds=1)
    first = RawWorker(grpc_channel(a), "twice")
    await first.hello(["echo"])
    job_id = await create_job(http_client(a), "jobs/echo")
    task = await first.next_task()
    await wait_until(lambda: holder_is(b, "twice", b"A"))
    second = RawWorker(grpc_channel(b), "twice")
    await second.hello(["echo"], credits=0)

    # A's next refresh finds B holding the worker: A's stream is drained
    # and ended, as a second stream on A itself would end it.
    drain = (await first.expect("drain")).drain
    assert "replaced" in drain.reason
    assert await first.receive() is None
    await wait_until(lambda: holder_is(a, "twice", b"B"))
    # The task stays the worker's, and its result counts through B.
    assert (await second.succeed(task, {"twice": True})).result_ack.accepted
    await wait_for_status(http_client(a), job_id, "finished")


async def rescued_on(
    b: OrchestratorEngine, grpc_channel: GrpcChannel, job_id: str, task: TaskAssignment
) -> tuple[RawWorker, TaskAssignment]:
    """Once B's sweep buried worker "doomed", a new worker on B gets its
    task again as attempt 2."""
    presence = cluster_of(b).presence
    assert presence is not None

    async def buried() -> bool:
        return "doomed" in presence.reaped

    await wait_until(buried)
    rescuer = RawWorker(grpc_channel(b), "rescuer")
    await rescuer.hello(["echo"])
    again = await rescuer.next_task()
    assert (again.job_id, again.attempt) == (job_id, 2)
    assert again.task_id != task.task_id
    return rescuer, again


async def no_entry(orchestrator: OrchestratorEngine, worker_id: str) -> bool:
    return orchestrator.engine.workers.info(worker_id) is None


async def test_a_worker_that_moved_and_left_gets_its_earlier_tasks_requeued(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    # Leased through A, the worker leaves B (which never handed it that
    # task): B finds the lease in shared storage and re-queues it.
    a, _, _, job_id, task, second = await moved_to_b(pair, http_client, grpc_channel, credits=0)
    await second.close()

    rescuer = RawWorker(grpc_channel(a), "rescuer")
    await rescuer.hello(["echo"])
    again = await rescuer.next_task()
    assert (again.job_id, again.attempt) == (job_id, 2)
    assert again.task_id != task.task_id


async def test_the_workers_of_a_vanished_instance_have_their_tasks_requeued_by_another(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    a, b = await pair(worker_reconnect_grace_seconds=0.2)
    http_b = http_client(b)
    doomed = RawWorker(grpc_channel(a), "doomed")
    await doomed.hello(["echo"])
    job_id = await create_job(http_b, "jobs/echo")
    task = await doomed.next_task()
    await until_listed(http_b, "doomed")

    # A dies without a word: its presence stops refreshing, nothing is
    # cleaned up, its registry never re-queues anything.
    await vanish(a)
    await rescued_on(b, grpc_channel, job_id, task)
    await until_listed(http_b, "doomed", present=False)


async def vanish(orchestrator: OrchestratorEngine) -> None:
    """Stop ``orchestrator``'s cluster loops as a killed process would: no
    last flush, no cleanup; its registry forgets its workers without
    telling anyone."""
    presence = cluster_of(orchestrator).presence
    assert presence is not None
    loops, presence._loops = presence._loops, []
    presence._running = False
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    registry = orchestrator.engine.workers
    registry._requeue = None
    registry.presence = _Deaf()


class _Deaf:
    """The presence of a dead instance: it says and does nothing."""

    def held(self, info: Any) -> None: ...
    def seen(self, info: Any) -> None: ...
    def away(self, worker_id: str, grace_seconds: float) -> None: ...
    def gone(self, worker_id: str) -> None: ...

    async def leases(self, worker_id: str) -> list[str]:
        return []

    async def may_release(self, worker_id: str) -> bool:
        return False

    async def forward_cancel(self, worker_id: str, task_id: str, job_id: str, reason: str) -> bool:
        return False

    async def workers(self, local: list[Any]) -> list[Any]:
        return local

    async def lookup(self, worker_id: str) -> Any:
        return None


# -- REST workers --


async def test_a_rest_worker_registered_on_one_instance_works_through_the_other(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, rest_worker: Any
) -> None:
    a, b = await pair()
    await rest_worker(a, "roamer").register()
    on_b: RestWorker = rest_worker(b, "roamer")
    await until_listed(http_client(b), "roamer")

    job_id = await create_job(http_client(a), "jobs/echo")
    task = await on_b.next_task()
    assert task["job_id"] == job_id
    assert await on_b.beat(status="busy", current_tasks=[task["task_id"]]) == {"status": "ok"}
    ping = await on_b.http.patch("/_worker/workers/roamer")
    assert await ping.json() == {"status": "ttl_refreshed"}
    assert (await on_b.report(task, data={"via": "B"}))["status"] == "accepted"
    await wait_for_status(http_client(a), job_id, "finished")

    # A heartbeat through A crossing that result (sent through B) does not
    # tell the worker to stop the task it finished.
    crossing = await rest_worker(a, "roamer").beat(current_tasks=[task["task_id"]])
    assert crossing == {"status": "ok"}

    # An id no instance knows is still unknown.
    unknown = await on_b.http.get("/_worker/workers/nobody/tasks/next")
    assert unknown.status == 404


async def test_a_rest_worker_alive_through_the_other_instance_is_not_reaped(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, rest_worker: Any
) -> None:
    # REST TTL 2 x 0.2 s. The worker registers and takes its task on A,
    # then only talks to B: A forgets it but leaves its task alone; once it
    # is silent everywhere its task goes back to the queue, once.
    a, b = await pair(worker_health_check_interval_seconds=0.2)
    on_a: RestWorker = rest_worker(a, "roamer")
    await on_a.register()
    job_id = await create_job(http_client(a), "jobs/echo")
    task = await on_a.next_task()
    on_b: RestWorker = rest_worker(b, "roamer")

    async def forgotten_by_a_while_beating_b() -> bool:
        await on_b.beat(status="busy", current_tasks=[task["task_id"]])
        return "roamer" not in a.polling_workers._workers

    await wait_until(forgotten_by_a_while_beating_b)
    assert await a.engine.holds("roamer", task["task_id"])
    assert (await on_b.report(task))["status"] == "accepted"
    await wait_for_status(http_client(a), job_id, "finished")

    # Now silent: the second job's task is re-queued once.
    second = await create_job(http_client(a), "jobs/echo")
    lost = await on_b.next_task()
    rescuer: RestWorker = rest_worker(a, "rescuer")
    await rescuer.register()
    again = await rescuer.next_task()
    assert (again["job_id"], again["task_id"] != lost["task_id"]) == (second, True)
    requeued = await b.engine.storage.get_task(again["task_id"])
    assert requeued is not None
    assert requeued.attempt == 2


async def test_a_rest_workers_long_poll_keeps_it_alive_for_every_instance(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, rest_worker: Any
) -> None:
    # The shared TTL (0.4 s) is shorter than a long poll (1.5 s): the poll
    # itself must keep refreshing it, or B would bury a worker that waits.
    a, b = await pair(worker_health_check_interval_seconds=0.2, worker_poll_timeout_seconds=1.5)
    worker: RestWorker = rest_worker(a, "patient")
    await worker.register()
    await create_job(http_client(a), "jobs/echo")
    task = await worker.next_task()

    assert await worker.poll() is None  # waited the whole poll: no task
    assert await a.engine.holds("patient", task["task_id"])
    presence = cluster_of(b).presence
    assert presence is not None
    assert "patient" not in presence.reaped


# -- what goes over the wire --


async def test_a_malformed_cancel_or_event_message_is_ignored(
    pair: Callable[..., Awaitable[Pair]], http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    a, b = await pair()
    cluster = cluster_of(a)
    client = cluster._client
    keys = a.engine.storage.keys  # type: ignore[attr-defined]
    for junk in (b"", b"w\n\xff\xff", b"\x00\x05B", b"\x00\x01C\x01\x00\x02jj\x00\x00\x00\x09x"):
        await client.publish(keys.cancel_channel, junk)
        await client.publish(keys.events_channel, junk)
    # Both instances still relay and forward.
    worker = RawWorker(grpc_channel(b), "after-junk")
    await worker.hello(["echo"])
    job_id = await create_job(http_client(a), "jobs/echo")
    await worker.next_task()
    await until_listed(http_client(a), "after-junk")
    reply = await http_client(a).post(f"/api/v1/jobs/{job_id}/cancel")
    assert await reply.json() == {"status": "cancellation_request_sent"}
    assert (await worker.expect("cancel")).cancel.job_id == job_id


# -- a real process killed --

ECHO_BLUEPRINT = """
from avtomatika import StateMachineBlueprint
from tests.support.waiting import wait_until

echo = StateMachineBlueprint("echo", api_endpoint="/jobs/echo", api_version="v1")

@echo.handler_for("start", is_start=True)
async def start(initial_data, actions):
    actions.dispatch_task("echo", params=initial_data, transitions={"success": "done"})

@echo.handler_for("done", is_end=True, outcome="finished")
async def done():
    return None
"""


async def test_a_worker_of_an_instance_killed_with_sigkill_has_its_task_requeued(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    redis_url: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "echo.py").write_text(ECHO_BLUEPRINT)
    env = serve_env(
        REDIS_URL=redis_url,
        INSTANCE_ID="A",
        BLUEPRINTS_DIR=str(tmp_path),
        WORKER_HEARTBEAT_INTERVAL_SECONDS="0.5",
        WORKER_RECONNECT_GRACE_SECONDS="0.2",
    )
    b = await start_orchestrator(
        [echo_blueprint()],
        redis_url=redis_url,
        instance_id="B",
        worker_heartbeat_interval_seconds=0.5,
        worker_reconnect_grace_seconds=0.2,
    )
    http_b = http_client(b)
    async with served(env=env) as a:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{a.grpc_port}")
        try:
            doomed = RawWorker(channel, "doomed")
            await doomed.hello(["echo"])
            job_id = await create_job(http_b, "jobs/echo", {"n": 1})
            task = await doomed.next_task()
            await until_listed(http_b, "doomed")
            await a.stop(signal.SIGKILL)
        finally:
            await channel.close(grace=None)

    rescuer, again = await rescued_on(b, grpc_channel, job_id, task)
    assert (await rescuer.succeed(again, {"rescued": True})).result_ack.accepted
    await wait_for_status(http_b, job_id, "finished")
    await until_listed(http_b, "doomed", present=False)


def test_relay_messages_round_trip_and_bad_ones_are_refused() -> None:
    job = Job(id="j1", version=3, current_state="done")
    data = encode("instance-A", [("j1", job), ("j2", None), ("j1", None)])
    assert decode(data) == ("instance-A", [("j1", job), ("j2", None), ("j1", None)])
    # Records of jobs nobody follows are skipped, not decoded.
    assert decode(data, lambda job_id: job_id == "j2") == ("instance-A", [("j2", None)])
    assert decode(encode("A", [])) == ("A", [])
    for bad in (
        b"",
        b"\x00",
        b"\x00\x01A\x07\x00\x01j",  # unknown kind
        b"\x00\x01A\x01\x00\x01j\x00\x00\x00\x09abc",  # truncated record
        b"\x00\x01A\x01\x00\x01j\x00\x00\x00\x02\xff\xff",  # not a Job
        b"\x00\x02\xff\xfe",  # origin not UTF-8
    ):
        with pytest.raises(ValueError, match=r"^malformed"):
            decode(bad)


async def test_presence_and_cancels_resume_after_redis_restarts_empty(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    server = RedisServer()  # not persistent: a restart loses every key
    server.start()
    try:
        # Heartbeats of 2 s: the raw worker's stream outlives the restart
        # (the test blocks the loop while redis-server stops and starts).
        options = {"worker_heartbeat_interval_seconds": 2, "redis_url": server.url}
        a = await start_orchestrator([echo_blueprint()], instance_id="A", **options)
        b = await start_orchestrator([echo_blueprint()], instance_id="B", **options)
        http_b = http_client(b)
        worker = RawWorker(grpc_channel(a), "survivor")
        await worker.hello(["echo"])
        await until_listed(http_b, "survivor")

        server.stop()
        down = await http_b.get("/api/v1/workers")
        assert down.status == 503
        assert "Redis" in (await down.json())["error"]
        server.start()

        # A writes the worker's presence again (the raw worker's heartbeats
        # keep its stream open meanwhile), and cancels reach it again.
        async def relisted() -> bool:
            await worker.send(ConnectRequest(heartbeat=Heartbeat()))
            return "survivor" in await listed(http_b)

        await wait_until(relisted)
        job_id = await create_job_when_redis_answers(http_b)
        task = await worker.next_task()
        reply = await http_b.post(f"/api/v1/jobs/{job_id}/cancel")
        assert await reply.json() == {"status": "cancellation_request_sent"}
        assert (await worker.expect("cancel")).cancel.task_id == task.task_id
    finally:
        server.close()


async def create_job_when_redis_answers(http: aiohttp.ClientSession) -> str:
    """Create an echo job, retrying while the store answers 503 (a pooled
    connection from before the restart may fail once)."""
    while True:
        response = await http.post("/api/v1/jobs/echo", json={"initial_data": {}})
        if response.status != 503:
            body = await response.json()
            assert response.status == 202, body
            return str(body["job_id"])
