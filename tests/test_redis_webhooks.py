"""The webhook outbox in Redis: one send per webhook across instances, a
delivery that survives a restart of the orchestrator, a claim whose taker
died taken again by another instance, and deliveries accepted while Redis
is down written once it is back. The sending itself (bodies, signatures,
retries, the SSRF guard) is test_webhooks.py, which runs on Redis too with
AVTOMATIKA_TEST_STORE=redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from avtomatika import OrchestratorEngine
from avtomatika.engine.events import E, event
from avtomatika.history import open_sink
from avtomatika.storage.redis import Keys
from avtomatika.v1.job_pb2 import JOB_STATUS_FINISHED, Job
from avtomatika.webhooks.delivery import Delivery
from avtomatika.webhooks.redis_outbox import RedisOutbox
from tests.support.blueprints import instant_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator, make_settings
from tests.support.redis import RedisServer
from tests.support.webhooks import FAST_RETRIES, Receiver, create_job_with_webhook

LONG_LEASE = 60.0  # a claim that never lapses within a test


def a_delivery(job_id: str = "job-1") -> Delivery:
    job = Job(id=job_id, status=JOB_STATUS_FINISHED, webhook_url="http://127.0.0.1:9/hook")
    return Delivery(job, f"delivery-of-{job_id}")


async def opened(url: str, lease_seconds: float = LONG_LEASE) -> RedisOutbox:
    outbox = RedisOutbox(make_settings(redis_url=url), lease_seconds=lease_seconds)
    await outbox.open()
    return outbox


async def outbox_empty(raw: aioredis.Redis) -> None:
    """Wait until every delivery is settled and its keys are gone."""
    keys = Keys()
    while True:
        if not await raw.zcard(keys.outbox) and not await raw.keys(keys.delivery("*")):
            return
        await asyncio.sleep(0.01)


async def written(outbox: RedisOutbox, claimed: int) -> None:
    """Wait until what was put in ``outbox`` is in Redis (``claimed``: the
    deliveries it has taken and not settled)."""
    while True:
        if outbox.backlog == claimed:
            return
        await asyncio.sleep(0.01)


async def test_two_instances_send_each_webhook_once(
    redis_url: str,
    raw: aioredis.Redis,
    receiver: Receiver,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
) -> None:
    instances = [
        await start_orchestrator([instant_blueprint()], redis_url=redis_url, **FAST_RETRIES)
        for _ in range(2)
    ]
    created = []
    for i in range(20):
        http = http_client(instances[i % 2])
        created.append(await create_job_with_webhook(http, "jobs/instant", receiver.url))
    while len(receiver.requests) < len(created):
        await receiver.next()

    await outbox_empty(raw)

    sent = [request.json()["job_id"] for request in receiver.requests]
    assert sorted(sent) == sorted(created)  # each job once, none twice
    assert sum(instance.webhooks.delivered for instance in instances) == len(created)


async def test_a_delivery_survives_a_restart_of_the_orchestrator(
    redis_url: str,
    raw: aioredis.Redis,
    receiver: Receiver,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
) -> None:
    receiver.statuses = [503]
    settings = {
        "redis_url": redis_url,
        "webhook_allow_private": True,
        # The retry is due after the first instance has stopped.
        "webhook_backoff_base_seconds": 1.0,
    }
    first = await start_orchestrator([instant_blueprint()], **settings)
    job_id = await create_job_with_webhook(http_client(first), "jobs/instant", receiver.url)
    failed = await receiver.next()
    await first.stop()
    assert (first.webhooks.delivered, first.webhooks.failed) == (0, 0)  # kept, not given up

    second = await start_orchestrator([instant_blueprint()], **settings)
    delivered = await receiver.next()
    await outbox_empty(raw)

    assert delivered.json()["job_id"] == job_id
    delivery_id = delivered.headers["X-Avtomatika-Delivery"]
    assert failed.headers["X-Avtomatika-Delivery"] == delivery_id
    assert second.webhooks.delivered == 1
    await second.history.flush()
    sink = await open_sink(make_settings(redis_url=redis_url))
    try:
        outcomes = [
            e for e in await sink.list_for_job(job_id) if e.type != E.HISTORY_EVENT_TYPE_JOB_ENDED
        ]
    finally:
        await sink.close()
    assert [e.type for e in outcomes][-1] == E.HISTORY_EVENT_TYPE_WEBHOOK_DELIVERED
    assert "attempt 2" in outcomes[-1].message


async def test_a_claim_whose_taker_died_is_taken_again_once_its_lease_lapses(
    redis_url: str,
) -> None:
    crashed = await opened(redis_url, lease_seconds=0.2)
    other = await opened(redis_url)
    try:
        crashed.put(a_delivery())
        claimed = await crashed.take()
        assert claimed.attempts == 1
        # The taker dies: nothing settles or releases its claim.

        again = await other.take()

        assert (again.delivery_id, again.attempts) == (claimed.delivery_id, 2)
        assert again.job == claimed.job
    finally:
        await crashed.close([])
        await other.close([])


async def test_a_live_claim_is_not_taken_and_a_stopping_taker_releases_it(
    redis_url: str,
) -> None:
    stopping = await opened(redis_url)
    other = await opened(redis_url)
    try:
        stopping.put(a_delivery())
        claimed = await stopping.take()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.take(), 0.3)

        await stopping.close([claimed])  # an attempt the stop interrupted
        again = await other.take()

        assert (again.delivery_id, again.attempts) == (claimed.delivery_id, 2)
        await other.done(again)
    finally:
        await other.close([])


async def test_a_delivery_written_twice_is_one_and_keeps_its_claim(
    redis_url: str, raw: aioredis.Redis
) -> None:
    outbox = await opened(redis_url)
    try:
        delivery = a_delivery()
        outbox.put(delivery)
        claimed = await outbox.take()
        lease = await raw.zscore(Keys().outbox, delivery.delivery_id)
        outbox.put(a_delivery())  # the same job end, written again
        await written(outbox, claimed=1)

        assert await raw.zcard(Keys().outbox) == 1
        assert await raw.zscore(Keys().outbox, delivery.delivery_id) == lease
        assert await raw.hget(Keys().delivery(delivery.delivery_id), "a") == b"1"
        await outbox.done(claimed)
        assert await raw.exists(Keys().outbox, Keys().delivery(delivery.delivery_id)) == 0
    finally:
        await outbox.close([])


async def test_a_retry_is_due_after_its_backoff(redis_url: str, raw: aioredis.Redis) -> None:
    outbox = await opened(redis_url)
    try:
        outbox.put(a_delivery())
        claimed = await outbox.take()
        await outbox.retry(claimed, 3600)
        due = await raw.zscore(Keys().outbox, claimed.delivery_id)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(outbox.take(), 0.3)
        assert due is not None
    finally:
        await outbox.close([])


async def test_a_job_that_ends_while_redis_is_down_is_sent_once_it_is_back() -> None:
    server = RedisServer()
    server.start()
    outbox = await opened(server.url)
    try:
        server.stop()
        outbox.put(a_delivery("job-during-outage"))
        assert outbox.backlog == 1  # held here until Redis is back
        server.start()

        taken = await outbox.take()

        assert (taken.job.id, taken.attempts) == ("job-during-outage", 1)
        await outbox.done(taken)
    finally:
        await outbox.close([])
        server.close()


async def test_what_never_reached_redis_is_recorded_as_failed_at_stop(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, receiver: Receiver
) -> None:
    server = RedisServer()
    server.start()
    try:
        orchestrator: OrchestratorEngine = await start_orchestrator(
            [instant_blueprint()], redis_url=server.url, **FAST_RETRIES
        )
        webhooks = orchestrator.webhooks
        server.stop()
        # As the engine publishes a job's end once it is committed.
        job = a_delivery("job-unwritten").job
        job.webhook_url = receiver.url
        ended = event(E.HISTORY_EVENT_TYPE_JOB_ENDED, job, 1_000)
        orchestrator.engine.events.publish([ended])
        assert webhooks.queued == 1

        await orchestrator.stop()

        assert (webhooks.failed, webhooks.queued) == (1, 0)
        assert receiver.requests == []
    finally:
        server.close()
