"""The embedded store: everything in this process.

Atomicity comes from asyncio itself: each operation below runs to completion
without awaiting between its read and its write, so no other coroutine can
interleave. Records are kept as protobuf bytes, as a shared store would keep
them, so callers always get fresh copies.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence

from avtomatika.clock import now_ms
from avtomatika.storage.base import CommitOutcome, Expiry, Lease
from avtomatika.storage.timers import Timers
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task, TaskState

__all__ = ["MemoryStorage"]

# A queue entry: (-priority, sequence, task_id); heapq pops the smallest, so
# the highest priority comes first and, within a priority, the oldest.
_Entry = tuple[float, int, str]

# Timer names: "<kind>:<job or task id>".
_READY, _RELEASE, _DISPATCH, _RESULT = "ready", "release", "dispatch", "result"
_LIVE = (TaskState.TASK_STATE_QUEUED, TaskState.TASK_STATE_LEASED, TaskState.TASK_STATE_SCHEDULED)


class MemoryStorage:
    """In-process storage; correct under any number of concurrent coroutines."""

    def __init__(self) -> None:
        self._jobs: dict[str, bytes] = {}
        self._versions: dict[str, int] = {}
        self._statuses: dict[str, int] = {}
        self._tasks: dict[str, bytes] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queues: defaultdict[str, list[_Entry]] = defaultdict(list)
        # task id -> skill, for every task in state QUEUED. Heap entries whose
        # task is not here any more are stale and skipped when popped.
        self._queued: dict[str, str] = {}
        self._sequence = itertools.count(1)
        # skill -> waiting claimers, in arrival order (dicts keep order).
        self._waiters: defaultdict[str, dict[asyncio.Future[None], None]] = defaultdict(dict)
        self._timers = Timers()

    async def create_job(self, job: Job) -> None:
        self._create(job)

    async def get_job(self, job_id: str) -> Job | None:
        data = self._jobs.get(job_id)
        return None if data is None else Job.FromString(data)

    async def get_task(self, task_id: str) -> Task | None:
        data = self._tasks.get(task_id)
        return None if data is None else Task.FromString(data)

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
        current = self._versions.get(job.id)
        if current is None:
            return CommitOutcome.NOT_FOUND
        if current != expected_version:
            return CommitOutcome.CONFLICT
        if lease is not None and not self._holds(lease):
            return CommitOutcome.LEASE_LOST
        job.version = expected_version + 1
        self._store_job(job)
        for task in tasks:
            self._store_task(task)
        for task_id in withdraw:
            self._withdraw(task_id)
        for child in new_jobs:
            self._create(child)
        if ready:
            if ready_at_ms > now_ms():
                self._timers.set(f"{_READY}:{job.id}", ready_at_ms)
            else:
                self._ready.put_nowait(job.id)
        return CommitOutcome.OK

    async def next_expiry(self) -> Expiry:
        while True:
            while (key := self._timers.pop_due()) is not None:
                kind, _, ref = key.partition(":")
                if kind == _READY:
                    self._ready.put_nowait(ref)
                elif kind == _RELEASE:
                    self._release(ref)
                else:
                    return Expiry(task_id=ref, kind=kind)
            await self._timers.wait()

    async def next_ready_job(self) -> str:
        return await self._ready.get()

    async def claim_task(
        self, worker_id: str, skills: Sequence[str], timeout: float | None
    ) -> Task | None:
        try:
            async with asyncio.timeout(timeout):
                return await self._claim(worker_id, skills)
        except TimeoutError:
            return None  # nothing arrived in time

    async def _claim(self, worker_id: str, skills: Sequence[str]) -> Task:
        loop = asyncio.get_running_loop()
        while True:
            task = self._pop(skills, worker_id)
            if task is not None:
                # A wake-up names a skill, not a task: a claimer woken for one
                # of its skills may have taken a better task of another. Pass
                # the wake-up on for whatever is still queued, or a claimer
                # waiting for that skill alone would sleep next to its task.
                for skill in skills:
                    if self._has_queued(skill):
                        self._wake(skill)
                return task
            waiter: asyncio.Future[None] = loop.create_future()
            for skill in skills:
                self._waiters[skill][waiter] = None
            try:
                await waiter
            except BaseException:
                # Woken and then cancelled (or timed out) before taking
                # the task: hand the wake-up on, or the task would sit in
                # its queue until the next enqueue.
                if waiter.done() and not waiter.cancelled():
                    for skill in skills:
                        self._wake(skill)
                raise
            finally:
                for skill in skills:
                    self._waiters[skill].pop(waiter, None)

    async def set_progress(self, job_id: str, task_id: str, progress: float, message: str) -> bool:
        data = self._jobs.get(job_id)
        if data is None:
            return False
        job = Job.FromString(data)
        if task_id not in job.active_task_ids:
            return False
        job.progress = progress
        job.progress_message = message
        job.updated_at_ms = now_ms()
        self._jobs[job_id] = job.SerializeToString()
        return True

    async def count_jobs(self) -> dict[int, int]:
        return dict(Counter(self._statuses.values()))

    async def queue_depths(self) -> dict[str, int]:
        return dict(Counter(self._queued.values()))

    async def flush(self) -> None:
        self._jobs.clear()
        self._versions.clear()
        self._statuses.clear()
        self._tasks.clear()
        self._queues.clear()
        self._queued.clear()
        self._timers.clear()
        while not self._ready.empty():
            self._ready.get_nowait()

    async def close(self) -> None:
        return None

    # -- internals: all synchronous, so each caller above stays atomic --

    def _create(self, job: Job) -> None:
        job.version = 1
        self._store_job(job)
        self._ready.put_nowait(job.id)

    def _store_job(self, job: Job) -> None:
        self._jobs[job.id] = job.SerializeToString()
        self._versions[job.id] = job.version
        self._statuses[job.id] = job.status

    def _store_task(self, task: Task) -> None:
        task_id = task.task_id
        if task.state == TaskState.TASK_STATE_QUEUED:
            if task_id not in self._queued:
                task.sequence = next(self._sequence)
                heapq.heappush(self._queues[task.type], (-task.priority, task.sequence, task_id))
                self._queued[task_id] = task.type
                self._wake(task.type)
        else:
            self._queued.pop(task_id, None)
        self._tasks[task_id] = task.SerializeToString()
        self._set_timers(task)

    def _set_timers(self, task: Task) -> None:
        """Arm or disarm the task's timers for its new state."""
        task_id = task.task_id
        if task.state == TaskState.TASK_STATE_SCHEDULED:
            self._timers.set(f"{_RELEASE}:{task_id}", task.not_before_ms)
        else:
            self._timers.drop(f"{_RELEASE}:{task_id}")
        if task.state == TaskState.TASK_STATE_QUEUED and task.dispatch_deadline_ms:
            self._timers.set(f"{_DISPATCH}:{task_id}", task.dispatch_deadline_ms)
        else:
            self._timers.drop(f"{_DISPATCH}:{task_id}")
        if task.state in _LIVE and task.result_deadline_ms:
            self._timers.set(f"{_RESULT}:{task_id}", task.result_deadline_ms)
        else:
            self._timers.drop(f"{_RESULT}:{task_id}")

    def _release(self, task_id: str) -> None:
        """A scheduled retry's backoff is over: into its queue."""
        data = self._tasks.get(task_id)
        if data is None:
            return
        task = Task.FromString(data)
        if task.state == TaskState.TASK_STATE_SCHEDULED:
            task.state = TaskState.TASK_STATE_QUEUED
            self._store_task(task)

    def _withdraw(self, task_id: str) -> None:
        data = self._tasks.get(task_id)
        if data is None:
            return
        task = Task.FromString(data)
        if task.state in _LIVE:
            task.state = TaskState.TASK_STATE_CANCELLED
            self._store_task(task)

    def _holds(self, lease: Lease) -> bool:
        data = self._tasks.get(lease.task_id)
        if data is None:
            return False
        task = Task.FromString(data)
        return task.state == TaskState.TASK_STATE_LEASED and task.worker_id == lease.worker_id

    def _has_queued(self, skill: str) -> bool:
        heap = self._queues.get(skill)
        if not heap:
            return False
        while heap and heap[0][2] not in self._queued:
            heapq.heappop(heap)  # withdrawn (cancelled) task
        return bool(heap)

    def _pop(self, skills: Sequence[str], worker_id: str) -> Task | None:
        best: list[_Entry] | None = None
        for skill in skills:
            if not self._has_queued(skill):
                continue
            heap = self._queues[skill]
            if best is None or heap[0] < best[0]:
                best = heap
        if best is None:
            return None
        _, _, task_id = heapq.heappop(best)
        del self._queued[task_id]
        task = Task.FromString(self._tasks[task_id])
        task.state = TaskState.TASK_STATE_LEASED
        task.worker_id = worker_id
        task.leased_at_ms = now_ms()
        self._tasks[task_id] = task.SerializeToString()
        self._timers.drop(f"{_DISPATCH}:{task_id}")
        return task

    def _wake(self, skill: str) -> None:
        for waiter in self._waiters.get(skill, ()):
            if not waiter.done():
                waiter.set_result(None)
                return
