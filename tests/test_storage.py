"""The storage contract, driven directly on every backend (the embedded store
and Redis, on a real redis-server): claim order, claims that survive
cancellation, commits guarded by version and lease, deadlines, retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from avtomatika.config import Settings
from avtomatika.dispatch import WorkerProfile
from avtomatika.engine.tasks import new_id
from avtomatika.payload import to_payload
from avtomatika.storage.base import CommitOutcome, Lease, Storage
from avtomatika.storage.memory import MemoryStorage
from avtomatika.storage.redis.storage import RedisStorage
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.task_pb2 import Task, TaskState
from tests.support import cancelled, claim_one
from tests.support.storage import finish_claimed


def make_task(job: Job, skill: str, priority: float = 0.0) -> Task:
    return Task(
        task_id=new_id(),
        job_id=job.id,
        type=skill,
        priority=priority,
        attempt=1,
        state=TaskState.TASK_STATE_QUEUED,
    )


async def stored_job(storage: Storage) -> Job:
    job = Job(id=new_id(), blueprint_name="bp", status=JobStatus.JOB_STATUS_PENDING)
    await storage.create_job(job)
    fresh = await storage.get_job(job.id)
    assert fresh is not None
    return fresh


async def enqueue(storage: Storage, *tasks: Task) -> Job:
    """Write ``tasks`` (queued) with a job, as a handler's dispatch does."""
    job = await stored_job(storage)
    for task in tasks:
        task.job_id = job.id
    outcome = await storage.commit(job, expected_version=job.version, tasks=tasks)
    assert outcome is CommitOutcome.OK
    return job


@pytest.fixture(params=["memory", "redis"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage()
        return
    url = request.getfixturevalue("redis_url")
    redis_storage = RedisStorage(Settings(redis_url=url))
    await redis_storage.open()
    yield redis_storage
    await redis_storage.close()


async def leased_to_w1(storage: Storage) -> tuple[Task, Job]:
    """A task queued with its job and claimed by worker w-1; the job as now."""
    task = make_task(Job(), "x")
    job = await enqueue(storage, task)
    assert await claim_one(storage, WorkerProfile("w-1", ("x",)), None) is not None
    current = await storage.get_job(job.id)
    assert current is not None
    return task, current


async def commit_under(storage: Storage, job_id: str, lease: Lease) -> CommitOutcome:
    """Commit the job unchanged, guarded by ``lease``."""
    job = await storage.get_job(job_id)
    assert job is not None
    return await storage.commit(job, expected_version=job.version, lease=lease)


async def until_waiting(storage: Storage, expected: dict[str, int]) -> None:
    """Until ``storage`` counts ``expected`` waiting workers per skill (a
    shared store registers a waiter only after a round trip)."""
    for _ in range(1000):
        if await storage.waiting_workers() == expected:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"waiting workers: {await storage.waiting_workers()} != {expected}")


async def test_create_job_stores_version_one_and_queues_it_for_the_executor(
    storage: Storage,
) -> None:
    job = await stored_job(storage)
    assert job.version == 1
    assert await storage.next_ready_job() == job.id


async def test_reads_are_copies(storage: Storage) -> None:
    job = await stored_job(storage)
    job.status = JobStatus.JOB_STATUS_FINISHED
    again = await storage.get_job(job.id)
    assert again is not None
    assert again.status == JobStatus.JOB_STATUS_PENDING


async def test_a_task_and_its_job_read_together_are_as_read_apart(storage: Storage) -> None:
    task, job = await leased_to_w1(storage)
    both = await storage.get_task_and_job(task.task_id, job.id)
    assert both == (await storage.get_task(task.task_id), await storage.get_job(job.id))
    assert both[0] is not None
    assert both[0].state == TaskState.TASK_STATE_LEASED
    assert both[0].worker_id == "w-1"
    assert await storage.get_task_and_job("no-such-task", job.id) == (None, job)
    assert await storage.get_task_and_job(task.task_id, "no-such-job") == (both[0], None)


async def test_tasks_read_together_are_as_read_apart(storage: Storage) -> None:
    first, second = make_task(Job(), "x"), make_task(Job(), "y")
    await enqueue(storage, first, second)
    claimed = await claim_one(storage, WorkerProfile("w-1", ("x",)), None)
    assert claimed is not None

    ids = [second.task_id, "no-such-task", first.task_id]
    together = await storage.get_tasks(ids)

    assert together == [await storage.get_task(task_id) for task_id in ids]
    assert together[2] is not None
    assert (together[2].state, together[2].worker_id) == (TaskState.TASK_STATE_LEASED, "w-1")
    assert await storage.get_tasks([]) == []


async def test_claim_takes_highest_priority_first_then_fifo_across_skills(storage: Storage) -> None:
    job = Job()
    low_x1 = make_task(job, "x")
    high_y1 = make_task(job, "y", priority=5)
    high_x = make_task(job, "x", priority=5)
    low_y = make_task(job, "y")
    low_x2 = make_task(job, "x")
    top_y = make_task(job, "y", priority=9)
    await enqueue(storage, low_x1, high_y1, high_x)
    await enqueue(storage, low_y, low_x2, top_y)

    claimed = [await claim_one(storage, WorkerProfile("w", ("x", "y")), None) for _ in range(6)]

    expected = [top_y, high_y1, high_x, low_x1, low_y, low_x2]
    assert [t.task_id if t else None for t in claimed] == [t.task_id for t in expected]
    assert all(t is not None and t.state == TaskState.TASK_STATE_LEASED for t in claimed)
    assert await storage.queue_depths() == {}


async def test_claim_leases_the_task_to_the_claimer(storage: Storage) -> None:
    task = make_task(Job(), "x")
    await enqueue(storage, task)
    claimed = await claim_one(storage, WorkerProfile("w-1", ("x",)), None)
    stored = await storage.get_task(task.task_id)
    assert claimed is not None
    assert stored is not None
    assert (stored.state, stored.worker_id) == (TaskState.TASK_STATE_LEASED, "w-1")
    assert stored.leased_at_ms > 0
    assert await storage.leased_to("w-1") == [task.task_id]

    # Done, the task is no longer the worker's.
    job = await storage.get_job(task.job_id)
    assert job is not None
    stored.state = TaskState.TASK_STATE_DONE
    await storage.commit(job, expected_version=job.version, tasks=[stored])
    assert await storage.leased_to("w-1") == []


async def test_claim_ignores_other_skills_and_times_out_with_none(storage: Storage) -> None:
    await enqueue(storage, make_task(Job(), "x"))
    assert await claim_one(storage, WorkerProfile("w", ("z",)), 0.01) is None
    assert await storage.queue_depths() == {"x": 1}


async def test_a_waiting_claimer_gets_a_task_queued_later(storage: Storage) -> None:
    claim = asyncio.create_task(claim_one(storage, WorkerProfile("w", ("x",)), None))
    await until_waiting(storage, {"x": 1})
    assert not claim.done()
    task = make_task(Job(), "x")
    await enqueue(storage, task)
    claimed = await claim
    assert claimed is not None
    assert claimed.task_id == task.task_id


async def test_a_claimer_cancelled_right_after_being_woken_hands_the_task_on(
    storage: Storage,
) -> None:
    first = asyncio.create_task(claim_one(storage, WorkerProfile("w-1", ("x",)), None))
    await until_waiting(storage, {"x": 1})
    second = asyncio.create_task(claim_one(storage, WorkerProfile("w-2", ("x",)), None))
    await until_waiting(storage, {"x": 2})
    assert not first.done()
    assert not second.done()

    task = make_task(Job(), "x")
    await enqueue(storage, task)  # wakes the first claimer...
    first.cancel()  # ...which is cancelled before it can run

    with pytest.raises(asyncio.CancelledError):
        await first
    claimed = await asyncio.wait_for(second, 5)
    assert claimed is not None
    assert claimed.task_id == task.task_id
    assert claimed.worker_id == "w-2"


async def test_a_claimer_cancelled_while_waiting_takes_nothing(storage: Storage) -> None:
    gone = asyncio.create_task(claim_one(storage, WorkerProfile("w-1", ("x",)), None))
    await until_waiting(storage, {"x": 1})
    await cancelled(gone)

    task = make_task(Job(), "x")
    await enqueue(storage, task)
    claimed = await claim_one(storage, WorkerProfile("w-2", ("x",)), None)
    assert claimed is not None
    assert claimed.task_id == task.task_id


async def test_a_commit_at_version_zero_creates_the_job_with_what_its_first_step_wrote(
    storage: Storage,
) -> None:
    job = Job(id=new_id(), blueprint_name="bp", status=JobStatus.JOB_STATUS_WAITING_FOR_WORKER)
    task = make_task(job, "x")
    assert await storage.commit(job, expected_version=0, tasks=[task]) is CommitOutcome.OK
    assert job.version == 1
    stored = await storage.get_job(job.id)
    assert stored is not None
    assert (stored.version, stored.status) == (1, JobStatus.JOB_STATUS_WAITING_FOR_WORKER)
    assert (await storage.count_jobs()).get(JobStatus.JOB_STATUS_WAITING_FOR_WORKER) == 1
    claimed = await claim_one(storage, WorkerProfile("w-1", ("x",)), 5)
    assert claimed is not None
    assert claimed.task_id == task.task_id

    # The id is taken: a second creation writes nothing.
    again = Job(id=job.id, blueprint_name="bp", status=JobStatus.JOB_STATUS_FAILED)
    assert await storage.commit(again, expected_version=0) is CommitOutcome.CONFLICT
    stored = await storage.get_job(job.id)
    assert stored is not None
    assert (stored.version, stored.status) == (1, JobStatus.JOB_STATUS_WAITING_FOR_WORKER)
    # A job that does not exist cannot be changed at any other version.
    gone = Job(id=new_id(), blueprint_name="bp", status=JobStatus.JOB_STATUS_RUNNING)
    assert await storage.commit(gone, expected_version=1) is CommitOutcome.NOT_FOUND


async def test_a_job_created_ready_by_a_commit_is_run(storage: Storage) -> None:
    job = Job(id=new_id(), blueprint_name="bp", status=JobStatus.JOB_STATUS_RUNNING)
    assert await storage.commit(job, expected_version=0, ready=True) is CommitOutcome.OK
    assert await asyncio.wait_for(storage.next_ready_job(), 5) == job.id
    await storage.step_done(job.id)


async def test_commit_bumps_the_version_and_requires_the_one_read(storage: Storage) -> None:
    job = await stored_job(storage)
    first = Job()
    first.CopyFrom(job)
    first.current_state = "first"
    assert await storage.commit(first, expected_version=1) is CommitOutcome.OK

    stale = Job()
    stale.CopyFrom(job)
    stale.current_state = "second"
    task = make_task(job, "x")
    outcome = await storage.commit(stale, expected_version=1, tasks=[task], ready=True)

    assert outcome is CommitOutcome.CONFLICT
    stored = await storage.get_job(job.id)
    assert stored is not None
    assert (stored.version, stored.current_state) == (2, "first")
    assert await storage.get_task(task.task_id) is None  # nothing half-written
    assert await storage.queue_depths() == {}


async def test_commit_of_an_unknown_job_is_not_found(storage: Storage) -> None:
    outcome = await storage.commit(Job(id="nope"), expected_version=1)
    assert outcome is CommitOutcome.NOT_FOUND


async def test_commit_with_a_lease_requires_the_task_to_be_leased_to_that_worker(
    storage: Storage,
) -> None:
    task, current = await leased_to_w1(storage)
    job = current

    done = Task()
    done.CopyFrom(task)
    done.state = TaskState.TASK_STATE_DONE
    impostor = await storage.commit(
        current, expected_version=current.version, tasks=[done], lease=Lease(task.task_id, "w-2")
    )
    assert impostor is CommitOutcome.LEASE_LOST

    holder = await storage.commit(
        current, expected_version=current.version, tasks=[done], lease=Lease(task.task_id, "w-1")
    )
    assert holder is CommitOutcome.OK

    # The task is done now: the same lease no longer guards anything.
    assert await commit_under(storage, job.id, Lease(task.task_id, "w-1")) is (
        CommitOutcome.LEASE_LOST
    )


async def test_withdrawn_queued_tasks_are_cancelled_and_never_claimed(storage: Storage) -> None:
    withdrawn = [make_task(Job(), "x", priority=9), make_task(Job(), "x")]
    job = await enqueue(storage, *withdrawn)
    current = await storage.get_job(job.id)
    assert current is not None
    outcome = await storage.commit(
        current, expected_version=current.version, withdraw=[t.task_id for t in withdrawn]
    )
    assert outcome is CommitOutcome.OK
    for task in withdrawn:
        stored = await storage.get_task(task.task_id)
        assert stored is not None
        assert stored.state == TaskState.TASK_STATE_CANCELLED
    assert await storage.queue_depths() == {}

    fresh = make_task(Job(), "x")
    await enqueue(storage, fresh)
    claimed = await claim_one(storage, WorkerProfile("w", ("x",)), None)
    assert claimed is not None
    assert claimed.task_id == fresh.task_id


async def test_withdrawing_a_leased_task_keeps_its_worker_and_breaks_the_lease(
    storage: Storage,
) -> None:
    task, current = await leased_to_w1(storage)
    job = current
    await storage.commit(current, expected_version=current.version, withdraw=[task.task_id])

    stored = await storage.get_task(task.task_id)
    assert stored is not None
    assert (stored.state, stored.worker_id) == (TaskState.TASK_STATE_CANCELLED, "w-1")
    assert await commit_under(storage, job.id, Lease(task.task_id, "w-1")) is (
        CommitOutcome.LEASE_LOST
    )


async def test_progress_is_recorded_without_bumping_the_version(storage: Storage) -> None:
    job = await stored_job(storage)
    job.active_task_ids.append("t-1")
    assert await storage.commit(job, expected_version=1) is CommitOutcome.OK

    assert await storage.set_progress(job.id, "t-1", 0.5, "halfway")
    assert not await storage.set_progress(job.id, "t-other", 0.9, "not live")
    stored = await storage.get_job(job.id)
    assert stored is not None
    assert (stored.version, stored.progress, stored.progress_message) == (2, 0.5, "halfway")


async def test_each_task_queued_goes_to_a_waiting_worker_it_suits(storage: Storage) -> None:
    # Waiters: both on x and y, only x, only y. An x task then a y task
    # arrive: each is handed over as it is queued, the x task to the worker
    # that has waited longest for x, the y task to the only one left for y;
    # neither task stays queued while a worker for it waits.
    both = asyncio.create_task(claim_one(storage, WorkerProfile("w-both", ("x", "y")), None))
    await until_waiting(storage, {"x": 1, "y": 1})
    only_x = asyncio.create_task(claim_one(storage, WorkerProfile("w-x", ("x",)), None))
    await until_waiting(storage, {"x": 2, "y": 1})
    only_y = asyncio.create_task(claim_one(storage, WorkerProfile("w-y", ("y",)), None))
    await until_waiting(storage, {"x": 2, "y": 2})

    x_task = make_task(Job(), "x")
    y_task = make_task(Job(), "y", priority=5)
    await enqueue(storage, x_task, y_task)

    taken = {
        name: (await asyncio.wait_for(claim, 5)) for name, claim in (("both", both), ("y", only_y))
    }
    assert {name: t.task_id for name, t in taken.items() if t is not None} == {
        "both": x_task.task_id,
        "y": y_task.task_id,
    }
    assert await storage.queue_depths() == {}
    assert not only_x.done()
    await cancelled(only_x)


async def test_the_embedded_store_forgets_ended_jobs_after_the_retention_time() -> None:
    storage = MemoryStorage(retention_seconds=0.05)
    task = make_task(Job(), "x")
    job = await enqueue(storage, task)
    await finish_claimed(storage, job.id)
    assert await storage.get_job(job.id) is not None

    timers = asyncio.create_task(storage.next_expiry())
    for _ in range(100):
        if await storage.get_job(job.id) is None:
            break
        await asyncio.sleep(0.02)
    timers.cancel()
    assert await storage.get_job(job.id) is None
    assert await storage.get_task(task.task_id) is None
    assert await storage.count_jobs() == {}


async def test_a_batch_claim_takes_the_best_queued_tasks_in_order(storage: Storage) -> None:
    job = Job()
    low_x1 = make_task(job, "x")
    high_y = make_task(job, "y", priority=5)
    low_x2 = make_task(job, "x")
    other = make_task(job, "z", priority=9)
    await enqueue(storage, low_x1, high_y, low_x2, other)
    worker = WorkerProfile("w", ("x", "y"))

    first = await storage.claim_tasks(worker, None, limit=2)
    rest = await storage.claim_tasks(worker, None, limit=5)

    assert [t.task_id for t in first] == [high_y.task_id, low_x1.task_id]
    assert [t.task_id for t in rest] == [low_x2.task_id]
    for task in [*first, *rest]:
        stored = await storage.get_task(task.task_id)
        assert stored is not None
        assert (stored.state, stored.worker_id) == (TaskState.TASK_STATE_LEASED, "w")
        assert (task.state, task.worker_id) == (TaskState.TASK_STATE_LEASED, "w")
    assert sorted(await storage.leased_to("w")) == sorted(t.task_id for t in [*first, *rest])
    assert await storage.queue_depths() == {"z": 1}
    assert await storage.claim_tasks(worker, 0.01, limit=3) == []
    await enqueue(storage, make_task(Job(), "x"))
    assert await storage.claim_tasks(worker, 0.01, limit=0) == []  # asks for none, gets none


async def test_a_batch_claim_with_nothing_queued_waits_for_the_next_task(storage: Storage) -> None:
    worker = WorkerProfile("w", ("x",))
    claim = asyncio.create_task(storage.claim_tasks(worker, 5, limit=4))
    await until_waiting(storage, {"x": 1})
    task = make_task(Job(), "x")
    await enqueue(storage, task)
    assert [t.task_id for t in await claim] == [task.task_id]


async def test_a_batch_claim_stops_at_the_declared_concurrency(storage: Storage) -> None:
    tasks = [make_task(Job(), "x") for _ in range(4)]
    await enqueue(storage, *tasks)
    worker = WorkerProfile("w", ("x",), max_concurrent=3, active=1)

    claimed = await storage.claim_tasks(worker, None, limit=4)

    assert [t.task_id for t in claimed] == [t.task_id for t in tasks[:2]]
    assert await storage.queue_depths() == {"x": 2}


async def test_a_batch_claim_gives_a_task_with_requirements_its_place(storage: Storage) -> None:
    # A task with requirements the worker meets, of higher priority than
    # the plain ones, comes first; one it does not meet is left queued.
    job = Job()
    plain = make_task(job, "x")
    needs_gpu = make_task(job, "x", priority=5)
    needs_gpu.resource_requirements.CopyFrom(to_payload({"gpu_info": {"vram_gb": 8}}))
    needs_more = make_task(job, "x", priority=9)
    needs_more.resource_requirements.CopyFrom(to_payload({"gpu_info": {"vram_gb": 80}}))
    await enqueue(storage, plain, needs_gpu, needs_more)
    worker = WorkerProfile("w", ("x",), vram_gb=24)

    claimed = []
    while batch := await storage.claim_tasks(worker, 0.01, limit=3):
        claimed += batch

    assert [t.task_id for t in claimed] == [needs_gpu.task_id, plain.task_id]
    assert await storage.queue_depths() == {"x": 1}
