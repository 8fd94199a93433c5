"""A result for a task leased by this instance, of a job this instance
committed last, reads both from what the instance wrote (no round trip);
the commit made on them fails if anything changed either since, wherever it
changed, and the read after that failure is Redis's. On a real
redis-server, with two instances."""

from __future__ import annotations

from avtomatika.dispatch import WorkerProfile
from avtomatika.storage.base import CommitOutcome, Lease
from avtomatika.storage.redis.storage import RedisStorage
from avtomatika.v1 import job_pb2, task_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task
from tests.support import claim_one
from tests.support.storage import OpenStorage, commit_status, new_job, queued


async def leased_here(storage: RedisStorage) -> tuple[Job, Task]:
    """A job committed on ``storage`` with a task that worker w claimed there."""
    job = await new_job(storage)
    first = queued(job)
    job.active_task_ids.append(first.task_id)
    assert await storage.commit(job, expected_version=job.version, tasks=[first]) is (
        CommitOutcome.OK
    )
    task = await claim_one(storage, WorkerProfile("w", ("x",)), 1)
    assert task is not None
    stored = await storage.get_job(job.id)
    assert stored is not None
    return stored, task


async def finish(storage: RedisStorage, task: Task, job: Job) -> CommitOutcome:
    """Commit ``job`` finished with ``task`` done, as w's result would."""
    task.state = task_pb2.TASK_STATE_DONE
    job.status = job_pb2.JOB_STATUS_FINISHED
    return await storage.commit(
        job, expected_version=job.version, tasks=[task], lease=Lease(task.task_id, "w")
    )


async def read(storage: RedisStorage, task: Task, worker_id: str = "w") -> tuple[Task, Job]:
    """The task and its job, as a result of ``worker_id`` reads them."""
    found, job = await storage.get_task_and_job(task.task_id, task.job_id, worker_id)
    assert found is not None
    assert job is not None
    return found, job


async def test_a_result_here_reads_what_this_instance_wrote_and_commits_on_it(
    open_storage: OpenStorage,
) -> None:
    a = await open_storage()
    job, task = await leased_here(a)

    found, read_job = await read(a, task)

    assert (found, read_job) == (task, job)
    assert await finish(a, found, read_job) is CommitOutcome.OK
    stored = await a.get_job(job.id)
    assert stored is not None
    assert (stored.status, stored.version) == (job_pb2.JOB_STATUS_FINISHED, job.version + 1)
    assert await a.leased_to("w") == []


async def test_progress_recorded_elsewhere_since_makes_the_commit_on_it_fail(
    open_storage: OpenStorage,
) -> None:
    a, b = await open_storage(), await open_storage()
    job, task = await leased_here(a)
    assert await b.set_progress(job.id, task.task_id, 0.5, "half way")

    found, served = await read(a, task)  # as A wrote it: without the progress
    assert served.progress == 0

    # Committed, it would lose the progress: it fails as a conflict, and the
    # read that follows is Redis's.
    assert await finish(a, found, served) is CommitOutcome.CONFLICT
    found, fresh = await read(a, task)
    assert (fresh.progress, fresh.progress_message) == (0.5, "half way")
    assert await finish(a, found, fresh) is CommitOutcome.OK
    stored = await b.get_job(job.id)
    assert stored is not None
    assert (stored.status, stored.progress) == (job_pb2.JOB_STATUS_FINISHED, 0.5)


async def test_progress_recorded_here_is_read_back_without_a_conflict(
    open_storage: OpenStorage,
) -> None:
    a = await open_storage()
    job, task = await leased_here(a)
    assert await a.set_progress(job.id, task.task_id, 0.25, "a quarter")

    found, read_job = await read(a, task)

    assert read_job.progress == 0.25
    assert await finish(a, found, read_job) is CommitOutcome.OK


async def test_a_job_changed_elsewhere_since_makes_the_commit_on_it_fail(
    open_storage: OpenStorage,
) -> None:
    a, b = await open_storage(), await open_storage()
    job, task = await leased_here(a)
    assert await commit_status(b, job.id, job_pb2.JOB_STATUS_CANCELLED) is CommitOutcome.OK

    found, served = await read(a, task)
    assert served.status == job.status  # as A wrote it

    assert await finish(a, found, served) is CommitOutcome.CONFLICT
    _, fresh = await read(a, task)
    assert fresh.status == job_pb2.JOB_STATUS_CANCELLED


async def test_a_task_leased_anew_since_makes_the_commit_on_it_fail(
    open_storage: OpenStorage,
) -> None:
    # The lease A made is undone without A knowing (a lease is undone where
    # it was made, and forgotten there; here B undoes it, called directly)
    # and the same worker claims the task again on B: still leased to w,
    # but not under the claim A served.
    a, b = await open_storage(), await open_storage()
    _, task = await leased_here(a)
    await b._leases.give_back(task.task_id, "w")
    again = await claim_one(b, WorkerProfile("w", ("x",)), 1)
    assert again is not None
    assert again.task_id == task.task_id

    found, served = await read(a, task)
    assert found.leased_at_ms == task.leased_at_ms  # as A leased it

    assert await finish(a, found, served) is CommitOutcome.LEASE_LOST
    found, fresh = await read(a, task)
    assert found.leased_at_ms == again.leased_at_ms
    assert await finish(a, found, fresh) is CommitOutcome.OK


async def test_what_was_written_here_is_served_once(open_storage: OpenStorage) -> None:
    a, b = await open_storage(), await open_storage()
    job, task = await leased_here(a)
    await read(a, task)
    assert await commit_status(b, job.id, job_pb2.JOB_STATUS_CANCELLED) is CommitOutcome.OK

    _, second = await read(a, task)

    assert second.status == job_pb2.JOB_STATUS_CANCELLED


async def test_what_would_refuse_the_result_is_read_from_redis(open_storage: OpenStorage) -> None:
    # What this instance wrote may be stale; had it the result refused, no
    # commit would tell: only what has it accepted, and so committed on, is
    # served from here.
    a, b = await open_storage(), await open_storage()
    job, task = await leased_here(a)
    assert await commit_status(b, job.id, job_pb2.JOB_STATUS_CANCELLED) is CommitOutcome.OK

    _, for_another_worker = await read(a, task, "v")

    assert for_another_worker.status == job_pb2.JOB_STATUS_CANCELLED


async def test_a_task_added_elsewhere_is_not_judged_on_the_record_written_here(
    open_storage: OpenStorage,
) -> None:
    # A committed the job; B retried its task as a new one (the job's new
    # version lists it); A claims that new task: A's record of the job does
    # not list it, Redis's does.
    a, b = await open_storage(), await open_storage()
    job, task = await leased_here(a)
    current = await b.get_job(job.id)
    assert current is not None
    task.state = task_pb2.TASK_STATE_CANCELLED
    retry = queued(current)
    current.active_task_ids[:] = [retry.task_id]
    outcome = await b.commit(current, expected_version=current.version, tasks=[task, retry])
    assert outcome is CommitOutcome.OK
    claimed = await claim_one(a, WorkerProfile("w", ("x",)), 1)
    assert claimed is not None
    assert claimed.task_id == retry.task_id

    found, read_job = await read(a, claimed)

    assert found == claimed
    assert list(read_job.active_task_ids) == [retry.task_id]
    assert await finish(a, found, read_job) is CommitOutcome.OK
