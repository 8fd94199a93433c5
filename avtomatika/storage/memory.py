"""The embedded store: everything in this process.

Atomicity comes from asyncio itself: each operation below runs to completion
without awaiting between its read and its write, so no other coroutine can
interleave. Records are kept as protobuf bytes, as a shared store would keep
them, so callers always get fresh copies.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence

from avtomatika.clock import now_ms
from avtomatika.dispatch import Requirements, WorkerProfile, eligible
from avtomatika.status import TERMINAL
from avtomatika.storage.base import (
    APPROVAL_EXPIRY,
    BoundReached,
    ClientBounds,
    ClientUsage,
    CommitOutcome,
    Expiry,
    JobCursor,
    Lease,
    queued_at,
)
from avtomatika.storage.timers import Timers
from avtomatika.storage.waiters import Waiters, pick
from avtomatika.v1 import job_pb2, task_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task

__all__ = ["MemoryStorage"]

# A queue entry: (-priority, sequence, task_id); heapq pops the smallest, so
# the highest priority comes first and, within a priority, the oldest.
_Entry = tuple[float, int, str]

# Timer names: "<kind>:<job or task id>".
_READY, _RELEASE, _DISPATCH, _RESULT = "ready", "release", "dispatch", "result"
_FORGET = "forget"
_DEFAULT_RETENTION = 7 * 24 * 3600.0
_LIVE = (task_pb2.TASK_STATE_QUEUED, task_pb2.TASK_STATE_LEASED, task_pb2.TASK_STATE_SCHEDULED)


class MemoryStorage:
    """In-process storage; correct under any number of concurrent coroutines."""

    def __init__(
        self, retention_seconds: float = _DEFAULT_RETENTION, retention_bytes: int = 0
    ) -> None:
        """Ended jobs and their tasks are forgotten ``retention_seconds``
        after they end (``JOB_RETENTION_SECONDS``), or sooner, oldest ended
        first, while ended jobs' records hold more than ``retention_bytes``
        (``JOB_RETENTION_MAX_BYTES``; 0: no such budget), so memory stays
        bounded by the jobs of that period and by that size."""
        self._retention_ms = int(retention_seconds * 1000)
        self._retention_bytes = retention_bytes
        self._jobs: dict[str, bytes] = {}
        # client id -> bytes of its job records (CLIENT_MAX_STORED_BYTES).
        self._client_bytes: Counter[str] = Counter()
        # Ended jobs in the order they ended -> their record's size.
        self._ended: dict[str, int] = {}
        self._ended_bytes = 0
        # client id -> job id -> bytes: jobs being created (Storage.reserve).
        self._reservations: defaultdict[str, dict[str, int]] = defaultdict(dict)
        self.forgotten: Counter[str] = Counter()
        """Ended jobs forgotten so far, by reason: ``age`` (retention time)
        or ``size`` (the byte budget); exported as a metric."""
        self._job_tasks: defaultdict[str, set[str]] = defaultdict(set)
        self._versions: dict[str, int] = {}
        self._statuses: dict[str, int] = {}
        # client id -> status -> its jobs in that status (GET /api/v1/jobs counts).
        self._client_statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)
        # client id -> (created_at_ms, job id) of its jobs, sorted.
        self._by_client: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
        self._tasks: dict[str, bytes] = {}
        # Leased tasks: task id -> worker, worker -> task ids.
        self._holders: dict[str, str] = {}
        self._leases: dict[str, set[str]] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        # Per skill, two heaps: tasks any worker with the skill may take
        # (popped in O(log n)), and tasks with requirements (scanned for the
        # first one a claiming worker meets).
        self._queues: defaultdict[str, list[_Entry]] = defaultdict(list)
        self._constrained: defaultdict[str, list[_Entry]] = defaultdict(list)
        self._requirements: dict[str, Requirements] = {}
        # task id -> skill, for every task in state QUEUED. Heap entries whose
        # task is not here any more are stale and skipped when popped.
        self._queued: dict[str, str] = {}
        # task id -> when it was queued (epoch ms), for the same tasks.
        self._queued_at: dict[str, int] = {}
        self._sequence = itertools.count(1)
        self._waiters: Waiters[_Waiter] = Waiters()
        self._timers = Timers()

    async def open(self) -> None:
        return None

    async def create_job(self, job: Job) -> None:
        self._create(job)

    async def get_job(self, job_id: str) -> Job | None:
        data = self._jobs.get(job_id)
        return None if data is None else Job.FromString(data)

    async def get_task(self, task_id: str) -> Task | None:
        data = self._tasks.get(task_id)
        return None if data is None else Task.FromString(data)

    async def get_tasks(self, task_ids: Sequence[str]) -> list[Task | None]:
        return [await self.get_task(task_id) for task_id in task_ids]

    async def get_task_and_job(
        self, task_id: str, job_id: str, worker_id: str = ""
    ) -> tuple[Task | None, Job | None]:
        return await self.get_task(task_id), await self.get_job(job_id)

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
        if current is None and expected_version:
            return CommitOutcome.NOT_FOUND
        if (current or 0) != expected_version:
            return CommitOutcome.CONFLICT
        if lease is not None and not self._holds(lease):
            return CommitOutcome.LEASE_LOST
        job.version = expected_version + 1
        was_terminal = self._statuses.get(job.id) in TERMINAL
        if job.status in TERMINAL and not was_terminal:
            self._timers.set(f"{_FORGET}:{job.id}", now_ms() + self._retention_ms)
        elif was_terminal and job.status not in TERMINAL:
            self._timers.drop(f"{_FORGET}:{job.id}")  # retried: it lives on
        if job.status == job_pb2.JOB_STATUS_WAITING_FOR_HUMAN and job.approval_deadline_ms:
            self._timers.set(f"{APPROVAL_EXPIRY}:{job.id}", job.approval_deadline_ms)
        else:
            self._timers.drop(f"{APPROVAL_EXPIRY}:{job.id}")
        self._store_job(job)
        for task in tasks:
            self._job_tasks[task.job_id].add(task.task_id)
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
        self._evict()
        return CommitOutcome.OK

    async def next_expiry(self) -> Expiry:
        while True:
            while (key := self._timers.pop_due()) is not None:
                kind, _, ref = key.partition(":")
                if kind == _READY:
                    self._ready.put_nowait(ref)
                elif kind == _RELEASE:
                    self._release(ref)
                elif kind == _FORGET:
                    self._forget(ref)
                    self.forgotten["age"] += 1
                else:
                    return Expiry(task_id=ref, kind=kind)
            await self._timers.wait()

    async def next_ready_job(self) -> str:
        return await self._ready.get()

    async def step_done(self, job_id: str, *, completed: bool = True) -> None:
        return None  # nothing survives this process, so there is no claim to release

    async def leased_to(self, worker_id: str) -> list[str]:
        return sorted(self._leases.get(worker_id, ()))

    async def claim_tasks(
        self, worker: WorkerProfile, timeout: float | None, limit: int = 1
    ) -> list[Task]:
        if limit < 1:
            return []
        try:
            async with asyncio.timeout(timeout):
                return await self._claim(worker, limit)
        except TimeoutError:
            return []  # nothing arrived in time

    async def _claim(self, worker: WorkerProfile, limit: int) -> list[Task]:
        if worker.max_concurrent:
            limit = min(limit, worker.max_concurrent - worker.active)
        tasks: list[Task] = []
        while len(tasks) < limit and (task := self._pop(worker)) is not None:
            tasks.append(task)
        if tasks:
            return tasks
        # Nothing queued suits it: wait to be handed a task as one is queued.
        waiter = _Waiter(worker, asyncio.get_running_loop().create_future())
        self._waiters.add(waiter)
        try:
            return [await waiter.future]
        except BaseException:
            # Handed a task and then cancelled (or timed out) before taking
            # it: the task goes back where it was in its queue.
            if waiter.future.done() and not waiter.future.cancelled():
                self._give_back(waiter.future.result())
            raise
        finally:
            self._waiters.remove(waiter)

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
        self._write(job)
        return True

    async def count_jobs(self) -> dict[int, int]:
        return dict(Counter(self._statuses.values()))

    async def count_client_jobs(self, client_id: str) -> dict[int, int]:
        counts = self._client_statuses.get(client_id)
        return {status: n for status, n in counts.items() if n} if counts else {}

    async def reserve(
        self, client_id: str, job_id: str, size: int, bounds: ClientBounds
    ) -> BoundReached | None:
        # No await: the check and the reservation are one step.
        held = self._reservations.get(client_id, {})
        usage = await self.client_usage(client_id)
        jobs = usage.jobs_in_flight + len(held)
        if bounds.max_jobs_in_flight and jobs >= bounds.max_jobs_in_flight:
            return BoundReached("jobs", jobs)
        stored = usage.stored_bytes + sum(held.values())
        if bounds.max_stored_bytes and stored + size > bounds.max_stored_bytes:
            return BoundReached("bytes", stored)
        self._reservations[client_id][job_id] = size
        return None

    async def unreserve(self, client_id: str, job_id: str) -> None:
        self._unreserve(client_id, job_id)

    def _unreserve(self, client_id: str, job_id: str) -> None:
        held = self._reservations.get(client_id)
        if held is not None:
            held.pop(job_id, None)
            if not held:
                del self._reservations[client_id]

    async def client_usage(self, client_id: str) -> ClientUsage:
        counts = self._client_statuses.get(client_id, Counter())
        in_flight = sum(n for status, n in counts.items() if status not in TERMINAL)
        return ClientUsage(in_flight, self._client_bytes.get(client_id, 0))

    async def client_jobs(
        self, client_id: str, before: JobCursor | None, since_ms: int, limit: int
    ) -> tuple[list[Job], JobCursor | None]:
        index = self._by_client.get(client_id, [])
        end = len(index) if before is None else bisect.bisect_left(index, before)
        start = max(end - limit, bisect.bisect_left(index, (since_ms, "")))
        entries = index[start:end][::-1]
        jobs = [Job.FromString(self._jobs[job_id]) for _, job_id in entries]
        exhausted = start == 0 or index[start - 1][0] < since_ms
        return jobs, None if exhausted or not entries else entries[-1]

    async def queue_depths(self) -> dict[str, int]:
        return dict(Counter(self._queued.values()))

    async def oldest_queued(self) -> dict[str, int]:
        # One pass over the queued tasks' times (no record decoded): the
        # dashboard asks now and then, and the queues are heaps by priority.
        oldest: dict[str, int] = {}
        for task_id, skill in self._queued.items():
            at = self._queued_at[task_id]
            if at < oldest.get(skill, at + 1):
                oldest[skill] = at
        return oldest

    async def waiting_workers(self) -> dict[str, int]:
        return self._waiters.counts()

    async def ping(self) -> None:
        return None  # in this process: it answers whenever the process does

    async def flush(self) -> None:
        self._jobs.clear()
        self._by_client.clear()
        self._versions.clear()
        self._statuses.clear()
        self._client_statuses.clear()
        self._job_tasks.clear()
        self._holders.clear()
        self._leases.clear()
        self._tasks.clear()
        self._queues.clear()
        self._constrained.clear()
        self._requirements.clear()
        self._queued.clear()
        self._queued_at.clear()
        self._timers.clear()
        while not self._ready.empty():
            self._ready.get_nowait()

    async def close(self) -> None:
        return None

    # -- internals: all synchronous, so each caller above stays atomic --

    def _put(self, task: Task) -> None:
        """Store ``task``, keeping each worker's set of leased task ids."""
        task_id = task.task_id
        holder = self._holders.pop(task_id, None)
        if holder is not None:
            held = self._leases[holder]
            held.discard(task_id)
            if not held:
                del self._leases[holder]
        if task.state == task_pb2.TASK_STATE_LEASED:
            self._holders[task_id] = task.worker_id
            self._leases.setdefault(task.worker_id, set()).add(task_id)
        self._tasks[task_id] = task.SerializeToString()

    def _forget(self, job_id: str) -> None:
        """Retention: drop an ended job and its tasks (all ended too)."""
        for task_id in self._job_tasks.pop(job_id, ()):
            self._tasks.pop(task_id, None)
            for kind in (_RELEASE, _DISPATCH, _RESULT):
                self._timers.drop(f"{kind}:{task_id}")
        data = self._jobs.pop(job_id, None)
        self._ended_bytes -= self._ended.pop(job_id, 0)
        self._timers.drop(f"{_FORGET}:{job_id}")
        if data is not None:
            job = Job.FromString(data)
            self._add_bytes(job.client_id, -len(data))
            index = self._by_client[job.client_id]
            at = bisect.bisect_left(index, (job.created_at_ms, job_id))
            if at < len(index) and index[at] == (job.created_at_ms, job_id):
                del index[at]
            if not index:
                del self._by_client[job.client_id]
            self._count(job.client_id, job.status, -1)
        self._timers.drop(f"{APPROVAL_EXPIRY}:{job_id}")
        self._versions.pop(job_id, None)
        self._statuses.pop(job_id, None)

    def _create(self, job: Job) -> None:
        job.version = 1
        self._store_job(job)
        self._ready.put_nowait(job.id)

    def _store_job(self, job: Job) -> None:
        if job.id not in self._jobs:
            # Its client's index, oldest first: listing walks it backwards.
            bisect.insort(self._by_client[job.client_id], (job.created_at_ms, job.id))
            self._unreserve(job.client_id, job.id)  # now counted as a job
        self._write(job)
        self._versions[job.id] = job.version
        previous = self._statuses.get(job.id)
        if previous != job.status:
            if previous is not None:
                self._count(job.client_id, previous, -1)
            self._count(job.client_id, job.status, 1)
        self._statuses[job.id] = job.status

    def _write(self, job: Job) -> None:
        """Store ``job``'s record, keeping its client's bytes and the ended
        jobs' sizes."""
        data = job.SerializeToString()
        old = self._jobs.get(job.id)
        self._jobs[job.id] = data
        self._add_bytes(job.client_id, len(data) - (len(old) if old is not None else 0))
        if job.status in TERMINAL:
            # An update keeps its place: the order is that of ending.
            self._ended_bytes += len(data) - self._ended.get(job.id, 0)
            self._ended[job.id] = len(data)
        elif job.id in self._ended:  # retried: it lives on
            self._ended_bytes -= self._ended.pop(job.id)

    def _evict(self) -> None:
        """Over the byte budget, forget the oldest ended jobs; never the one
        that ended last (a client may still be reading it)."""
        while (
            self._retention_bytes
            and self._ended_bytes > self._retention_bytes
            and len(self._ended) > 1
        ):
            self._forget(next(iter(self._ended)))
            self.forgotten["size"] += 1

    def _add_bytes(self, client_id: str, change: int) -> None:
        self._client_bytes[client_id] += change
        if self._client_bytes[client_id] <= 0:
            del self._client_bytes[client_id]

    def _count(self, client_id: str, status: int, change: int) -> None:
        counts = self._client_statuses[client_id]
        counts[status] += change
        if not +counts:  # none left: the client's entry goes, memory stays bounded
            del self._client_statuses[client_id]

    def _store_task(self, task: Task) -> None:
        task_id = task.task_id
        if task.state == task_pb2.TASK_STATE_QUEUED:
            if task_id not in self._queued:
                task.sequence = next(self._sequence)
                self._enqueue(task)
                return
        else:
            self._queued.pop(task_id, None)
            self._queued_at.pop(task_id, None)
            self._requirements.pop(task_id, None)
        self._put(task)
        self._set_timers(task)

    def _enqueue(self, task: Task) -> None:
        """Hand a task entering its queue to the best waiting worker it
        suits, or else queue it (keeping its sequence): so no task waits
        while a worker it suits waits too."""
        requirements = Requirements.of(task)
        if not self._offer(task, requirements):
            task_id = task.task_id
            entry = (-task.priority, task.sequence, task_id)
            if requirements is None:
                heapq.heappush(self._queues[task.type], entry)
            else:
                heapq.heappush(self._constrained[task.type], entry)
                self._requirements[task_id] = requirements
            self._queued[task_id] = task.type
            self._queued_at[task_id] = queued_at(task)
            self._put(task)
            self._set_timers(task)

    def _offer(self, task: Task, requirements: Requirements | None) -> bool:
        """Lease ``task`` to the waiting worker its strategy picks, if any."""
        chosen = pick(task, task.type, requirements, self._waiters.parked(task.type))
        if chosen is None:
            return False
        leased = Task()
        leased.CopyFrom(task)
        self._lease(leased, chosen.worker.worker_id, queued=False)
        self._waiters.remove(chosen)
        chosen.future.set_result(leased)
        return True

    def _give_back(self, task: Task) -> None:
        """Undo a hand-over the claimer never took, if nothing else has
        happened to the task since."""
        data = self._tasks.get(task.task_id)
        if data is None:
            return
        current = Task.FromString(data)
        if current.state != task_pb2.TASK_STATE_LEASED or current.worker_id != task.worker_id:
            return
        current.state = task_pb2.TASK_STATE_QUEUED
        current.worker_id = ""
        current.leased_at_ms = 0
        self._enqueue(current)

    def _set_timers(self, task: Task) -> None:
        """Arm or disarm the task's timers for its new state."""
        task_id = task.task_id
        if task.state == task_pb2.TASK_STATE_SCHEDULED:
            self._timers.set(f"{_RELEASE}:{task_id}", task.not_before_ms)
        else:
            self._timers.drop(f"{_RELEASE}:{task_id}")
        if task.state == task_pb2.TASK_STATE_QUEUED and task.dispatch_deadline_ms:
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
        if task.state == task_pb2.TASK_STATE_SCHEDULED:
            task.state = task_pb2.TASK_STATE_QUEUED
            self._store_task(task)

    def _withdraw(self, task_id: str) -> None:
        data = self._tasks.get(task_id)
        if data is None:
            return
        task = Task.FromString(data)
        if task.state in _LIVE:
            task.state = task_pb2.TASK_STATE_CANCELLED
            self._store_task(task)

    def _holds(self, lease: Lease) -> bool:
        data = self._tasks.get(lease.task_id)
        if data is None:
            return False
        task = Task.FromString(data)
        return task.state == task_pb2.TASK_STATE_LEASED and task.worker_id == lease.worker_id

    def _pop(self, worker: WorkerProfile) -> Task | None:
        """Lease the worker the best queued task it suits: highest priority,
        then first queued, over all its skills."""
        if worker.max_concurrent and worker.active >= worker.max_concurrent:
            return None  # at its declared concurrency
        best: _Entry | None = None
        plain: list[_Entry] | None = None
        for skill in worker.skills:
            heap = self._queues.get(skill)
            if heap:
                while heap and heap[0][2] not in self._queued:
                    heapq.heappop(heap)  # withdrawn (cancelled) task
                if heap and (best is None or heap[0] < best):
                    best, plain = heap[0], heap
            constrained = self._constrained.get(skill)
            if constrained:
                entry = self._best_constrained(constrained, worker, skill)
                if entry is not None and (best is None or entry < best):
                    best, plain = entry, None
        if best is None:
            return None
        task_id = best[2]
        if plain is not None:
            heapq.heappop(plain)
        # A constrained entry stays in its heap, stale, until the next scan.
        del self._queued[task_id]
        del self._queued_at[task_id]
        if plain is None:
            del self._requirements[task_id]
        task = Task.FromString(self._tasks[task_id])
        self._lease(task, worker.worker_id)
        return task

    def _best_constrained(
        self, heap: list[_Entry], worker: WorkerProfile, skill: str
    ) -> _Entry | None:
        """The first (by priority, then age) task of ``heap`` the worker
        meets the requirements of. A linear scan: only tasks with
        requirements pay for it, and it drops stale entries as it goes."""
        if any(entry[2] not in self._queued for entry in heap):
            heap[:] = [entry for entry in heap if entry[2] in self._queued]
            heapq.heapify(heap)
        best: _Entry | None = None
        for entry in heap:
            if (best is None or entry < best) and eligible(
                self._requirements[entry[2]], worker, skill
            ):
                best = entry
        return best

    def _lease(self, task: Task, worker_id: str, *, queued: bool = True) -> None:
        """Lease ``task`` to the worker; ``queued``: it was stored QUEUED,
        with its timers armed, rather than handed over as it was written."""
        task.state = task_pb2.TASK_STATE_LEASED
        task.worker_id = worker_id
        task.leased_at_ms = now_ms()
        self._put(task)
        if queued:
            self._timers.drop(f"{_DISPATCH}:{task.task_id}")
        else:
            self._set_timers(task)


class _Waiter:
    """A worker waiting to be handed a task."""

    __slots__ = ("future", "worker")

    def __init__(self, worker: WorkerProfile, future: asyncio.Future[Task]) -> None:
        self.worker = worker
        self.future = future

    @property
    def parked(self) -> bool:
        """Not handed a task yet."""
        return not self.future.done()
