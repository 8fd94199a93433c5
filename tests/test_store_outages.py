"""A Redis that hangs (issue 17, finding 3) and readiness (finding 10): every
request that needs the store answers 503 JSON / UNAVAILABLE within
``REDIS_COMMAND_TIMEOUT_SECONDS`` while redis-server is frozen with SIGSTOP
(connected, answering nothing), a write it refused is never applied when
Redis wakes up with it still in its socket, and the service recovers.
Readiness (``GET /_public/ready``, ``PublicService.GetReadiness``, the gRPC
health service) says not ready while the store does not answer; liveness
(``GET /_public/status``) answers throughout.

No assertion is about elapsed time: each request is only required to
return (the test's own timeout would catch one that hangs, as creation did,
for the whole outage)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import aiohttp
import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avtomatika.payload import to_payload
from avtomatika.storage.redis.keys import Keys
from avtomatika.v1 import job_service_pb2_grpc, public_service_pb2_grpc
from avtomatika.v1.job_service_pb2 import CreateJobRequest, GetJobRequest
from avtomatika.v1.public_service_pb2 import GetReadinessRequest, GetStatusRequest
from avtomatika.v1.worker_service_pb2 import ConnectRequest
from tests.support.blueprints import approval_blueprint, echo_blueprint
from tests.support.jobs import create_job, get_job, wait_for_status
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.support.raw_worker import RawWorker, success
from tests.support.redis import RedisServer
from tests.support.rest_worker import RestWorkers, heartbeat, registration
from tests.support.tokens import CLIENT_TOKEN
from tests.support.waiting import wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Short, so that the outage tests stay quick; the default is 3 s.
TIMEOUT = {"redis_command_timeout_seconds": 1}
CLIENT = (("x-client-token", CLIENT_TOKEN),)
KEYS = Keys("avtomatika")


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone: the test freezes, stops and
    restarts it (with an AOF, so a restart keeps what it had)."""
    server = RedisServer(persistent=True)
    server.start()
    yield server
    server.resume()  # a frozen server would not stop
    server.close()


@pytest.fixture
async def peek(private_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the test's Redis, to look at the keys afterwards."""
    client = aioredis.Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


async def answer(response: Awaitable[aiohttp.ClientResponse]) -> tuple[int, Any]:
    """The status and JSON body of a request."""
    async with await response as reply:
        return reply.status, await reply.json()


async def refused(response: Awaitable[aiohttp.ClientResponse]) -> str:
    """Assert a 503 JSON error; its message."""
    status, body = await answer(response)
    assert status == 503, body
    assert isinstance(body["error"], str), body
    assert body["error"], body
    return str(body["error"])


async def unavailable(call: Awaitable[Any]) -> str:
    """Assert a gRPC call ends UNAVAILABLE; its details."""
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
    return str(failed.value.details())


async def stream_end(worker: RawWorker) -> grpc.StatusCode:
    """Read ``worker``'s stream until it ends; the status it ended with."""
    try:
        while await worker.receive() is not None:
            pass
    except grpc.aio.AioRpcError as ended:
        return ended.code()
    code: grpc.StatusCode = await worker.call.code()
    return code


def text(value: bytes | str | None) -> str:
    """A reply of redis-py (bytes: it does not decode) as text."""
    return value.decode() if isinstance(value, bytes) else value or ""


async def consistent(peek: aioredis.Redis) -> dict[str, int]:
    """Assert the store's books agree with its records; the job count per
    status. Every job is counted once under its status and listed once in
    its client's index; every queued task is in its skill's queue."""
    jobs = [key async for key in peek.scan_iter(match=KEYS.job("*"))]
    by_status: dict[str, int] = {}
    for key in jobs:
        status = text(await peek.hget(key, "s"))
        by_status[status] = by_status.get(status, 0) + 1
    counted: dict[str, int] = {}
    for client in await peek.smembers(KEYS.clients):
        for k, n in (await peek.hgetall(KEYS.client_statuses(text(client)))).items():
            counted[text(k)] = counted.get(text(k), 0) + int(n)
    assert {s: n for s, n in counted.items() if n} == by_status
    indexes = [key async for key in peek.scan_iter(match=KEYS.client_jobs("*"))]
    assert sum([await peek.zcard(key) for key in indexes]) == len(jobs)
    queued = 0
    async for key in peek.scan_iter(match=KEYS.task("*")):
        queued += await peek.hget(key, "qm") is not None
    queues = [key async for key in peek.scan_iter(match=KEYS.queue("*"))]
    assert sum([await peek.zcard(key) for key in queues]) == queued
    return by_status


@pytest.mark.parametrize("outage", ["frozen", "killed"])
async def test_every_request_answers_503_while_redis_hangs_and_nothing_is_half_written(
    outage: str,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    rest_worker: RestWorkers,
    private_redis: RedisServer,
    peek: aioredis.Redis,
) -> None:
    """Finding 3: POST create blocked for the whole outage of a Redis stopped
    with SIGSTOP (GET answered 503 after 22 s). Now every operation of
    clients and workers, REST and gRPC, answers 503 / UNAVAILABLE within the
    command timeout; what they were refused is not applied when Redis
    resumes, and everything works again. The same when Redis is killed and
    restarted."""
    blueprints = [
        echo_blueprint(),
        approval_blueprint("review"),
        approval_blueprint("late", timeout=0.1),
    ]
    orchestrator = await start_orchestrator(blueprints, redis_url=private_redis.url, **TIMEOUT)
    http = http_client(orchestrator)
    channel = grpc_channel(orchestrator)
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    queued = await create_job(http, "jobs/echo")  # waits for a worker
    worker = rest_worker(orchestrator, "rest-1")
    await worker.register()
    leased = await create_job(http, "jobs/echo")
    task = await worker.next_task()
    assert task["job_id"] in (queued, leased)
    waiting = await create_job(http, "jobs/review")
    await wait_for_status(http, waiting, "waiting_for_human")
    failed = await create_job(http, "jobs/late")
    await wait_for_status(http, failed, "failed")
    streamed = RawWorker(channel, "grpc-1")
    await streamed.hello(["echo"])
    streamed_task = await streamed.next_task()
    idle = RawWorker(channel, "grpc-idle")
    await idle.hello(["nothing-queued"])
    before = await consistent(peek)
    jobs_before = {queued, leased, waiting, failed}

    down, up = {
        "frozen": (private_redis.pause, private_redis.resume),
        "killed": (private_redis.stop, private_redis.start),
    }[outage]
    down()
    creations = [
        http.post("/api/v1/jobs/echo", json={"initial_data": {"during": "outage"}}),
        http.post("/api/v1/jobs/review", json={"initial_data": {}}),
    ]
    client_calls = [
        http.get(f"/api/v1/jobs/{queued}"),
        http.get("/api/v1/jobs"),
        http.post(f"/api/v1/jobs/{queued}/cancel"),
        http.post(f"/api/v1/jobs/{failed}/retry", json={}),
        http.post(f"/api/v1/jobs/{waiting}/approve", json={"decision": "approved"}),
    ]
    other = rest_worker(orchestrator, "rest-2")
    worker_calls = [
        other.http.post("/_worker/workers/register", json=registration("rest-2")),
        worker.http.patch("/_worker/workers/rest-1", json=heartbeat("rest-1")),
        worker.http.get("/_worker/workers/rest-1/tasks/next"),
        worker.http.post("/_worker/tasks/result", json=result_of(task, "rest-1")),
    ]
    grpc_calls: list[Awaitable[Any]] = [
        jobs.CreateJob(
            CreateJobRequest(
                api_version="v1", endpoint="jobs/echo", initial_data=to_payload({"via": "grpc"})
            ),
            metadata=CLIENT,
        ),
        jobs.GetJob(GetJobRequest(job_id=queued), metadata=CLIENT),
    ]
    await streamed.send(ConnectRequest(result=success(streamed_task, {"late": True})))
    messages, streams = await asyncio.gather(
        asyncio.gather(
            *(refused(call) for call in [*creations, *client_calls, *worker_calls]),
            *(unavailable(call) for call in grpc_calls),
        ),
        # One's result was not saved; the other's hand-out could not be
        # claimed. Both workers reconnect (with backoff) and carry on.
        asyncio.gather(stream_end(streamed), stream_end(idle)),
    )
    assert all("Redis" in message for message in messages), messages
    assert list(streams) == [grpc.StatusCode.UNAVAILABLE] * 2
    # Liveness answers throughout.
    assert await answer(http.get("/_public/status")) == (200, {"status": "ok"})
    up()

    # Nothing refused was applied: the same jobs, in the same states, every
    # book in agreement with the records.
    await wait_until(lambda: ready(http), message="ready again")
    assert await consistent(peek) == before
    listed = await answer(http.get("/api/v1/jobs"))
    assert {job["id"] for job in listed[1]["jobs"]} == jobs_before, listed
    assert (await get_job(http, queued))["status"] == "waiting_for_worker"
    assert (await get_job(http, waiting))["status"] == "waiting_for_human"
    assert (await get_job(http, failed))["status"] == "failed"

    # And everything works again.
    await worker.report(task, data={"ok": True})
    finished = await wait_for_status(http, task["job_id"], "finished")
    assert finished["state_history"] == {"ok": True}
    approved = await answer(
        http.post(f"/api/v1/jobs/{waiting}/approve", json={"decision": "approved"})
    )
    assert approved[0] == 200, approved
    created = await create_job(http, "jobs/echo")
    assert (await get_job(http, created))["status"] in ("pending", "waiting_for_worker")
    await consistent(peek)


def result_of(task: dict[str, Any], worker_id: str) -> dict[str, Any]:
    """A REST worker's success result for ``task``."""
    return {"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": worker_id,
            "status": "success", "data": {"ok": True}, "error": None}  # fmt: skip


async def ready(http: aiohttp.ClientSession) -> bool:
    status, _ = await answer(http.get("/_public/ready"))
    return status == 200


async def test_readiness_says_not_ready_while_redis_hangs_or_is_down_and_ready_after(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    private_redis: RedisServer,
) -> None:
    """Finding 10: ``/_public/status`` said ok while Redis was down, so it
    could not serve as a readiness probe. ``/_public/ready``, gRPC
    ``GetReadiness`` and the gRPC health service follow the store, frozen
    (SIGSTOP) or dead; ``/_public/status`` stays liveness, 200 throughout."""
    orchestrator = await start_orchestrator(
        [echo_blueprint()], redis_url=private_redis.url, **TIMEOUT
    )
    http = http_client(orchestrator)
    channel = grpc_channel(orchestrator)
    public = public_service_pb2_grpc.PublicServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    watch = aiter(health.Watch(health_pb2.HealthCheckRequest(service="")))

    async def is_ready() -> None:
        assert await answer(http.get("/_public/ready")) == (200, {"status": "ready"})
        assert (await public.GetReadiness(GetReadinessRequest())).status == "ready"
        check = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert check.status == SERVING

    async def not_ready() -> bool:
        status, body = await answer(http.get("/_public/ready"))
        if status == 200:
            return False  # the last answer, kept for a second
        assert (status, body["status"]) == (503, "not_ready"), body
        assert "Redis" in body["error"], body
        return True

    async def alive() -> None:
        assert await answer(http.get("/_public/status")) == (200, {"status": "ok"})
        assert (await public.GetStatus(GetStatusRequest())).status == "ok"

    await is_ready()
    assert (await anext(watch)).status == SERVING
    for down, up in (
        (private_redis.pause, private_redis.resume),
        (private_redis.stop, private_redis.start),
    ):
        down()
        await alive()
        await wait_until(not_ready, message="readiness notices the outage")
        assert "Redis" in await unavailable(public.GetReadiness(GetReadinessRequest()))
        assert (await anext(watch)).status == NOT_SERVING
        checked = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert checked.status == NOT_SERVING
        await alive()
        up()
        assert (await anext(watch)).status == SERVING
        await wait_until(lambda: ready(http), message="ready again")
        await is_ready()
        await alive()


async def test_the_embedded_store_is_always_ready(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    """Finding 10, the embedded store: in the process, it cannot be away."""
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    public = public_service_pb2_grpc.PublicServiceStub(grpc_channel(orchestrator))
    for _ in range(3):  # answered at once, and from what was kept
        assert await answer(http.get("/_public/ready")) == (200, {"status": "ready"})
        assert (await public.GetReadiness(GetReadinessRequest())).status == "ready"
    # A probe only reads: any other method is refused as JSON.
    status, body = await answer(http.post("/_public/ready", json={}))
    assert status == 405, body
    assert "error" in body


async def test_a_probe_every_moment_costs_the_store_one_ping_a_second(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, private_redis: RedisServer
) -> None:
    """Readiness probes, however many, share one ping while an answer is
    fresh: counted on Redis' own books (INFO commandstats, ``time``)."""
    orchestrator = await start_orchestrator(
        [echo_blueprint()], redis_url=private_redis.url, **TIMEOUT
    )
    http = http_client(orchestrator)
    peek = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await ready(http)
        before = await pings(peek)
        assert all(await asyncio.gather(*(ready(http) for _ in range(50))))
        # The gRPC health service pings too (once a second); fifty probes
        # at once add at most the one renewing a stale answer.
        assert await pings(peek) - before <= 3
    finally:
        await peek.aclose()


async def pings(peek: aioredis.Redis) -> int:
    """How many ``TIME`` commands Redis has run (readiness pings with it)."""
    stats: dict[str, Any] = await peek.info("commandstats")
    return int(stats.get("cmdstat_time", {}).get("calls", 0))
