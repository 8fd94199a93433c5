"""A task committed while a worker waits on the same instance is leased to
it by the commit itself (no queue entry, no wake-up, no claim), on a real
redis-server; and whatever goes wrong around that commit, the task ends up
with exactly one worker or back in its queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from avtomatika.dispatch import WorkerProfile
from avtomatika.storage.base import CommitOutcome
from avtomatika.storage.redis import claims as claims_module
from avtomatika.storage.redis.storage import RedisStorage
from avtomatika.v1 import job_pb2, task_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task
from tests.support import cancelled, claim_one
from tests.support.net import wire_tap
from tests.support.redis import RedisServer
from tests.support.storage import Dropping, OpenStorage, commit_status, new_job, parked, queued
from tests.support.waiting import wait_until


async def a_task_and_its_worker(
    storage: RedisStorage,
) -> tuple[Job, Task, asyncio.Task[Task | None]]:
    """A job with a new queued task (skill ``x``) not yet committed, and the
    claim of w-1, which waits for it."""
    job = await new_job(storage)
    return job, queued(job), await parked(storage, "w-1")


async def test_a_task_committed_while_a_worker_waits_here_is_leased_to_it_at_once(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    storage = await open_storage()
    job, task, claim = await a_task_and_its_worker(storage)
    woken = redis_server.calls("publish")

    outcome = await storage.commit(job, expected_version=job.version, tasks=[task])

    assert outcome is CommitOutcome.OK
    claimed = await claim
    assert claimed is not None
    assert (claimed.task_id, claimed.worker_id) == (task.task_id, "w-1")
    assert claimed.state == task_pb2.TASK_STATE_LEASED
    assert claimed.leased_at_ms > 0
    stored = await storage.get_task(task.task_id)
    assert stored is not None
    assert (stored.state, stored.worker_id) == (task_pb2.TASK_STATE_LEASED, "w-1")
    assert await storage.leased_to("w-1") == [task.task_id]
    assert await storage.queue_depths() == {}
    assert redis_server.calls("publish") == woken  # nobody was woken to claim it


async def test_a_task_with_requirements_is_queued_not_handed_off(
    open_storage: OpenStorage,
) -> None:
    storage = await open_storage()
    dear = await parked(storage, "dear", cost_per_skill={"x": 2.0})
    job = await new_job(storage)
    task = queued(job, max_cost=1.0)

    outcome = await storage.commit(job, expected_version=job.version, tasks=[task])

    assert outcome is CommitOutcome.OK
    assert await storage.queue_depths() == {"x": 1}
    cheap = await claim_one(storage, WorkerProfile("cheap", ("x",)), 5)
    assert cheap is not None
    assert cheap.task_id == task.task_id
    assert not dear.done()
    dear.cancel()


@contextlib.asynccontextmanager
async def commit_sent_while_paused(
    redis_server: RedisServer, storage: RedisStorage
) -> AsyncIterator[tuple[asyncio.Task[CommitOutcome], Task]]:
    """A commit of a new queued task (skill ``x``), sent to a paused Redis,
    which runs it once the block ends; the commit and the task."""
    job = await new_job(storage)
    task = queued(job)
    redis_server.pause()
    try:
        with wire_tap(redis_server.port) as tap:
            commit = asyncio.create_task(
                storage.commit(job, expected_version=job.version, tasks=[task])
            )
            await wait_until(lambda: tap.saw(task.task_id.encode()))  # the commit is on the wire
        yield commit, task
    finally:
        redis_server.resume()


@pytest.fixture
async def w1_waits(open_storage: OpenStorage) -> tuple[RedisStorage, asyncio.Task[Task | None]]:
    """A storage, and the claim of w-1 (skill ``x``) waiting on it."""
    storage = await open_storage()
    return storage, await parked(storage, "w-1")


async def test_a_worker_that_leaves_while_its_task_is_committed_gets_none_and_it_is_queued(
    redis_server: RedisServer, w1_waits: tuple[RedisStorage, asyncio.Task[Task | None]]
) -> None:
    storage, leaving = w1_waits
    async with commit_sent_while_paused(redis_server, storage) as (commit, task):
        await cancelled(leaving)  # the commit leases the task to w-1, which is gone
    assert await commit is CommitOutcome.OK

    claimed = await claim_one(storage, WorkerProfile("w-2", ("x",)), 5)
    assert claimed is not None
    assert (claimed.task_id, claimed.worker_id) == (task.task_id, "w-2")
    assert await storage.leased_to("w-1") == []


async def test_a_commit_cancelled_with_its_hand_off_in_flight_gives_the_task_back(
    redis_server: RedisServer, w1_waits: tuple[RedisStorage, asyncio.Task[Task | None]]
) -> None:
    storage, claim = w1_waits
    async with commit_sent_while_paused(redis_server, storage) as (commit, task):
        await cancelled(commit)  # the script will run; its caller will not hear

    # The lease the script made goes back to the queue, and the worker, still
    # waiting, claims the task the ordinary way: it has it exactly once.
    claimed = await claim
    assert claimed is not None
    assert (claimed.task_id, claimed.worker_id) == (task.task_id, "w-1")
    assert await storage.leased_to("w-1") == [task.task_id]
    assert await storage.queue_depths() == {}


@pytest.mark.parametrize("moved_on", [False, True], ids=["job-unchanged", "job-changed-since"])
async def test_a_hand_off_whose_reply_was_lost_reaches_the_worker_when_retried(
    dropping: Dropping, moved_on: bool
) -> None:
    # The commit ran and leased the task, but its reply was lost. The retry
    # is recognised, even if B changed the job before it: the worker gets
    # its task (not a conflict, with the task leased to a worker that never
    # hears of it).
    a, proxy = dropping.a, dropping.proxy
    job, task, claim = await a_task_and_its_worker(a)
    if moved_on:
        proxy.meanwhile = lambda: commit_status(dropping.b, job.id, job_pb2.JOB_STATUS_RUNNING)
    proxy.armed = True

    outcome = await a.commit(job, expected_version=job.version, tasks=[task])

    assert proxy.dropped == 1
    assert outcome is CommitOutcome.OK
    claimed = await claim
    assert claimed is not None
    assert (claimed.task_id, claimed.worker_id) == (task.task_id, "w-1")
    assert await a.leased_to("w-1") == [task.task_id]


async def test_a_retried_commit_does_not_run_here_a_step_another_instance_ended_meanwhile(
    dropping: Dropping,
) -> None:
    # The commit makes the job ready and claims its step for an executor
    # idle on A; its reply is lost, and before the retry B cancels the job
    # (which ends that claim). The retry is recognised, but the step must
    # not run on A on the record the commit carried.
    a, proxy = dropping.a, dropping.proxy
    job, task, claim = await a_task_and_its_worker(a)
    executor = asyncio.create_task(a.next_ready_job())
    await asyncio.sleep(0)  # the executor waits: the commit claims the step for it
    proxy.meanwhile = lambda: commit_status(dropping.b, job.id, job_pb2.JOB_STATUS_CANCELLED)
    proxy.armed = True

    outcome = await a.commit(job, expected_version=job.version, tasks=[task], ready=True)

    assert proxy.dropped == 1
    assert outcome is CommitOutcome.OK
    assert await claim is not None
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(executor), 0.3)
    await cancelled(executor)


async def test_a_worker_offered_a_task_that_did_not_come_looks_at_once(
    dropping: Dropping,
) -> None:
    # While w-1 is offered a task (the commit in flight), a task queued on B
    # wakes A; the commit then fails (a stale version): w-1 looks at once
    # rather than at its periodic look.
    a, b = dropping.a, dropping.b
    job = await new_job(a)
    claim = await parked(a, "w-1")
    elsewhere = await new_job(b)
    other = queued(elsewhere)
    dropping.proxy.meanwhile = lambda: b.commit(
        elsewhere, expected_version=elsewhere.version, tasks=[other]
    )
    dropping.proxy.armed = True

    outcome = await a.commit(job, expected_version=job.version - 1, tasks=[queued(job)])

    assert outcome is CommitOutcome.CONFLICT
    claimed = await asyncio.wait_for(claim, 0.5)
    assert claimed is not None
    assert claimed.task_id == other.task_id


async def test_a_hand_out_whose_reply_was_lost_leases_the_task_to_the_worker_it_picked(
    dropping: Dropping,
) -> None:
    # Two workers wait on A, a task is queued on B: A's hand-out pass reads
    # the queue's head, then takes it for the worker it picks. The take's
    # reply is lost; its retry finds the lease it made, and that worker gets
    # the task (not a task leased to a worker that never hears of it).
    a = dropping.a
    first = await parked(a, "w-1")
    second = await parked(a, "w-2")
    job = await new_job(dropping.b)
    task = queued(job)
    dropping.proxy.skip = 1  # the head's read goes through; the take's reply is lost
    dropping.proxy.armed = True

    assert await dropping.b.commit(job, expected_version=job.version, tasks=[task]) is (
        CommitOutcome.OK
    )

    done, pending = await asyncio.wait([first, second], return_when=asyncio.FIRST_COMPLETED)
    assert dropping.proxy.dropped == 1
    claimed = done.pop().result()
    assert claimed is not None
    assert claimed.task_id == task.task_id
    assert await a.leased_to(claimed.worker_id) == [task.task_id]
    for claim in pending:
        await cancelled(claim)


async def test_a_task_goes_to_a_worker_waiting_here_only_once_of_two_commits(
    open_storage: OpenStorage,
) -> None:
    # Two commits race for one waiting worker: one hands it its task, the
    # other's task is queued for the next claimer.
    storage = await open_storage()
    claim = await parked(storage, "w-1")
    jobs = [await new_job(storage) for _ in "12"]
    first, second = (queued(job) for job in jobs)

    outcomes = await asyncio.gather(
        *(
            storage.commit(job, expected_version=job.version, tasks=[task])
            for job, task in zip(jobs, (first, second), strict=True)
        )
    )

    assert outcomes == [CommitOutcome.OK, CommitOutcome.OK]
    claimed = await claim
    assert claimed is not None
    other = await claim_one(storage, WorkerProfile("w-2", ("x",)), 5)
    assert other is not None
    assert {claimed.task_id, other.task_id} == {first.task_id, second.task_id}
    assert await storage.leased_to("w-1") == [claimed.task_id]


async def test_a_worker_handed_its_task_waits_for_the_next_without_looking_first(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    storage = await open_storage()
    job, task, claim = await a_task_and_its_worker(storage)
    assert await storage.commit(job, expected_version=job.version, tasks=[task]) is (
        CommitOutcome.OK
    )
    assert await claim is not None
    before = redis_server.calls("evalsha")

    # Nothing was queued for it since it last looked: its next claim waits
    # at once, with no claim script run.
    again = await parked(storage, "w-1")

    assert redis_server.calls("evalsha") == before
    again.cancel()


async def test_a_task_queued_elsewhere_reaches_a_worker_that_waits_without_looking(
    open_storage: OpenStorage,
) -> None:
    a = await open_storage()
    b = await open_storage()
    job = await new_job(a)
    first = queued(job)
    claim = await parked(a, "w-1")
    assert await a.commit(job, expected_version=job.version, tasks=[first]) is CommitOutcome.OK
    assert await claim is not None
    other = await new_job(b)
    second = queued(other)
    claim = await parked(a, "w-1")  # waits at once: nothing was queued since it looked

    # Queued on B, where nobody waits: the wake-up reaches A's waiting worker,
    # which looks then, sooner than its periodic look (1 s) would.
    assert await b.commit(other, expected_version=other.version, tasks=[second]) is (
        CommitOutcome.OK
    )

    claimed = await asyncio.wait_for(claim, 0.9)
    assert claimed is not None
    assert claimed.task_id == second.task_id


async def test_a_worker_handed_task_after_task_still_looks_at_least_once_a_period(
    open_storage: OpenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # w-1 (skills a and b) looks while another worker takes the task with
    # requirements it had picked: its look finds nothing, though a second
    # such task is still queued, and no wake-up will come for it. Tasks of
    # a, handed to w-1 one after another, must not keep it from looking
    # again within the re-check period.
    a = await open_storage()
    b = await open_storage()
    for _ in "12":
        job = await new_job(b)
        constrained = queued(job, "b", max_cost=5.0)
        assert await b.commit(job, expected_version=job.version, tasks=[constrained]) is (
            CommitOutcome.OK
        )
    pick = a._claims._constrained_candidate

    async def pick_then_lose_it(worker: WorkerProfile) -> str:
        monkeypatch.setattr(a._claims, "_constrained_candidate", pick)  # once
        candidate = await pick(worker)
        assert await claim_one(b, WorkerProfile("other", ("b",)), 1) is not None
        return candidate

    monkeypatch.setattr(a._claims, "_constrained_candidate", pick_then_lose_it)
    claim = await parked(a, "w-1", ("a", "b"))
    kinds = []
    for _ in range(10):  # about 3 s of hand-offs, 0.3 s apart
        await asyncio.sleep(0.3)
        job = await new_job(b)
        plain = queued(job, "a")
        assert await a.commit(job, expected_version=job.version, tasks=[plain]) is (
            CommitOutcome.OK
        )
        task = await claim
        assert task is not None
        kinds.append(task.type)
        if task.type == "b":
            break
        claim = await parked(a, "w-1", ("a", "b"))

    assert kinds[-1] == "b", kinds


async def claim_for(storage: RedisStorage, worker_id: str, limit: int) -> asyncio.Task[list[Task]]:
    """A claim of ``worker_id`` (skill ``x``) for up to ``limit`` tasks,
    once it waits."""
    claim = asyncio.create_task(storage.claim_tasks(WorkerProfile(worker_id, ("x",)), 10, limit))

    async def waits() -> bool:
        return claim.done() or bool(await storage.waiting_workers())

    await wait_until(waits)
    return claim


@contextlib.asynccontextmanager
async def commits_sent_while_paused(
    redis_server: RedisServer, storage: RedisStorage, jobs: list[Job]
) -> AsyncIterator[tuple[list[asyncio.Task[CommitOutcome]], list[Task]]]:
    """A commit of a new queued task (skill ``x``) for each of ``jobs``, all
    on the wire to a paused Redis at once, which runs them once the block
    ends; the commits and the tasks."""
    tasks = [queued(job) for job in jobs]
    redis_server.pause()
    try:
        with wire_tap(redis_server.port) as tap:
            commits = [
                asyncio.create_task(storage.commit(job, expected_version=job.version, tasks=[t]))
                for job, t in zip(jobs, tasks, strict=True)
            ]
            sent = [task.task_id.encode() for task in tasks]
            await wait_until(lambda: all(map(tap.saw, sent)))
        yield commits, tasks
    finally:
        redis_server.resume()


async def committed_while_paused(
    redis_server: RedisServer, storage: RedisStorage, jobs: list[Job]
) -> list[Task]:
    """:func:`commits_sent_while_paused`, each commit applied; the tasks."""
    async with commits_sent_while_paused(redis_server, storage, jobs) as (commits, tasks):
        pass
    assert await asyncio.gather(*commits) == [CommitOutcome.OK] * len(jobs)
    return tasks


async def test_a_worker_with_room_for_several_is_handed_each_task_committed_meanwhile(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    # Three commits in flight at once while w-1 waits with room for three:
    # each leases its task to it (no queue, no wake-up, no claim), and the
    # claim returns them together.
    storage = await open_storage()
    jobs = [await new_job(storage) for _ in "123"]
    claim = await claim_for(storage, "w-1", 3)
    woken, claims = redis_server.calls("publish"), redis_server.calls("evalsha")

    tasks = await committed_while_paused(redis_server, storage, jobs)

    claimed = await claim
    assert sorted(t.task_id for t in claimed) == sorted(t.task_id for t in tasks)
    assert {(t.state, t.worker_id) for t in claimed} == {(task_pb2.TASK_STATE_LEASED, "w-1")}
    assert await storage.leased_to("w-1") == sorted(t.task_id for t in tasks)
    assert await storage.queue_depths() == {}
    assert redis_server.calls("publish") == woken
    assert redis_server.calls("evalsha") == claims + 3  # the commits, nothing else


async def test_a_worker_is_offered_no_more_tasks_than_it_has_room_for(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    storage = await open_storage()
    jobs = [await new_job(storage) for _ in "123"]
    claim = await claim_for(storage, "w-1", 2)

    tasks = await committed_while_paused(redis_server, storage, jobs)

    claimed = await claim
    assert len(claimed) == 2
    other = await claim_one(storage, WorkerProfile("w-2", ("x",)), 5)
    assert other is not None
    assert {t.task_id for t in claimed} | {other.task_id} == {t.task_id for t in tasks}


async def test_a_worker_that_leaves_with_offers_in_flight_leaves_every_task_to_others(
    redis_server: RedisServer, open_storage: OpenStorage
) -> None:
    # w-1 leaves while two commits that offer it their tasks are in flight:
    # both leases go back, and w-2 gets each task exactly once.
    storage = await open_storage()
    jobs = [await new_job(storage) for _ in "12"]
    leaving = await claim_for(storage, "w-1", 2)
    async with commits_sent_while_paused(redis_server, storage, jobs) as (commits, tasks):
        await cancelled(leaving)
    assert await asyncio.gather(*commits) == [CommitOutcome.OK] * 2

    taken = await storage.claim_tasks(WorkerProfile("w-2", ("x",)), 5, 2)
    while len(taken) < 2:  # the second give-back may land after the first claim
        taken += await storage.claim_tasks(WorkerProfile("w-2", ("x",)), 5, 2 - len(taken))
    assert sorted(t.task_id for t in taken) == sorted(t.task_id for t in tasks)
    assert await storage.leased_to("w-1") == []
    assert await storage.queue_depths() == {}


# A claim handed a task by a hand-out pass while a commit's offer to it was
# in flight used to miss its wake-up when that offer's reply found it full:
# the task went back, nobody set the claim's event, and the claim sat on the
# task leased to it until its re-check (RECHECK, raised here so a missed
# wake-up shows as a claim that never returns).
async def test_a_claim_handed_a_task_is_woken_when_its_last_offer_finds_it_full(
    redis_server: RedisServer, open_storage: OpenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims_module, "RECHECK", 3600.0)
    a = await open_storage()
    b = await open_storage()
    first_job = await new_job(b)
    second_job = await new_job(a)
    first, second = queued(first_job), queued(second_job)
    claims = {w: await parked(a, w, timeout=60) for w in ("w-1", "w-2")}
    hand_outs = a._hand_outs

    # A's hand-out pass (two waiters parked, a task queued on B) leases
    # `first` to the worker it picked (TAKE). Between that TAKE's reply and
    # the pass handing the task over, a commit on A of `second` offers it to
    # a parked waiter (the same one: both pick the longest waiting); Redis
    # is paused with that commit on the wire.
    leases = hand_outs._leases
    take = leases.take
    seen: dict[str, Any] = {}

    async def take_then_offer(task_id: str, worker_id: str, nonce: str) -> Any:
        taken = await take(task_id, worker_id, nonce)
        if "commit" not in seen:
            seen["picked"] = worker_id
            redis_server.pause()
            with wire_tap(redis_server.port) as tap:
                seen["commit"] = asyncio.create_task(
                    a.commit(second_job, expected_version=second_job.version, tasks=[second])
                )
                await wait_until(lambda: tap.saw(second.task_id.encode()))
            seen["offered"] = [w.worker.worker_id for w in hand_outs.waiters.of("x") if w.offers]
        return taken

    leases.take = take_then_offer  # type: ignore[method-assign]
    try:
        assert await b.commit(first_job, expected_version=first_job.version, tasks=[first]) is (
            CommitOutcome.OK
        )
        await wait_until(lambda: "offered" in seen)
        assert seen["offered"] == [seen["picked"]], seen  # the offer went to the picked waiter
        waiter = next(w for w in hand_outs.waiters.of("x") if w.worker.worker_id == seen["picked"])
        # The pass hands `first` over; the claim wakes, sees an offer still in
        # flight, and waits for it.
        await wait_until(lambda: bool(waiter.handed) and not waiter.event.is_set())
    finally:
        redis_server.resume()
    # The commit's reply: `second` was leased to the picked waiter too; it is
    # full, so `second` goes back. The claim should now return `first`.
    assert await seen["commit"] is CommitOutcome.OK
    picked = claims[seen["picked"]]
    got = await asyncio.wait_for(picked, 10)  # a deadline for the test, not a timing claim
    assert got is not None
    assert got.task_id == first.task_id
    for claim in claims.values():
        if not claim.done():
            await cancelled(claim)
