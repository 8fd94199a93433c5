"""What only a shared store has to get right, on a real redis-server: two
instances (two RedisStorage objects, as two processes would have) sharing one
Redis; steps of a dead instance run elsewhere; timers fire once; retention;
outages."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from avtomatika.clock import now_ms
from avtomatika.config import Settings
from avtomatika.dispatch import WorkerProfile
from avtomatika.engine.tasks import new_id
from avtomatika.errors import ConfigError, Unavailable
from avtomatika.storage.base import CommitOutcome, Expiry
from avtomatika.storage.redis import scripts
from avtomatika.storage.redis.keys import Keys
from avtomatika.storage.redis.storage import RedisStorage
from avtomatika.v1 import job_pb2, task_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task
from tests.support import cancelled, claim_one
from tests.support.net import free_port, wire_tap
from tests.support.redis import RedisServer
from tests.support.storage import (
    Dropping,
    OpenStorage,
    ReplyDropper,
    commit_status,
    finish_claimed,
    new_job,
    parked,
    queued,
)
from tests.support.waiting import wait_until


async def a_step_taken_on_a(open_storage: OpenStorage) -> tuple[RedisStorage, RedisStorage, Job]:
    """Instances A and B with short step claims, and a job whose step A took."""
    a = await open_storage(step_lease_seconds=0.3)
    b = await open_storage(step_lease_seconds=0.3)
    job = Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_PENDING)
    await a.create_job(job)
    assert await a.next_ready_job() == job.id
    return a, b, job


async def expiries(storage: RedisStorage, seconds: float) -> list[Expiry]:
    """Every deadline ``storage`` fires within ``seconds``."""
    fired: list[Expiry] = []

    async def collect() -> None:
        while True:
            fired.append(await storage.next_expiry())

    collector = asyncio.create_task(collect())
    await asyncio.sleep(seconds)
    collector.cancel()
    return fired


async def test_the_lua_scripts_and_python_name_every_key_alike(open_storage: OpenStorage) -> None:
    storage = await open_storage()
    keys = storage.keys
    script = storage.client.register_script(
        keys.lua_prelude()
        + "return {K.job('j'), K.task('t'), K.queue('s'), K.constrained('s'), K.history('j'),"
        + " K.job_tasks('j'), K.worker_leases('w'), K.ready, K.timers, K.wake_channel}"
    )
    names = await script(keys=[keys.root], client=storage.client)
    assert [n.decode() for n in names] == [
        keys.job("j"),
        keys.task("t"),
        keys.queue("s"),
        keys.constrained("s"),
        keys.history("j"),
        keys.job_tasks("j"),
        keys.worker_leases("w"),
        keys.ready,
        keys.timers,
        keys.wake_channel,
    ]
    assert all(name.startswith("{avtomatika}:") for name in [keys.job("j"), keys.ready])


@pytest.mark.parametrize("name", ["COMMIT", "CLAIM"])
def test_a_script_binds_each_argument_to_a_name_nothing_else_declares(name: str) -> None:
    # COMMIT and CLAIM read their ARGV as Lua locals named after the fields
    # the Python side fills (CommitArgs, ClaimArgs, ...). A field named like
    # a library function (lease, wake) or another local of the script would
    # hide it, or be hidden, and the script would misbehave only on the
    # path that uses it.
    lua = scripts.source(Keys(), getattr(scripts, name))
    bound = re.findall(r"^ *local ([\w, ]+) = (?:\{)?unpack\(ARGV", lua, re.MULTILINE)
    arguments = [n for names in bound for n in names.split(", ")]
    declared = re.findall(r"^ *local (?:function )?([\w, ]+?)(?: =|\(|$)", lua, re.MULTILINE)
    others = [n for names in declared for n in names.split(", ")]
    assert len(arguments) > 3
    assert len(set(arguments)) == len(arguments)
    assert all(others.count(argument) == 1 for argument in arguments), others


async def test_a_task_queued_on_one_instance_wakes_a_worker_waiting_on_another(
    open_storage: OpenStorage,
) -> None:
    a, b = await open_storage(), await open_storage()
    claim = await parked(b, "w-b")
    job = await new_job(a)
    task = queued(job)
    assert await a.commit(job, expected_version=job.version, tasks=[task]) is CommitOutcome.OK

    claimed = await claim
    assert claimed is not None
    assert (claimed.task_id, claimed.worker_id) == (task.task_id, "w-b")
    assert await a.leased_to("w-b") == [task.task_id]
    stored = await a.get_task(task.task_id)
    assert stored is not None
    assert stored.state == task_pb2.TASK_STATE_LEASED


async def test_the_step_of_an_instance_that_died_runs_on_another(
    open_storage: OpenStorage,
) -> None:
    a, b, job = await a_step_taken_on_a(open_storage)
    await a.close()  # dies mid-step: its claim on the step is never released

    timers = asyncio.create_task(expiries(b, 2.0))
    again = await asyncio.wait_for(b.next_ready_job(), 5)
    timers.cancel()
    assert again == job.id


async def test_a_running_step_keeps_its_claim_while_it_runs(open_storage: OpenStorage) -> None:
    a, b, job = await a_step_taken_on_a(open_storage)
    # A slow handler: three leases long. A renews its claim meanwhile, so B,
    # firing timers all along, never gets the job.
    timers = asyncio.create_task(expiries(b, 1.0))
    taken = asyncio.create_task(b.next_ready_job())
    await timers
    assert not taken.done()
    taken.cancel()
    await a.step_done(job.id)


async def test_a_deadline_fires_on_exactly_one_of_two_instances(
    open_storage: OpenStorage,
) -> None:
    a, b = await open_storage(), await open_storage()
    job = await new_job(a)
    task = queued(job, dispatch_deadline_ms=_in_ms(100))
    assert await a.commit(job, expected_version=job.version, tasks=[task]) is CommitOutcome.OK

    fired_a, fired_b = await asyncio.gather(expiries(a, 0.6), expiries(b, 0.6))
    assert fired_a + fired_b == [Expiry(task_id=task.task_id, kind="dispatch")]


async def test_a_scheduled_retry_enters_its_queue_when_due(open_storage: OpenStorage) -> None:
    storage = await open_storage()
    job = await new_job(storage)
    task = queued(job, not_before_ms=_in_ms(150))
    task.state = task_pb2.TASK_STATE_SCHEDULED
    await storage.commit(job, expected_version=job.version, tasks=[task])
    worker = WorkerProfile("w", ("x",))
    assert await claim_one(storage, worker, 0.01) is None

    timers = asyncio.create_task(expiries(storage, 2.0))
    claimed = await claim_one(storage, worker, 5)
    timers.cancel()
    assert claimed is not None
    assert claimed.task_id == task.task_id


async def test_ended_jobs_are_forgotten_after_the_retention_time(
    open_storage: OpenStorage, redis_server: RedisServer
) -> None:
    storage = await open_storage(job_retention_seconds=0.2)
    job = await new_job(storage)
    task = queued(job)
    await storage.commit(job, expected_version=job.version, tasks=[task])
    await finish_claimed(storage, job.id)
    await storage.client.zadd(storage.keys.history(job.id), {b"event": 1})
    assert await storage.count_jobs() == {job_pb2.JOB_STATUS_FINISHED: 1}

    await expiries(storage, 0.5)

    assert await storage.get_job(job.id) is None
    assert await storage.get_task(task.task_id) is None
    assert await storage.count_jobs() == {}
    # What is left are counters and indexes of fixed size, and keys that
    # expire on their own (a claim's nonce); nothing per job stays.
    keys = Keys()
    left = {k.decode() for k in await storage.client.keys("*")}
    lasting = {k for k in left if await storage.client.pttl(k) < 0}
    assert lasting <= {keys.sequence, keys.skills}, lasting


async def test_requests_get_unavailable_while_redis_is_down_and_work_resumes_after() -> None:
    server = RedisServer(persistent=True)
    server.start()
    storage = RedisStorage(Settings(redis_url=server.url, redis_command_timeout_seconds=1))
    try:
        await storage.open()
        job = await new_job(storage)
        claim = await parked(storage, "w", timeout=30)
        server.stop()

        with pytest.raises(Unavailable, match="Redis"):
            await storage.get_job(job.id)
        with pytest.raises(Unavailable):
            await storage.commit(job, expected_version=job.version, tasks=[queued(job)])
        # A waiting claim fails too, at its next look (issue 17, finding 3):
        # a worker's poll answers 503 and its stream ends UNAVAILABLE,
        # instead of hanging through the outage.
        with pytest.raises(Unavailable, match="cannot claim a task"):
            await claim

        server.start()
        task = queued(job)
        assert await storage.commit(job, expected_version=job.version, tasks=[task]) is (
            CommitOutcome.OK
        )
        claimed = await claim_one(storage, WorkerProfile("w", ("x",)), 10)
        assert claimed is not None
        assert claimed.task_id == task.task_id
    finally:
        await storage.close()
        server.close()


async def test_start_up_fails_naming_the_url_when_redis_is_unreachable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    storage = RedisStorage(Settings(redis_url=url))
    with pytest.raises(ConfigError, match=f"cannot reach Redis at REDIS_URL {url}"):
        await storage.open()


def test_keys_of_another_prefix_do_not_collide() -> None:
    assert Keys("a").job("1") != Keys("b").job("1")
    with pytest.raises(Exception, match="REDIS_PREFIX"):
        Settings(redis_url="redis://x", redis_prefix="bad prefix")
    with pytest.raises(Exception, match="REDIS_URL"):
        Settings(redis_url="http://x")


def _in_ms(delay: int) -> int:
    return now_ms() + delay


async def test_a_finished_step_does_not_release_the_claim_another_instance_took_since(
    open_storage: OpenStorage,
) -> None:
    a, b, job = await a_step_taken_on_a(open_storage)
    # A's step ends with a transition: the job is ready again, and B takes
    # the next step before A's executor says its step is done.
    running = job_pb2.JOB_STATUS_RUNNING
    assert await commit_status(a, job.id, running, ready=True) is CommitOutcome.OK
    assert await b.next_ready_job() == job.id
    await a.step_done(job.id)
    assert await a.client.zscore(a.keys.running, job.id) is not None  # still B's

    await b.close()  # B dies mid-step: its claim lapses and the step comes back
    timers = asyncio.create_task(expiries(a, 3.0))
    assert await asyncio.wait_for(a.next_ready_job(), 5) == job.id
    timers.cancel()


async def test_a_claim_or_commit_whose_reply_was_lost_is_recognised_when_retried(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    redis_server.flush()
    proxy = ReplyDropper(redis_server.port)
    await proxy.start()
    storage = await open_storage(f"redis://127.0.0.1:{proxy.port}/0")
    try:
        job = await new_job(storage)
        first, second = queued(job), queued(job)
        assert await storage.commit(job, expected_version=job.version, tasks=[first, second]) is (
            CommitOutcome.OK
        )
        # The claim's reply is lost and the claim retried: the worker gets the
        # task the first try leased, and no second one is leased behind its back.
        proxy.armed = True
        claimed = await claim_one(storage, WorkerProfile("w", ("x",)), 5)
        assert proxy.dropped == 1
        assert claimed is not None
        assert claimed.task_id == first.task_id
        assert await storage.leased_to("w") == [first.task_id]

        # A commit whose reply is lost was applied: its retry says OK, not
        # CONFLICT (the engine would otherwise skip what follows an end).
        current = await storage.get_job(job.id)
        assert current is not None
        current.status = job_pb2.JOB_STATUS_FINISHED
        proxy.armed = True
        assert await storage.commit(current, expected_version=current.version) is (CommitOutcome.OK)
        assert proxy.dropped == 2
        stored = await storage.get_job(job.id)
        assert stored is not None
        assert (stored.status, stored.version) == (job_pb2.JOB_STATUS_FINISHED, 3)

        # So is a commit that created a job: its retry finds it, made by itself.
        fresh = Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_RUNNING)
        proxy.armed = True
        assert await storage.commit(fresh, expected_version=0) is CommitOutcome.OK
        assert proxy.dropped == 3
        created = await storage.get_job(fresh.id)
        assert created is not None
        assert created.version == 1
    finally:
        await proxy.stop()


async def test_a_batch_claim_whose_reply_was_lost_gets_every_task_it_leased(
    dropping: Dropping,
) -> None:
    job = await new_job(dropping.a)
    tasks = [queued(job) for _ in range(4)]
    assert await dropping.a.commit(job, expected_version=job.version, tasks=tasks) is (
        CommitOutcome.OK
    )
    dropping.proxy.armed = True

    claimed = await dropping.a.claim_tasks(WorkerProfile("w", ("x",)), 5, limit=3)

    # The retry answers with the three the lost attempt leased, and leases
    # no others behind the worker's back.
    assert dropping.proxy.dropped == 1
    assert [t.task_id for t in claimed] == [t.task_id for t in tasks[:3]]
    assert sorted(await dropping.b.leased_to("w")) == sorted(t.task_id for t in tasks[:3])
    assert await dropping.b.queue_depths() == {"x": 1}


async def test_a_commit_whose_reply_was_lost_is_recognised_after_the_job_moved_on(
    dropping: Dropping,
) -> None:
    # Applied, reply lost, and B commits the job before A's retry: the retry
    # still says the commit was applied (not a conflict, which would make
    # the engine decide again on a version it made itself).
    job = await new_job(dropping.a)
    read = job.version
    job.status = job_pb2.JOB_STATUS_RUNNING
    dropping.proxy.meanwhile = lambda: commit_status(
        dropping.b, job.id, job_pb2.JOB_STATUS_CANCELLED
    )
    dropping.proxy.armed = True

    assert await dropping.a.commit(job, expected_version=read) is CommitOutcome.OK

    assert dropping.proxy.dropped == 1
    stored = await dropping.b.get_job(job.id)
    assert stored is not None
    assert (stored.status, stored.version) == (job_pb2.JOB_STATUS_CANCELLED, read + 2)


async def queued_task(storage: RedisStorage) -> Task:
    """A job with one queued task of skill ``x``; the task."""
    job = await new_job(storage)
    task = queued(job)
    assert await storage.commit(job, expected_version=job.version, tasks=[task]) is (
        CommitOutcome.OK
    )
    return task


@contextlib.asynccontextmanager
async def claim_sent_while_paused(
    redis_server: RedisServer, storage: RedisStorage
) -> AsyncIterator[tuple[Task, asyncio.Task[Task | None]]]:
    """A queued task (skill ``x``) and w-1's claim of it, sent to a paused
    Redis, which runs it once the block ends."""
    task = await queued_task(storage)
    redis_server.pause()
    try:
        with wire_tap(redis_server.port) as tap:
            claim = asyncio.create_task(claim_one(storage, WorkerProfile("w-1", ("x",)), 5))
            await wait_until(lambda: tap.saw(b"w-1"))  # the claim is on the wire
        yield task, claim
    finally:
        redis_server.resume()


async def test_a_claim_cancelled_with_its_script_in_flight_gives_the_task_back(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    storage = await open_storage()
    async with claim_sent_while_paused(redis_server, storage) as (task, claim):
        await cancelled(claim)
    # The script leased the task to w-1, which will never hear of it: the
    # task goes back to its queue and the next claimer gets it.
    claimed = await claim_one(storage, WorkerProfile("w-2", ("x",)), 5)
    assert claimed is not None
    assert (claimed.task_id, claimed.worker_id) == (task.task_id, "w-2")
    assert await storage.leased_to("w-1") == []


async def test_a_batch_claim_cancelled_with_its_script_in_flight_gives_every_task_back(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    storage = await open_storage()
    job = await new_job(storage)
    tasks = [queued(job) for _ in range(3)]
    assert await storage.commit(job, expected_version=job.version, tasks=tasks) is (
        CommitOutcome.OK
    )
    redis_server.pause()
    try:
        with wire_tap(redis_server.port) as tap:
            claim = asyncio.create_task(
                storage.claim_tasks(WorkerProfile("w-1", ("x",)), 5, limit=3)
            )
            await wait_until(lambda: tap.saw(b"w-1"))  # the claim is on the wire
        await cancelled(claim)
    finally:
        redis_server.resume()
    # The script leased all three to w-1, which will never hear of them:
    # they go back to their queue, in their order, for the next claimer.
    claimed: list[Task] = []
    w2 = WorkerProfile("w-2", ("x",))
    while len(claimed) < len(tasks) and (batch := await storage.claim_tasks(w2, 5, limit=3)):
        claimed += batch
    assert [t.task_id for t in claimed] == [t.task_id for t in tasks]
    assert await storage.leased_to("w-1") == []


async def test_closing_waits_for_a_claim_in_flight(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    storage = await open_storage()
    async with claim_sent_while_paused(redis_server, storage) as (task, claim):
        closing = asyncio.create_task(storage.close())
        await asyncio.sleep(0.1)
    # The claim's script leased the task: its caller hears of it, rather than
    # an error while the task stays leased to a worker never told.
    claimed = await claim
    assert claimed is not None
    assert claimed.task_id == task.task_id
    await closing


async def test_a_creation_retried_after_the_job_moved_on_is_still_recognised(
    open_storage: OpenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = await open_storage()
    job = Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_RUNNING)
    # A creation whose reply was lost, retried (same nonce) only after the
    # job has moved on: the retry is the creation, applied once, not a 409.
    monkeypatch.setattr(secrets, "token_hex", lambda n: "creation-nonce")
    assert await storage.commit(job, expected_version=0) is CommitOutcome.OK
    monkeypatch.undo()
    assert await commit_status(storage, job.id, job_pb2.JOB_STATUS_FINISHED) is CommitOutcome.OK
    monkeypatch.setattr(secrets, "token_hex", lambda n: "creation-nonce")
    retried = Job(id=job.id, blueprint_name="bp", status=job_pb2.JOB_STATUS_RUNNING)
    assert await storage.commit(retried, expected_version=0) is CommitOutcome.OK
    stored = await storage.get_job(job.id)
    assert stored is not None
    assert (stored.version, stored.status) == (2, job_pb2.JOB_STATUS_FINISHED)
    # Another creation of that id is refused.
    monkeypatch.undo()
    assert await storage.commit(retried, expected_version=0) is CommitOutcome.CONFLICT


async def test_a_step_reads_the_job_record_taken_with_it_and_a_stale_one_cannot_commit(
    open_storage: OpenStorage,
) -> None:
    a, b, job = await a_step_taken_on_a(open_storage)
    # Before A's step reads its job, another instance changes it (say, a
    # cancel): the record that came with the claim is older than Redis.
    assert await commit_status(b, job.id, job_pb2.JOB_STATUS_CANCELLED) is CommitOutcome.OK
    seen = await a.get_job(job.id)  # the step's first read: the record taken
    assert seen is not None
    assert seen.version == 1
    assert seen.status == job_pb2.JOB_STATUS_PENDING
    seen.status = job_pb2.JOB_STATUS_RUNNING
    assert await a.commit(seen, expected_version=1) is CommitOutcome.CONFLICT
    await a.step_done(job.id)
    fresh = await a.get_job(job.id)  # any later read asks Redis
    assert fresh is not None
    assert fresh.status == job_pb2.JOB_STATUS_CANCELLED
    assert fresh.version == 2


async def test_a_job_made_ready_while_an_executor_idles_here_is_claimed_here_at_once(
    open_storage: OpenStorage,
) -> None:
    a = await open_storage(step_lease_seconds=0.3)
    b = await open_storage(step_lease_seconds=0.3)
    idle = asyncio.create_task(a.next_ready_job())
    await asyncio.sleep(0)  # A's executor is waiting for a job
    job = Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_PENDING)
    await a.create_job(job)
    assert await idle == job.id
    # Claimed by A within the creation: never on the shared list.
    assert await a.client.llen(a.keys.ready) == 0
    assert await a.client.hget(a.keys.claims, job.id) is not None

    # Its step commits a transition while the executor waits again: the
    # next step is A's at once too.
    again = asyncio.create_task(a.next_ready_job())
    await asyncio.sleep(0)
    assert await commit_status(a, job.id, job_pb2.JOB_STATUS_RUNNING, ready=True) is (
        CommitOutcome.OK
    )
    await a.step_done(job.id)
    assert await again == job.id
    assert await a.client.llen(a.keys.ready) == 0

    # A stops mid-step: the claim lapses and B runs the step.
    await a.close()
    timers = asyncio.create_task(expiries(b, 3.0))
    assert await asyncio.wait_for(b.next_ready_job(), 5) == job.id
    timers.cancel()


async def test_with_no_executor_idle_a_ready_job_is_left_to_any_instance(
    open_storage: OpenStorage,
) -> None:
    a = await open_storage()
    b = await open_storage()
    job = Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_PENDING)
    await a.create_job(job)  # nobody waits in A's next_ready_job
    assert await a.client.llen(a.keys.ready) == 1
    assert await b.next_ready_job() == job.id


async def test_a_step_claimed_by_a_creation_whose_caller_left_goes_to_any_instance(
    open_storage: OpenStorage,
) -> None:
    a = await open_storage()
    idle = asyncio.create_task(a.next_ready_job())
    await asyncio.sleep(0)  # A's executor waits: a creation there claims the step
    job = Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_PENDING)
    creating = asyncio.create_task(a.create_job(job))
    await asyncio.sleep(0)  # the script is on its way...
    creating.cancel()  # ...and its caller goes before the reply
    with contextlib.suppress(asyncio.CancelledError):
        await creating
    # The claim the script made is handed back at once (not after the 30 s
    # lease), and the executor takes the job from the shared list.
    assert await asyncio.wait_for(idle, 5) == job.id


async def test_a_job_taken_in_a_batch_and_started_later_is_read_afresh(
    open_storage: OpenStorage,
) -> None:
    a = await open_storage()
    b = await open_storage()
    first, second = (
        Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_PENDING) for _ in "12"
    )
    await b.create_job(first)
    await b.create_job(second)
    assert await a.next_ready_job() == first.id  # A took both in one script
    # The second waits at A for an executor; meanwhile B cancels it.
    assert await commit_status(b, second.id, job_pb2.JOB_STATUS_CANCELLED) is CommitOutcome.OK
    await asyncio.sleep(0.1)
    assert await a.next_ready_job() == second.id
    seen = await a.get_job(second.id)  # not the record taken with the claim
    assert seen is not None
    assert seen.status == job_pb2.JOB_STATUS_CANCELLED


async def test_a_write_past_its_deadline_is_refused_unless_it_was_applied(
    open_storage: OpenStorage,
) -> None:
    """Issue 17, finding 3: a creation or a commit that reaches Redis past
    its deadline (in Redis' clock) writes nothing and says 'expired', so a
    caller that answered 503 is not contradicted by a Redis that wakes up
    later; the repeat of one that was applied is still recognised."""
    storage = await open_storage()
    keys = storage.keys
    create = storage.client.register_script(scripts.source(keys, scripts.CREATE))
    commit = storage.client.register_script(scripts.source(keys, scripts.COMMIT))
    job = Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_PENDING, version=1)
    passed = now_ms() - 60_000  # a minute ago: whatever the clocks' offset

    def creating(deadline: int) -> list[Any]:
        return [job.id, job.SerializeToString(), job.status, "", 0, "c", 1, deadline]

    async def run(script: Any, args: list[Any]) -> Any:
        return await script(keys=[keys.root], args=args, client=storage.client)

    assert await run(create, creating(passed)) == b"expired"
    assert await storage.get_job(job.id) is None
    assert await storage.count_jobs() == {}
    assert await run(create, creating(0)) == 1  # no deadline
    assert await run(create, creating(passed)) == 1  # the repeat of an applied one

    def committing(nonce: str, deadline: int) -> list[Any]:
        job.status = job_pb2.JOB_STATUS_CANCELLED
        return scripts.CommitArgs(
            job_id=job.id, record=job.SerializeToString(), status=job.status,
            expected_version=1, lease_task="", lease_worker="", ready=0, ready_at=0,
            now=now_ms(), commit_nonce=nonce, keep_token="", keep_until=0, client_id="c",
            deadline=deadline,
        ).argv()  # fmt: skip

    assert await run(commit, committing("late", passed)) == b"expired"
    stored = await storage.get_job(job.id)
    assert stored is not None
    assert (stored.status, stored.version) == (job_pb2.JOB_STATUS_PENDING, 1)
    assert await run(commit, committing("in-time", now_ms() + 60_000)) == b"ok"
    assert await run(commit, committing("in-time", passed)) == b"again"
    assert await storage.count_jobs() == {job_pb2.JOB_STATUS_CANCELLED: 1}
