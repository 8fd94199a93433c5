"""Job history in Redis (``REDIS_URL`` without ``HISTORY_DATABASE_URI``):
chosen by the settings, bounded per job, expiring once the job has ended,
listed in time order whichever instance wrote first, and retried through a
Redis outage without a duplicate. The contract shared with the other
backends is in test_history_sinks.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from avtomatika.engine.events import E, EventBus, JobEvent, event
from avtomatika.errors import ConfigError, Unavailable
from avtomatika.history import HistoryWriter, open_sink
from avtomatika.history.redis import RedisHistory
from avtomatika.storage.redis import Keys
from avtomatika.v1.history_pb2 import HistoryEvent, HistoryEventType
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint, instant_blueprint
from tests.support.net import free_port
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator, make_settings
from tests.support.redis import RedisServer

RETENTION_SECONDS = 3600.0


def made(
    kind: HistoryEventType.ValueType, job_id: str, at_ms: int, state: str = ""
) -> HistoryEvent:
    return event(kind, job_id, at_ms, state=state).event


def entered(job_id: str, at_ms: int, state: str) -> HistoryEvent:
    return made(E.HISTORY_EVENT_TYPE_STATE_ENTERED, job_id, at_ms, state)


@pytest.fixture
async def history(redis_url: str) -> AsyncIterator[RedisHistory]:
    settings = make_settings(
        redis_url=redis_url,
        history_memory_events_per_job=5,
        job_retention_seconds=RETENTION_SECONDS,
    )
    sink = await open_sink(settings)
    assert isinstance(sink, RedisHistory)
    yield sink
    await sink.close()


async def test_a_history_database_uri_wins_over_redis(redis_url: str, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/history.db"
    sink = await open_sink(make_settings(redis_url=redis_url, history_database_uri=uri))
    try:
        assert not isinstance(sink, RedisHistory)
    finally:
        await sink.close()


async def test_each_job_keeps_its_last_events_only(history: RedisHistory) -> None:
    first = [entered("job", 1_000 + i, f"s{i}") for i in range(4)]
    second = [entered("job", 2_000 + i, f"t{i}") for i in range(4)]
    await history.append(first)
    await history.append(second)

    kept = await history.list_for_job("job")

    assert [e.state for e in kept] == ["s3", "t0", "t1", "t2", "t3"]


async def test_events_are_listed_by_time_whichever_instance_wrote_first(
    history: RedisHistory,
) -> None:
    # Instance B's writer is ahead of A's: B's later events land first.
    from_a = [entered("job", 1_000, "a0"), entered("job", 1_000, "a1"), entered("job", 1_001, "a2")]
    from_b = [entered("job", 1_002, "b0"), entered("job", 1_002, "b1")]
    await history.append(from_b)
    await history.append(from_a[:1])  # one commit's events split across two batches
    await history.append(from_a[1:])

    assert [e.state for e in await history.list_for_job("job")] == ["a0", "a1", "a2", "b0", "b1"]


async def test_a_batch_that_comes_back_to_a_millisecond_keeps_its_order(
    redis_url: str,
) -> None:
    # The writer groups consecutive events of one millisecond; events of
    # several commits in one batch can come back to a millisecond, into a
    # set that is empty or not, and a batch may hold more events than one
    # Redis command is given at once.
    settings = make_settings(redis_url=redis_url, history_memory_events_per_job=5000)
    history = await RedisHistory.open(settings)
    try:
        await history.append(
            [entered("job", 1_000, "a0"), entered("job", 1_001, "b0"), entered("job", 1_000, "a1")]
        )
        await history.append(
            [entered("job", 1_001, "b1"), entered("job", 1_000, "a2"), entered("job", 1_001, "b2")]
        )
        many = [entered("many", 2_000 + n // 3, f"m{n}") for n in range(1500)]
        await history.append(many)

        assert [e.state for e in await history.list_for_job("job")] == [
            "a0", "a1", "a2", "b0", "b1", "b2",
        ]  # fmt: skip
        assert await history.list_for_job("many") == many
    finally:
        await history.close()


async def test_a_duplicate_inside_one_batch_is_kept_once(history: RedisHistory) -> None:
    one = entered("job", 1_000, "s")
    await history.append([one, one])
    assert await history.list_for_job("job") == [one]


async def test_an_ended_job_expires_and_a_running_one_does_not(
    history: RedisHistory, raw: aioredis.Redis
) -> None:
    keys = Keys()
    created = made(E.HISTORY_EVENT_TYPE_JOB_CREATED, "running", 1_000)
    await history.append([created, entered("running", 1_001, "s")])
    await history.append([made(E.HISTORY_EVENT_TYPE_JOB_CREATED, "ended", 1_000)])
    await history.append([made(E.HISTORY_EVENT_TYPE_JOB_ENDED, "ended", 2_000)])
    # A webhook's outcome for a job the storage has already forgotten.
    await history.append([made(E.HISTORY_EVENT_TYPE_WEBHOOK_FAILED, "forgotten", 3_000)])
    # Events without the job's start: the start was dropped, or the job forgotten.
    await history.append([entered("fragment", 4_000, "s")])

    assert await raw.pttl(keys.history("running")) == -1
    for job_id in ("ended", "forgotten", "fragment"):
        ttl = await raw.pttl(keys.history(job_id))
        assert 0 < ttl <= RETENTION_SECONDS * 1000, job_id


async def test_a_stopped_redis_is_unavailable_and_the_writer_retries_without_duplicates() -> None:
    server = RedisServer(persistent=True)
    server.start()
    try:
        settings = make_settings(redis_url=server.url)
        bus = EventBus()
        writer = HistoryWriter(bus, settings, retry_initial_seconds=0.01)
        await writer.start()
        try:
            before = [entered("job", 1_000 + i, f"s{i}") for i in range(3)]
            bus.publish([JobEvent(e, None) for e in before])
            await writer.flush()
            server.stop()
            with pytest.raises(Unavailable, match="Redis"):
                await writer.list_for_job("job")
            during = [entered("job", 2_000 + i, f"t{i}") for i in range(3)]
            bus.publish([JobEvent(e, None) for e in during])
            server.start()
            await writer.flush()

            assert await writer.list_for_job("job") == before + during
            assert writer.dropped == 0
        finally:
            await writer.stop()
    finally:
        server.close()


async def test_start_up_fails_clearly_when_redis_does_not_answer() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigError, match="cannot reach Redis at REDIS_URL"):
        await open_sink(make_settings(redis_url=url))


async def test_the_history_endpoint_reads_from_redis(
    redis_url: str,
    raw: aioredis.Redis,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], redis_url=redis_url)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    await worker.succeed(await worker.next_task(), {"ok": True})
    await wait_for_status(http, job_id, "finished")
    await orchestrator.history.flush()

    response = await http.get(f"/api/v1/jobs/{job_id}/history")
    listed = await response.json()

    assert response.status == 200, listed
    assert listed[0]["type"] == "job_created"
    assert listed[-1]["type"] == "job_ended"
    assert await raw.zcard(Keys().history(job_id)) == len(listed)


async def test_a_job_run_on_one_instance_has_its_history_read_on_another(
    redis_url: str, start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    a, b = [await start_orchestrator([instant_blueprint()], redis_url=redis_url) for _ in range(2)]
    job_id = await create_job(http_client(a), "jobs/instant")
    await wait_for_status(http_client(b), job_id, "finished")
    for instance in (a, b):  # whichever ran its steps has written their events
        await instance.history.flush()

    on_a = await (await http_client(a).get(f"/api/v1/jobs/{job_id}/history")).json()
    on_b = await (await http_client(b).get(f"/api/v1/jobs/{job_id}/history")).json()

    assert on_a == on_b
    types = [e["type"] for e in on_b]
    assert (types[0], types[-1]) == ("job_created", "job_ended")
