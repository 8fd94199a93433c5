"""Writing jobs: the CREATE, COMMIT and SET_PROGRESS scripts.

A commit is one script, so its version and lease guards hold across
instances exactly as in one process. It may carry two shortcuts for this
instance: the job's next step claimed here for an executor idle here (see
:mod:`.steps`), and the hand-off, a new task leased at once to a worker
waiting here (see :mod:`.handouts`). Both are undone if the commit's reply
is lost.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Any

from avtomatika.clock import now_ms
from avtomatika.dispatch import Requirements
from avtomatika.status import TERMINAL
from avtomatika.storage.base import CommitOutcome, Lease
from avtomatika.storage.redis.handouts import HandOuts
from avtomatika.storage.redis.leases import leased
from avtomatika.storage.redis.link import Link
from avtomatika.storage.redis.outages import unavailable
from avtomatika.storage.redis.recent import Recent
from avtomatika.storage.redis.scripts import CommitArgs, CommitTask, NewJob
from avtomatika.storage.redis.steps import Steps
from avtomatika.v1 import job_pb2, task_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task

__all__ = ["Commits"]


class Commits:
    """Creates and changes jobs."""

    def __init__(
        self,
        link: Link,
        steps: Steps,
        hand_outs: HandOuts,
        timers: asyncio.Event,
        recent: Recent,
    ) -> None:
        """``timers`` is set when a commit arms a timer; ``recent`` keeps
        the records committed and leased here."""
        self._link = link
        self._steps = steps
        self._hand_outs = hand_outs
        self._timers = timers
        self._recent = recent

    async def create_job(self, job: Job) -> None:
        """See :meth:`Storage.create_job <avtomatika.storage.base.Storage.create_job>`."""
        job.version = 1
        data = job.SerializeToString()
        steps = self._steps
        deadline = self._link.deadline()
        with steps.keeping(job.id) as keep:
            with unavailable("cannot create the job"):
                created = await self._link.run_before(
                    deadline,
                    "CREATE",
                    job.id,
                    data,
                    job.status,
                    keep,
                    steps.claim_until(),
                    job.client_id,
                    job.created_at_ms,
                    deadline.redis_ms,
                )
            if created == b"expired":
                raise self._link.too_late("cannot create the job")
            steps.kept(job.id, keep, data)

    async def commit(
        self,
        job: Job,
        *,
        expected_version: int,
        tasks: Sequence[Task] = (),
        withdraw: Sequence[str] = (),
        new_jobs: Sequence[Job] = (),
        lease: Lease | None = None,
        ready: bool = False,
        ready_at_ms: int = 0,
    ) -> CommitOutcome:
        """See :meth:`Storage.commit <avtomatika.storage.base.Storage.commit>`."""
        previous_version = job.version
        job.version = expected_version + 1
        data = job.SerializeToString()
        job.version = previous_version  # until the commit succeeds
        now = now_ms()
        keep_until = self._steps.claim_until()
        plain: list[Task] = []
        written: list[CommitTask] = []
        for task in tasks:
            constrained = Requirements.of(task) is not None
            if not constrained and task.state == task_pb2.TASK_STATE_QUEUED:
                plain.append(task)
            written.append(
                CommitTask(
                    task_id=task.task_id,
                    data=task.SerializeToString(),
                    state=task.state,
                    worker=task.worker_id,
                    skill=task.type,
                    priority=repr(task.priority),
                    constrained=int(constrained),
                    not_before=task.not_before_ms,
                    dispatch_deadline=task.dispatch_deadline_ms,
                    result_deadline=task.result_deadline_ms,
                    task_job=task.job_id,
                    task_created=task.created_at_ms,
                )
            )
        children = []
        for child in new_jobs:
            child.version = 1
            children.append(
                NewJob(
                    child.id,
                    child.SerializeToString(),
                    child.status,
                    child.client_id,
                    child.created_at_ms,
                )
            )
        keeps = ready and ready_at_ms <= now
        deadline = self._link.deadline()
        # Made on records served from here: guarded that they still stand.
        served = self._recent.served(job.id, expected_version)
        lease_nonce = ""
        if served is not None and lease is not None and lease.task_id == served.task_id:
            lease_nonce = served.nonce
        offer = self._hand_outs.offer(plain)
        handed_to = offer.waiter.worker.worker_id if offer is not None else ""
        with self._steps.keeping(job.id, keeps) as keep, self._hand_outs.offering(offer):
            args = CommitArgs(
                job_id=job.id,
                record=data,
                status=job.status,
                expected_version=expected_version,
                lease_task=lease.task_id if lease else "",
                lease_worker=lease.worker_id if lease else "",
                ready=int(ready),
                ready_at=ready_at_ms,
                now=now,
                commit_nonce=secrets.token_hex(8),  # a retry of it is recognised
                keep_token=keep,
                keep_until=keep_until,
                client_id=job.client_id,
                created_at=job.created_at_ms,
                hand_task=offer.task_id if offer is not None else "",
                hand_worker=handed_to,
                hand_nonce=offer.nonce if offer is not None else "",
                approval_deadline=_approval_deadline(job),
                deadline=deadline.redis_ms,
                lease_nonce=lease_nonce,
                unchanged=int(served is not None),
                tasks=written,
                withdraw=withdraw,
                new_jobs=children,
            ).argv()
            with unavailable("cannot save the change"):
                # Applied or not, when a reply is lost? A retry under the
                # same nonce says.
                outcome = await self._link.run_before(deadline, "COMMIT", *args)
            if outcome == b"expired":
                raise self._link.too_late("cannot save the change")
            handed, result, again = _committed(outcome, handed_to, now)
            if result is CommitOutcome.OK and not again and job.status not in TERMINAL:
                # For the result that may follow here (see .recent).
                self._recent.job_written(job.id, expected_version + 1, data)
            if offer is not None:
                if handed is not None:
                    self._recent.task_leased(handed, offer.nonce)
                self._hand_outs.hand(offer, handed, unheard=again)
            if result is CommitOutcome.OK and again and keep:
                # An attempt that ran unheard: the job may have moved on
                # since (a retry is recognised by its nonce whatever the job
                # became), and its step with it. The step goes to any
                # instance, if it is still claimed for us, rather than run
                # here on this record.
                self._steps.unkeep(job.id, keep)
            elif result is CommitOutcome.OK:
                self._steps.kept(job.id, keep, data)
        if result is CommitOutcome.OK:
            job.version = expected_version + 1
            # The script released the claim on this job's step.
            self._steps.committed(job.id)
            if ready or new_jobs:
                self._steps.wake.set()
            if (
                ready_at_ms
                or _approval_deadline(job)
                or any(t.dispatch_deadline_ms or t.result_deadline_ms for t in tasks)
            ):
                self._timers.set()
            handed_id = handed.task_id if handed is not None else ""
            for task in tasks:
                if task.state == task_pb2.TASK_STATE_QUEUED and task.task_id != handed_id:
                    self._hand_outs.wake(task.type)
        return result

    async def set_progress(self, job_id: str, task_id: str, progress: float, message: str) -> bool:
        """See :meth:`Storage.set_progress <avtomatika.storage.base.Storage.set_progress>`."""
        link = self._link
        self._recent.forget_job(job_id)  # its record here is no longer the job's
        with unavailable("cannot record progress"):
            pipelined = await link.fast()
            for _ in range(20):
                data, version = await pipelined.execute("HMGET", link.keys.job(job_id), "d", "v")
                if data is None:
                    return False
                job = Job.FromString(data)
                if task_id not in job.active_task_ids:
                    return False
                job.progress = progress
                job.progress_message = message
                job.updated_at_ms = now_ms()
                if await link.run("SET_PROGRESS", job_id, version, job.SerializeToString()):
                    return True
        return False  # the job kept changing; progress is advisory


def _approval_deadline(job: Job) -> int:
    """The deadline of the job's wait for a human decision, if it waits for
    one with a timeout; else 0."""
    if job.status != job_pb2.JOB_STATUS_WAITING_FOR_HUMAN:
        return 0
    return job.approval_deadline_ms


def _committed(outcome: Any, worker_id: str, now: int) -> tuple[Task | None, CommitOutcome, bool]:
    """A COMMIT script's reply: the task it handed off (leased to
    ``worker_id`` at ``now``), the outcome, and whether it was the retry of
    an attempt applied unheard."""
    if isinstance(outcome, list):
        return leased(outcome, worker_id, now), CommitOutcome.OK, len(outcome) > 3
    text = outcome.decode() if isinstance(outcome, bytes) else outcome
    if text == "again":
        return None, CommitOutcome.OK, True
    return None, CommitOutcome(text), False
