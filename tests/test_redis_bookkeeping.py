"""What the Redis store's scripts keep beside the jobs and tasks, on a real
redis-server: a task's timers are those of its state and no others, its
queue entry and lease set follow it, retention forgets a job of many tasks
whole, a creation retried after its job was forgotten is not made again,
and two instances claiming batches from the same queues lease each task
once. The scripts touch these only when a task's state says there is
something there, so each is checked here against Redis itself."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets

import pytest

from avtomatika.clock import now_ms
from avtomatika.dispatch import WorkerProfile
from avtomatika.engine.tasks import new_id
from avtomatika.storage.base import BoundReached, ClientBounds, CommitOutcome
from avtomatika.storage.redis import storage as redis_storage
from avtomatika.storage.redis.storage import RedisStorage
from avtomatika.v1 import job_pb2, task_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task
from tests.support import claim_one
from tests.support.redis import RedisServer
from tests.support.storage import OpenStorage, new_job, queued
from tests.support.waiting import wait_until

MINUTE_MS = 60_000


async def timers(storage: RedisStorage) -> set[str]:
    """Every armed timer, ``kind:ref``."""
    members = await storage.client.zrange(storage.keys.timers, 0, -1)
    return {member.decode() for member in members}


async def queue_members(storage: RedisStorage, skill: str = "x") -> list[str]:
    """The task ids in ``skill``'s plain queue, in queue order."""
    members = await storage.client.zrange(storage.keys.queue(skill), 0, -1)
    return [member.decode()[21:] for member in members]


async def fire_timers(storage: RedisStorage) -> None:
    """Let ``storage`` fire the timers that are due, once (the deadlines it
    fires are not handled) and forget the jobs past retention."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.05):
            await storage.next_expiry()


async def test_a_task_has_the_timers_of_its_state_and_no_others(
    open_storage: OpenStorage,
) -> None:
    storage = await open_storage()
    job = await new_job(storage)
    later = now_ms() + MINUTE_MS
    first = queued(job, dispatch_deadline_ms=later, result_deadline_ms=later + MINUTE_MS)
    second = queued(job, dispatch_deadline_ms=later)
    retry = queued(job, not_before_ms=now_ms() + 300, dispatch_deadline_ms=later)
    retry.state = task_pb2.TASK_STATE_SCHEDULED
    outcome = await storage.commit(job, expected_version=job.version, tasks=[first, second, retry])
    assert outcome is CommitOutcome.OK
    a, b, c = first.task_id, second.task_id, retry.task_id
    armed = {f"dispatch:{a}", f"result:{a}", f"dispatch:{b}", f"release:{c}"}
    assert await timers(storage) == armed
    assert await queue_members(storage) == [a, b]

    # Leased: the dispatch deadline is met, the result deadline stands.
    claimed = await claim_one(storage, WorkerProfile("w", ("x",)), 1)
    assert claimed is not None
    assert claimed.task_id == a
    assert await timers(storage) == {f"result:{a}", f"dispatch:{b}", f"release:{c}"}
    assert await queue_members(storage) == [b]
    assert await storage.leased_to("w") == [a]

    # The retry's backoff ends: queued, with its dispatch deadline.
    async def released() -> bool:
        await fire_timers(storage)
        return f"release:{c}" not in await timers(storage)

    await wait_until(released)
    assert await timers(storage) == {f"result:{a}", f"dispatch:{b}", f"dispatch:{c}"}
    assert await queue_members(storage) == [b, c]

    # Done, and the others withdrawn: no timer, no queue entry, no lease.
    current = await storage.get_job(job.id)
    assert current is not None
    claimed.state = task_pb2.TASK_STATE_DONE
    outcome = await storage.commit(
        current, expected_version=current.version, tasks=[claimed], withdraw=[b, c]
    )
    assert outcome is CommitOutcome.OK
    assert await timers(storage) == set()
    assert await queue_members(storage) == []
    assert await storage.leased_to("w") == []
    states = [t.state if t else None for t in await storage.get_tasks([a, b, c])]
    assert states == [task_pb2.TASK_STATE_DONE, *[task_pb2.TASK_STATE_CANCELLED] * 2]


async def test_a_task_given_back_goes_back_to_its_place_with_its_timers(
    open_storage: OpenStorage,
) -> None:
    storage = await open_storage()
    job = await new_job(storage)
    later = now_ms() + MINUTE_MS
    tasks = [queued(job, dispatch_deadline_ms=later) for _ in range(3)]
    assert await storage.commit(job, expected_version=job.version, tasks=tasks) is (
        CommitOutcome.OK
    )
    ids = [t.task_id for t in tasks]
    claimed = await claim_one(storage, WorkerProfile("w", ("x",)), 1)
    assert claimed is not None
    assert claimed.task_id == ids[0]
    assert f"dispatch:{ids[0]}" not in await timers(storage)

    # The claimer left before hearing of it (a waiting claim cancelled, a
    # hand-out to a worker gone): the lease is undone. Called directly, as
    # no public call undoes a lease on its own.
    await storage._leases.give_back(ids[0], "w")

    assert await queue_members(storage) == ids
    assert await timers(storage) == {f"dispatch:{i}" for i in ids}
    assert await storage.leased_to("w") == []
    stored = await storage.get_task(ids[0])
    assert stored is not None
    assert (stored.state, stored.worker_id, stored.leased_at_ms) == (
        task_pb2.TASK_STATE_QUEUED,
        "",
        0,
    )


async def test_retention_forgets_a_job_of_many_tasks_whole(open_storage: OpenStorage) -> None:
    # More tasks than one Redis command is given at once by the script.
    storage = await open_storage(job_retention_seconds=0.1)
    job = await new_job(storage)
    later = now_ms() + MINUTE_MS
    tasks = [queued(job, result_deadline_ms=later) for _ in range(1200)]
    assert await storage.commit(job, expected_version=job.version, tasks=tasks) is (
        CommitOutcome.OK
    )
    current = await storage.get_job(job.id)
    assert current is not None
    current.status = job_pb2.JOB_STATUS_CANCELLED
    assert await storage.commit(current, expected_version=current.version) is CommitOutcome.OK

    async def forgotten() -> bool:
        await fire_timers(storage)
        return await storage.get_job(job.id) is None

    await wait_until(forgotten)
    assert await storage.get_tasks([t.task_id for t in tasks[::100]]) == [None] * 12
    assert await timers(storage) == set()
    assert await storage.queue_depths() == {}
    keys = storage.keys
    left = {key.decode() for key in await storage.client.keys(f"{keys.root}:task:*")}
    assert left == set()


async def test_a_creation_retried_after_its_job_was_forgotten_is_not_made_again(
    open_storage: OpenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reply to a creation is lost; before its retry (same nonce) the
    # job ended and was forgotten. The retry is the creation, applied once.
    storage = await open_storage(job_retention_seconds=0.05)
    job = Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_FINISHED)
    monkeypatch.setattr(secrets, "token_hex", lambda n: "creation-nonce")
    assert await storage.commit(job, expected_version=0) is CommitOutcome.OK
    monkeypatch.undo()

    async def forgotten() -> bool:
        await fire_timers(storage)
        return await storage.get_job(job.id) is None

    await wait_until(forgotten)
    monkeypatch.setattr(secrets, "token_hex", lambda n: "creation-nonce")
    retried = Job(id=job.id, blueprint_name="bp", status=job_pb2.JOB_STATUS_FINISHED)
    assert await storage.commit(retried, expected_version=0) is CommitOutcome.OK
    monkeypatch.undo()

    assert await storage.get_job(job.id) is None
    assert await storage.count_jobs() == {}


async def test_two_instances_claiming_batches_from_the_same_queues_lease_each_task_once(
    open_storage: OpenStorage,
) -> None:
    a, b = await open_storage(), await open_storage()
    job = await new_job(a)
    tasks = [queued(job, "xy"[n % 2], priority=n % 3) for n in range(60)]
    assert await a.commit(job, expected_version=job.version, tasks=tasks) is CommitOutcome.OK

    async def drain(storage: RedisStorage, worker: WorkerProfile) -> list[Task]:
        claimed: list[Task] = []
        while batch := await storage.claim_tasks(worker, 0.01, limit=4):
            claimed += batch
        return claimed

    on_a, on_b = await asyncio.gather(
        drain(a, WorkerProfile("wa", ("x", "y"))), drain(b, WorkerProfile("wb", ("y", "x")))
    )

    ids = [t.task_id for t in [*on_a, *on_b]]
    assert sorted(ids) == sorted(t.task_id for t in tasks)
    assert sorted(await a.leased_to("wa")) == sorted(t.task_id for t in on_a)
    assert sorted(await b.leased_to("wb")) == sorted(t.task_id for t in on_b)
    assert await a.queue_depths() == {}
    # Each batch came best first: priority, then the order they were queued.
    rank = {t.task_id: (-t.priority, n) for n, t in enumerate(tasks)}
    for claimed in (on_a, on_b):
        assert all(rank[x.task_id] < rank[y.task_id] for x, y in itertools.pairwise(claimed))


async def test_a_clients_stored_bytes_follow_its_records_whoever_wrote_them(
    open_storage: OpenStorage,
) -> None:
    # The scripts keep each record's length beside it ('b') rather than
    # measure the record on every commit. Through a creation, commits that
    # grow and shrink it, progress, and a version written by a script of an
    # earlier release (the record without 'b'), the client's stored bytes
    # stay the length of its record, and go back to zero when it is forgotten.
    storage = await open_storage(job_retention_seconds=0.1)
    job = Job(id=new_id(), blueprint_name="bp", client_id="c", status=job_pb2.JOB_STATUS_RUNNING)
    assert await storage.commit(job, expected_version=0) is CommitOutcome.OK

    async def stored() -> int:
        return (await storage.client_usage("c")).stored_bytes

    async def record() -> int:
        return int(await storage.client.hstrlen(storage.keys.job(job.id), "d"))

    assert await stored() == await record() > 0
    for message in ("x" * 500, "", "y" * 70):
        current = await storage.get_job(job.id)
        assert current is not None
        current.progress_message = message
        outcome = await storage.commit(current, expected_version=current.version)
        assert outcome is CommitOutcome.OK
        assert await stored() == await record()
    assert await storage.set_progress(job.id, "", 0.5, "z" * 300) is False  # no such task
    current = await storage.get_job(job.id)
    assert current is not None
    current.active_task_ids.append("t")
    assert await storage.commit(current, expected_version=current.version) is CommitOutcome.OK
    assert await storage.set_progress(job.id, "t", 0.5, "z" * 300)
    assert await stored() == await record()
    current = await storage.get_job(job.id)
    assert current is not None
    current.progress_message = "after progress"
    assert await storage.commit(current, expected_version=current.version) is CommitOutcome.OK
    assert await stored() == await record()
    # An earlier release's commit: a new version and record, no 'b'.
    current = await storage.get_job(job.id)
    assert current is not None
    current.version += 1
    current.progress_message = "written by an earlier release" * 10
    older = current.SerializeToString()
    key = storage.keys.job(job.id)
    await storage.client.hset(key, mapping={"d": older, "v": current.version})
    await storage.client.incrby(storage.keys.client_bytes("c"), len(older) - (await stored()))
    current.status = job_pb2.JOB_STATUS_FINISHED
    current.progress_message = ""
    assert await storage.commit(current, expected_version=current.version) is CommitOutcome.OK
    assert await stored() == await record()

    async def forgotten() -> bool:
        await fire_timers(storage)
        return await storage.get_job(job.id) is None

    await wait_until(forgotten)
    assert await stored() == 0


async def test_the_counts_of_every_job_are_those_of_its_clients(
    open_storage: OpenStorage,
) -> None:
    storage = await open_storage(job_retention_seconds=0.1)
    for client, status in [
        ("a", job_pb2.JOB_STATUS_RUNNING),
        ("a", job_pb2.JOB_STATUS_RUNNING),
        ("b", job_pb2.JOB_STATUS_RUNNING),
        ("b", job_pb2.JOB_STATUS_FINISHED),
    ]:
        job = Job(id=new_id(), blueprint_name="bp", client_id=client, status=status)
        assert await storage.commit(job, expected_version=0) is CommitOutcome.OK
    running = job_pb2.JOB_STATUS_RUNNING
    finished = job_pb2.JOB_STATUS_FINISHED
    assert await storage.count_jobs() == {running: 3, finished: 1}
    assert await storage.count_client_jobs("b") == {running: 1, finished: 1}

    async def forgotten() -> bool:
        await fire_timers(storage)
        return await storage.count_jobs() == {running: 3}

    await wait_until(forgotten)  # b's finished job, past retention
    assert await storage.count_client_jobs("b") == {running: 1}


async def test_an_instance_opening_on_an_earlier_releases_counts_adopts_them(
    open_storage: OpenStorage,
) -> None:
    # An earlier release kept a count of every job ('statuses') and did not
    # list the clients: the first instance to open lists them, and the job
    # counts are theirs summed, as before the upgrade.
    storage = await open_storage()
    job = Job(id=new_id(), blueprint_name="bp", client_id="old", status=job_pb2.JOB_STATUS_RUNNING)
    assert await storage.commit(job, expected_version=0) is CommitOutcome.OK
    keys = storage.keys
    await storage.client.srem(keys.clients, "old")
    await storage.client.hset(keys.statuses, str(job_pb2.JOB_STATUS_RUNNING), 1)

    upgraded = await open_storage()

    assert await upgraded.count_jobs() == {job_pb2.JOB_STATUS_RUNNING: 1}
    assert not await storage.client.exists(keys.statuses)


async def test_a_reservation_holds_room_until_its_job_is_created_or_it_lapses(
    open_storage: OpenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reservations of an instance that died mid-creation lapse after their
    # ttl, and their hash, kept alive once a ttl rather than once a job,
    # still outlives every reservation in it.
    monkeypatch.setattr(redis_storage, "_RESERVATION_TTL_MS", 300)
    storage = await open_storage()
    bounds = ClientBounds(max_jobs_in_flight=2, max_stored_bytes=0)
    assert await storage.reserve("c", "j1", 10, bounds) is None
    assert await storage.reserve("c", "j2", 10, bounds) is None
    assert await storage.reserve("c", "j3", 10, bounds) == BoundReached("jobs", 2)
    job = Job(id="j1", blueprint_name="bp", client_id="c", status=job_pb2.JOB_STATUS_RUNNING)
    assert await storage.commit(job, expected_version=0) is CommitOutcome.OK
    assert await storage.reserve("c", "j3", 10, bounds) == BoundReached("jobs", 2)

    async def lapsed() -> bool:  # j2's creation never came
        return await storage.reserve("c", "j3", 10, bounds) is None

    await wait_until(lapsed)
    assert await storage.reserve("c", "j4", 10, bounds) == BoundReached("jobs", 2)
    entries = await storage.client.hgetall(storage.keys.client_reservations("c"))
    assert {k.decode() for k in entries} == {"j3", "~"}
    lasts = int(entries[b"~"].decode().split(":")[1])
    assert all(int(v.decode().split(":")[1]) <= lasts for v in entries.values())


async def test_reservations_push_their_hash_expiry_once_a_ttl_not_once_a_job(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    storage = await open_storage()
    bounds = ClientBounds(max_jobs_in_flight=100, max_stored_bytes=0)
    before = redis_server.calls("pexpire")

    for n in range(5):
        assert await storage.reserve("c", f"j{n}", 10, bounds) is None

    assert redis_server.calls("pexpire") == before + 1
    assert 0 < await storage.client.pttl(storage.keys.client_reservations("c")) <= 120_000
    assert await storage.reserve("c", "j5", 10, bounds) is None
    assert await storage.reserve("c", "j6", 10, bounds) is None  # still counted: 7 held
    assert await storage.reserve("c", "j7", 10, ClientBounds(7, 0)) == BoundReached("jobs", 7)


async def test_a_client_an_earlier_release_creates_after_the_upgrade_opened_is_counted(
    open_storage: OpenStorage,
) -> None:
    upgraded = await open_storage()  # the last instance of the upgrade opens
    keys = upgraded.keys
    # An instance of the earlier release, still running, creates the first
    # job of a client: its script counts it in 'statuses' and the client's
    # counts and bytes, and lists it nowhere.
    job = Job(id=new_id(), blueprint_name="bp", client_id="new", status=job_pb2.JOB_STATUS_RUNNING)
    assert await upgraded.commit(job, expected_version=0) is CommitOutcome.OK
    await upgraded.client.srem(keys.clients, "new")
    await upgraded.client.hincrby(keys.statuses, str(job_pb2.JOB_STATUS_RUNNING), 1)
    # (the old instance then stops; no instance opens after it)

    assert await upgraded.count_client_jobs("new") == {job_pb2.JOB_STATUS_RUNNING: 1}
    assert await upgraded.count_jobs() == {job_pb2.JOB_STATUS_RUNNING: 1}
