"""Storage in Redis, shared by every orchestrator instance pointed at it.

Every change is one Lua script (:mod:`.scripts`), so the version and lease
guards of :meth:`commit` hold across instances exactly as they do in one
process. What an instance keeps locally is only how to wait well:

- **Ready jobs**: instances take job ids from one list, each claimed with a
  lease (``STEP_LEASE_SECONDS``) that the instance renews while its step
  runs. A step of an instance that died is run again elsewhere once its
  lease lapses; the job's version guard lets only one commit of a step win.
- **Claims**: a worker takes the best queued task of its skills in one
  script, or the best few, up to its free slots (a backlog drains in one
  round trip; one at a time while tasks with requirements are queued for
  its skills, as Lua cannot check requirements). A worker with nothing to
  take waits for a wake-up on the pub/sub channel (published by the script
  that queued a task) and re-checks at least every ``_RECHECK`` seconds,
  since pub/sub messages can be lost.
  Among workers waiting on one instance the task's dispatch strategy picks,
  as in the embedded store; across instances, the first to claim wins.
- **Hand-off**: a commit that queues a task while a worker for it waits on
  the same instance leases it to that worker in the commit script itself
  (no queue entry, wake-up or claim), and that worker's next claim waits
  without looking first if nothing was queued for it since its last look.
- **Timers** (deadlines, backoffs, scheduled retries) are a sorted set that
  every instance polls; a fired deadline is re-armed a while later until
  handling it changes the task, so it fires on exactly one instance while
  that instance lives, and on another if it dies.

Redis being unreachable surfaces as :class:`~avtomatika.errors.Unavailable`
from the calls a request makes; the waiting calls (claims, ready jobs,
timers) back off and retry instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from avtomatika.clock import now_ms
from avtomatika.config import Settings
from avtomatika.dispatch import Requirements, WorkerProfile, choose, eligible
from avtomatika.errors import Unavailable
from avtomatika.storage.base import CommitOutcome, Expiry, Lease
from avtomatika.storage.redis import scripts
from avtomatika.storage.redis.connection import Redis, connect
from avtomatika.storage.redis.keys import Keys
from avtomatika.storage.redis.outages import DOWN, check_cancelled, unavailable, until_up
from avtomatika.storage.redis.pipelined import Pipelined, Script
from avtomatika.storage.redis.pubsub import Subscriber
from avtomatika.storage.redis.scripts import CommitArgs, CommitTask, NewJob
from avtomatika.v1 import task_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task

__all__ = ["RedisStorage"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# A waiting claim or an idle executor re-checks Redis at least this often,
# in case a wake-up message was lost (pub/sub is fire-and-forget).
_RECHECK = 1.0
# The timer loop sleeps at most this long: timers set by other instances are
# seen within it.
_TIMER_TICK = 0.1
# Timers fired per script call; ended jobs forgotten per sweep.
_BATCH = 100
# A fired deadline is re-armed this much later in case its handler dies.
_RECLAIM_MS = 30_000
# Ready jobs taken per script call.
_TAKE = 4
# Constrained tasks examined per claim (the oldest, by priority).
_CONSTRAINED_SCAN = 200
_SWEEP_EVERY = 5.0
# A job record read with a step's claim is used for the step if it starts
# within this many seconds; older, the step reads the job afresh.
_RECORD_FRESH = 0.02


class RedisStorage:
    """The storage contract on Redis (redis-py asyncio)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ValueError("RedisStorage needs REDIS_URL")
        self._url = settings.redis_url
        self.keys = Keys(settings.redis_prefix)
        # The default is unique even for two orchestrators in one process.
        self.instance_id = (
            settings.instance_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        )
        self._retention_ms = int(settings.job_retention_seconds * 1000)
        self._lease_ms = int(settings.step_lease_seconds * 1000)
        self._sweep_every = min(_SWEEP_EVERY, settings.job_retention_seconds / 4)
        self._client: Redis | None = None
        # The commands of every job's path go through one pipelined
        # connection; the pool above serves the rare and multi-reply ones.
        self._pipelined: Pipelined | None = None
        self._scripts = {
            name: Script(scripts.source(self.keys, getattr(scripts, name)))
            for name in scripts.NAMES
        }
        self._subscriber: Subscriber | None = None
        self._opening: asyncio.Lock | None = None
        # Local waiting: claimers by skill (in arrival order), idle executors.
        self._waiters: dict[str, dict[_Waiter, None]] = {}
        self._wakes: dict[str, int] = {}
        """Wake-ups per skill, ever (local and from other instances)."""
        self._quiet: dict[str, _Look] = {}
        """Per worker handed its last task while it waited: when it last
        found its queues empty."""
        # Skills whose queued tasks wait for a hand-out pass, in order, and
        # the one coroutine running the passes.
        self._to_hand: dict[str, None] = {}
        self._handing: asyncio.Future[None] | None = None
        self._ready_wake = asyncio.Event()
        self._timer_wake = asyncio.Event()
        # Ready jobs taken, not yet started: (job id, claim token).
        self._ready: deque[tuple[str, str]] = deque()
        # The record of each ready job taken, read with it; then that of the
        # job each executor task has started, until the step reads it.
        self._taken_records: dict[str, tuple[bytes, float]] = {}
        self._first_reads: dict[asyncio.Task[Any] | None, tuple[str, bytes]] = {}
        # The executor task running a step -> (job id, its claim token).
        self._stepping: dict[asyncio.Task[Any] | None, tuple[str, str]] = {}
        self._tokens = itertools.count(1)
        self._token_prefix = f"{self.instance_id}:{secrets.token_hex(4)}"
        self._fetching: asyncio.Lock | None = None
        # Executors waiting in next_ready_job, and commits in flight that
        # will hand one of them the job they make ready.
        self._idle_executors = 0
        self._keeping = 0
        self._expired: deque[Expiry] = deque()
        self._last_sweep = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self._claiming = 0  # claims in flight
        self._no_claims = asyncio.Event()
        self._no_claims.set()
        self._closing = False

    # -- connection --

    # redis-py types replies as ``bytes | str`` (it cannot know whether the
    # client decodes); this one never does, so replies are bytes. The client
    # is typed Any here rather than every reply cast at its call.
    @property
    def client(self) -> Any:
        """The Redis client (after :meth:`open`)."""
        if self._client is None:
            raise RuntimeError("RedisStorage is not open")
        return self._client

    async def open(self) -> None:
        """Connect (raising :class:`~avtomatika.errors.ConfigError` naming
        the URL if Redis does not answer), register the scripts and start
        listening for wake-ups. Idempotent."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is not None:
                return
            client = await connect(self._url)
            pipelined = Pipelined(self._url)
            # Loaded now, so that a script runs by its SHA even for a caller
            # that is gone before the reply (one that found it missing
            # would not be there to send it whole).
            loads = (("SCRIPT", "LOAD", script.body) for script in self._scripts.values())
            try:
                await pipelined.execute_many(*loads)
            except BaseException:
                await pipelined.close()
                await client.aclose()
                raise
            self._pipelined = pipelined
            subscriber = Subscriber(self._url)
            subscriber.on(self.keys.wake_channel, self._on_wake)
            subscriber.on_reconnect(self._wake_everyone)
            await subscriber.start()
            self._client, self._subscriber = client, subscriber
            self._renewer = asyncio.create_task(self._renew_forever(), name="avtomatika-leases")

    async def _redis(self) -> Any:
        if self._client is None:
            if self._closing:
                raise Unavailable("the shared store (Redis) is closed")
            await self.open()
        return self.client

    async def _fast(self) -> Pipelined:
        await self._redis()
        assert self._pipelined is not None
        return self._pipelined

    async def _get(self, key: str) -> bytes | None:
        value: bytes | None = await (await self._fast()).execute("GET", key)
        return value

    async def _run(self, name: str, *args: Any) -> Any:
        pipelined = self._pipelined or await self._fast()
        return await pipelined.run(self._scripts[name], [self.keys.root], list(args))

    # -- jobs --

    async def create_job(self, job: Job) -> None:
        job.version = 1
        data = job.SerializeToString()
        with self._keeping_step(job.id) as keep:
            with unavailable("cannot create the job"):
                await self._run("CREATE", job.id, data, job.status, keep, self._claim_until())
            self._kept(job.id, keep, data)

    async def get_job(self, job_id: str) -> Job | None:
        if self._first_reads:
            # A step reading the job it just took: the record came with it.
            # It may be a few milliseconds old; the step's commit is guarded
            # by the version it read, as with any read.
            first = self._first_reads.pop(asyncio.current_task(), None)
            if first is not None and first[0] == job_id:
                return Job.FromString(first[1])
        with unavailable("cannot read the job"):
            data = await (await self._fast()).execute("HGET", self.keys.job(job_id), "d")
        return None if data is None else Job.FromString(data)

    async def get_task(self, task_id: str) -> Task | None:
        with unavailable("cannot read the task"):
            fields = await (await self._fast()).execute(*self._task_read(task_id))
        return _task(*fields)

    async def get_tasks(self, task_ids: Sequence[str]) -> list[Task | None]:
        if not task_ids:
            return []
        with unavailable("cannot read the tasks"):
            found = await (await self._fast()).execute_many(*map(self._task_read, task_ids))
        return [_task(*fields) for fields in found]

    async def get_task_and_job(self, task_id: str, job_id: str) -> tuple[Task | None, Job | None]:
        with unavailable("cannot read the task and its job"):
            fields, data = await (await self._fast()).execute_many(
                self._task_read(task_id), ("HGET", self.keys.job(job_id), "d")
            )
        return _task(*fields), None if data is None else Job.FromString(data)

    def _task_read(self, task_id: str) -> tuple[str, ...]:
        """The command reading a task: its bytes and the fields kept beside."""
        return ("HMGET", self.keys.task(task_id), "d", "st", "w", "la", "sq")

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
        previous_version = job.version
        job.version = expected_version + 1
        data = job.SerializeToString()
        job.version = previous_version  # until the commit succeeds
        now = now_ms()
        keep_until = self._claim_until()
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
                )
            )
        children = []
        for child in new_jobs:
            child.version = 1
            children.append(NewJob(child.id, child.SerializeToString(), child.status))
        keeps = ready and ready_at_ms <= now
        offer = self._offer(plain)
        handed_to = offer.waiter.worker.worker_id if offer is not None else ""
        with self._keeping_step(job.id, keeps) as keep, self._offering(offer):
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
                hand_task=offer.task_id if offer is not None else "",
                hand_worker=handed_to,
                hand_nonce=offer.nonce if offer is not None else "",
                tasks=written,
                withdraw=withdraw,
                new_jobs=children,
            ).argv()
            with unavailable("cannot save the change"):
                for attempt in range(3):
                    try:
                        outcome = await self._run("COMMIT", *args)
                        break
                    except DOWN:
                        # Applied or not? A retry under the same nonce says.
                        if attempt == 2:
                            raise
                        await asyncio.sleep(0.05 * 2**attempt)
            handed, result, again = _committed(outcome, handed_to, now)
            if offer is not None:
                self._hand(offer, handed, unheard=again)
            if result is CommitOutcome.OK and again and keep:
                # An attempt that ran unheard: the job may have moved on
                # since (a retry is recognised by its nonce whatever the job
                # became), and its step with it. The step goes to any
                # instance, if it is still claimed for us, rather than run
                # here on this record.
                self._unkeep(job.id, keep)
            elif result is CommitOutcome.OK:
                self._kept(job.id, keep, data)
        if result is CommitOutcome.OK:
            job.version = expected_version + 1
            # The script released the claim on this job's step: if this is
            # the step committing, its step_done needs no round trip.
            if self._stepping:  # only a step an executor took holds a claim
                stepping = asyncio.current_task()
                held = self._stepping.get(stepping)
                if held is not None and held[0] == job.id and held[1]:
                    self._stepping[stepping] = (job.id, "")
            if ready or new_jobs:
                self._ready_wake.set()
            if ready_at_ms or any(t.dispatch_deadline_ms or t.result_deadline_ms for t in tasks):
                self._timer_wake.set()
            handed_id = handed.task_id if handed is not None else ""
            for task in tasks:
                if task.state == task_pb2.TASK_STATE_QUEUED and task.task_id != handed_id:
                    self._wake(task.type)
        return result

    async def set_progress(self, job_id: str, task_id: str, progress: float, message: str) -> bool:
        with unavailable("cannot record progress"):
            pipelined = await self._fast()
            for _ in range(20):
                data, version = await pipelined.execute("HMGET", self.keys.job(job_id), "d", "v")
                if data is None:
                    return False
                job = Job.FromString(data)
                if task_id not in job.active_task_ids:
                    return False
                job.progress = progress
                job.progress_message = message
                job.updated_at_ms = now_ms()
                if await self._run("SET_PROGRESS", job_id, version, job.SerializeToString()):
                    return True
        return False  # the job kept changing; progress is advisory

    async def count_jobs(self) -> dict[int, int]:
        with unavailable("cannot count jobs"):
            counts = await (await self._redis()).hgetall(self.keys.statuses)
        return {int(status): int(n) for status, n in counts.items() if int(n) > 0}

    async def queue_depths(self) -> dict[str, int]:
        with unavailable("cannot read queue depths"):
            client = await self._redis()
            skills = sorted(s.decode() for s in await client.smembers(self.keys.skills))
            async with client.pipeline(transaction=False) as pipe:
                for skill in skills:
                    pipe.zcard(self.keys.queue(skill))
                    pipe.zcard(self.keys.constrained(skill))
                sizes = await pipe.execute()
        depths = {skill: sizes[2 * i] + sizes[2 * i + 1] for i, skill in enumerate(skills)}
        return {skill: n for skill, n in depths.items() if n}

    async def waiting_workers(self) -> dict[str, int]:
        """Workers waiting in :meth:`claim_tasks` on this instance, per skill:
        those parked until a task comes. One whose own claim is in flight is
        not counted yet: a task queued meanwhile goes to whichever claim
        lands first, not to the pick of the task's dispatch strategy."""
        counts = {skill: sum(w.parked for w in waiters) for skill, waiters in self._waiters.items()}
        return {skill: n for skill, n in counts.items() if n}

    async def leased_to(self, worker_id: str) -> list[str]:
        """Ids of the tasks leased to ``worker_id``."""
        with unavailable("cannot read the worker's leases"):
            ids = await (await self._redis()).smembers(self.keys.worker_leases(worker_id))
        return sorted(i.decode() for i in ids)

    # -- the executor's ready jobs --

    def _claim_until(self) -> int:
        return now_ms() + self._lease_ms

    def _new_token(self) -> str:
        return f"{self._token_prefix}:{next(self._tokens)}"

    @contextlib.contextmanager
    def _keeping_step(self, job_id: str, wanted: bool = True) -> Iterator[str]:
        """A claim token when a job this instance makes ready should run
        here, else "" (queued for any instance): kept only while an executor
        here waits idle for it, so no instance hoards steps it cannot run."""
        if not wanted or self._idle_executors <= len(self._ready) + self._keeping:
            yield ""
            return
        token = self._new_token()
        self._keeping += 1
        try:
            yield token
        except BaseException:
            # Cancelled, or Redis went away, with the script sent: it may
            # have claimed the step for us unheard. Hand it to any instance
            # now rather than when the claim lapses.
            self._unkeep(job_id, token)
            raise
        finally:
            self._keeping -= 1

    def _unkeep(self, job_id: str, token: str) -> None:
        """Hand the job's step, if it is still claimed here with ``token``,
        to any instance (the UNKEEP script)."""
        self._spawn(self._retrying("handing a step back", self._run, "UNKEEP", job_id, token))

    def _kept(self, job_id: str, token: str, record: bytes) -> None:
        """The job's next step was claimed for this instance with ``token``
        (its record ``record``): an idle executor takes it without a round
        trip."""
        if token:
            self._ready.append((job_id, token))
            self._taken_records[job_id] = (record, asyncio.get_running_loop().time())
            self._ready_wake.set()

    async def next_ready_job(self) -> str:
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        self._idle_executors += 1
        try:
            await self._until_ready()
        finally:
            self._idle_executors -= 1
        job_id, token = self._ready.popleft()
        stepping = asyncio.current_task()
        self._stepping[stepping] = (job_id, token)
        record, taken_at = self._taken_records.pop(job_id, (b"", 0.0))
        if record and asyncio.get_running_loop().time() - taken_at <= _RECORD_FRESH:
            # Read with the claim just now. One that waited here longer (a
            # batch taken for busy executors) is read again: the job may
            # have been cancelled meanwhile, and a handler must not run on it.
            self._first_reads[stepping] = (job_id, record)
        return job_id

    async def _until_ready(self) -> None:
        assert self._fetching is not None
        while not self._ready:
            async with self._fetching:
                if self._ready:
                    break
                self._ready_wake.clear()
                ids = await self._retrying("taking ready jobs", self._take_ready)
                if ids:
                    self._ready.extend(ids)
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_RECHECK):
                        await self._ready_wake.wait()

    async def _take_ready(self) -> list[tuple[str, str]]:
        tokens = [self._new_token() for _ in range(_TAKE)]
        taken = await self._run("TAKE_READY", _TAKE, self._claim_until(), *tokens)
        ids = [raw.decode() for raw in taken[::2]]
        now = asyncio.get_running_loop().time()
        self._taken_records.update((i, (r, now)) for i, r in zip(ids, taken[1::2], strict=True))
        return list(zip(ids, tokens, strict=False))

    async def step_done(self, job_id: str, *, completed: bool = True) -> None:
        key: asyncio.Task[Any] | None = asyncio.current_task()
        if self._stepping.get(key, ("",))[0] != job_id:
            # Not taken by this task: the oldest step of that job taken here.
            key = next((k for k, (j, _) in self._stepping.items() if j == job_id), key)
        held = self._stepping.pop(key, None)
        self._first_reads.pop(key, None)
        if held is None or held[0] != job_id:
            return  # no step of that job taken here: no claim to release
        token = held[1]
        if not token:
            return  # its commit released the claim already
        if not completed:
            return  # its claim lapses and the step runs again
        # If Redis is down the claim lapses; the step re-runs and finds
        # nothing to do.
        with contextlib.suppress(*DOWN):
            await self._run("STEP_DONE", job_id, token)

    async def _renew_forever(self) -> None:
        """Keep this instance's claims on the steps it runs alive."""
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            # Steps taken and not done: waiting here, or running (those whose
            # commit already released their claim have no token).
            held = [*self._ready, *(h for h in self._stepping.values() if h[1])]
            pairs = [x for job_id, token in held for x in (job_id, token)]
            if not pairs:
                continue
            try:
                await self._run("RENEW", now_ms() + self._lease_ms, *pairs)
                check_cancelled()
            except DOWN as exc:
                log.warning("cannot renew step claims: %s", exc)

    # -- deadlines --

    async def next_expiry(self) -> Expiry:
        while not self._expired:
            fired = await self._retrying("firing timers", self._fire_due)
            if fired:
                break
            self._timer_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TIMER_TICK):
                    await self._timer_wake.wait()
        return self._expired.popleft()

    async def _fire_due(self) -> bool:
        now = now_ms()
        fired = await self._run("DUE", now, _BATCH, _RECLAIM_MS)
        for member in fired:
            kind, _, task_id = member.decode().partition(":")
            self._expired.append(Expiry(task_id=task_id, kind=kind))
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_sweep >= self._sweep_every:
            self._last_sweep = loop_now
            while await self._run("SWEEP", now - self._retention_ms, _BATCH) == _BATCH:
                pass
        return bool(fired)

    # -- claims --

    async def claim_tasks(
        self, worker: WorkerProfile, timeout: float | None, limit: int = 1
    ) -> list[Task]:
        if limit < 1:
            return []
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        # Registered before the first look: a wake-up that arrives while a
        # claim is in flight makes it look again at once, and none is lost
        # between a claim that found nothing and the wait.
        waiter = self._add_waiter(worker)
        # Handed its last task while it waited, it looked less than a
        # re-check period ago, and no task of its skills was queued since:
        # its queues hold nothing for it, and the first look is saved (a
        # wake-up, or the period's end, still makes it look).
        quiet = self._quiet.pop(worker.worker_id, None)
        if (
            quiet is not None
            and quiet.skills == worker.skills
            and quiet.wakes == self._wake_count(worker)
            and loop.time() - quiet.at < _RECHECK
        ):
            waiter.quiet = quiet
        try:
            while True:
                handed, waiter.handed = waiter.handed, None
                if handed is not None:
                    if waiter.quiet is not None:
                        self._quiet[worker.worker_id] = waiter.quiet
                    return [handed]
                waiter.event.clear()
                if waiter.quiet is None and not waiter.offered:  # else it waits for a wake-up
                    waiter.claiming = True
                    looked = _Look(worker.skills, self._wake_count(worker), loop.time())
                    try:
                        tasks = await self._claim_once(worker, limit)
                    finally:
                        waiter.claiming = False
                    if tasks:
                        return tasks
                    if waiter.event.is_set():
                        continue
                    if not worker.max_concurrent or worker.active < worker.max_concurrent:
                        waiter.quiet = looked  # it found nothing as of then
                if deadline is not None and loop.time() >= deadline:
                    return []
                # The periodic look, in case a wake-up was lost: a re-check
                # period after the last look.
                since = waiter.quiet.at if waiter.quiet is not None else loop.time()
                wait = since + _RECHECK - loop.time()
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        await waiter.event.wait()
                except TimeoutError:
                    waiter.quiet = None
        finally:
            self._remove_waiter(waiter)
            if waiter.handed is not None:
                # Handed a task while leaving (cancelled, timed out, or it
                # claimed one itself): the task goes back.
                self._spawn(self._give_back(waiter.handed.task_id, worker.worker_id))

    async def _claim_once(self, worker: WorkerProfile, limit: int) -> list[Task]:
        """One claim of up to ``limit`` tasks, safe against cancellation:
        tasks leased by a script whose caller was cancelled meanwhile go
        back to their queue."""
        if worker.max_concurrent:
            limit = min(limit, worker.max_concurrent - worker.active)
        if limit <= 0:
            return []
        nonce = secrets.token_hex(8)  # a retry after a lost reply finds its own lease
        self._claiming += 1
        self._no_claims.clear()
        try:
            # In the caller's task, not shielded in one of its own: claims
            # are the hot path, and a task per claim costs more than it.
            return await self._retrying("claiming a task", self._claim, worker, nonce, limit)
        except asyncio.CancelledError:
            # The script may have run (or may yet run) with nobody left to
            # hear its reply. The nonce names what it leased, if anything.
            self._spawn(self._give_back_claimed(nonce, worker.worker_id))
            raise
        finally:
            self._claiming -= 1
            if not self._claiming:
                self._no_claims.set()  # close() waits for claims in flight

    async def _claim(self, worker: WorkerProfile, nonce: str, limit: int) -> list[Task]:
        now = now_ms()
        found = await self._run("CLAIM", worker.worker_id, now, "", nonce, limit, *worker.skills)
        if found == b"scan":
            # Tasks with requirements are queued: pick the best this worker
            # meets, and claim it (a second round trip only then; one task).
            candidate = await self._constrained_candidate(worker) or "-"
            now = now_ms()
            found = await self._run(
                "CLAIM", worker.worker_id, now, candidate, nonce, 1, *worker.skills
            )
        return _all_leased(found, worker.worker_id, now)

    async def _take(self, task_id: str, worker_id: str, nonce: str) -> Task | None:
        now = now_ms()
        return _leased(await self._run("TAKE", task_id, worker_id, now, nonce), worker_id, now)

    async def _constrained_candidate(self, worker: WorkerProfile) -> str:
        """The best queued task with requirements that ``worker`` meets
        ("" if none): read here, since Lua cannot check requirements; the
        claim script takes it only if it is still queued and still best."""
        # On the pipelined connection, not redis-py: this runs in the
        # claimer's task, and redis-py may swallow its cancellation.
        client = await self._fast()
        best: tuple[float, bytes, str] | None = None
        for skill in worker.skills:
            flat = await client.execute(
                "ZRANGE", self.keys.constrained(skill), 0, _CONSTRAINED_SCAN - 1, "WITHSCORES"
            )
            if not flat:
                continue
            pairs = zip(flat[::2], flat[1::2], strict=True)
            entries = [(member, float(score)) for member, score in pairs]
            datas = await client.execute_many(
                *(("HGET", self.keys.task(member.decode()[21:]), "d") for member, _ in entries)
            )
            for (member, score), data in zip(entries, datas, strict=True):
                if data is None or (best is not None and (score, member) >= best[:2]):
                    continue
                if eligible(Requirements.of(Task.FromString(data)), worker, skill):
                    best = (score, member, member.decode()[21:])
        return best[2] if best else ""

    def _offer(self, tasks: Sequence[Task]) -> _Offer | None:
        """A worker waiting here that the commit of ``tasks`` (queued, no
        requirements) may lease one of them to at once, saving the claim,
        as the embedded store hands a task to a waiting worker. The task's
        strategy picks among several (longest waiting first on ties)."""
        for task in tasks:
            waiters = [
                w
                for w in self._waiters.get(task.type, ())
                if w.parked and eligible(None, w.worker, task.type)
            ]
            if waiters:
                profiles = [w.worker for w in waiters]
                chosen = waiters[choose(task.dispatch_strategy, task.type, None, profiles)]
                return _Offer(task.task_id, chosen, secrets.token_hex(8))
        return None

    @contextlib.contextmanager
    def _offering(self, offer: _Offer | None) -> Iterator[None]:
        """While the commit carrying ``offer`` is in flight, its waiter
        claims nothing else. A commit that fails unheard may have leased the
        task all the same: that lease (its nonce) goes back."""
        if offer is None:
            yield
            return
        waiter = offer.waiter
        waiter.offered = True
        try:
            yield
        except BaseException:
            if waiter.offered:  # the reply never came
                waiter.offered = False
                waiter.event.set()
                self._spawn(self._give_back(offer.task_id, waiter.worker.worker_id, offer.nonce))
            raise

    def _hand(self, offer: _Offer, task: Task | None, unheard: bool) -> None:
        """The reply to a commit that offered its waiter a task: ``task`` if
        it was leased to it. ``unheard``: an earlier attempt's reply was
        lost, so a reply without the task (the job moved on meanwhile) may
        hide a lease it made."""
        waiter = offer.waiter
        waiter.offered = False
        if task is None:
            if unheard:
                worker_id = waiter.worker.worker_id
                self._spawn(self._give_back(offer.task_id, worker_id, offer.nonce))
            waiter.event.set()  # wake-ups passed it by while it was offered
            return
        if waiter.done or waiter.handed is not None:  # it left meanwhile
            self._spawn(self._give_back(task.task_id, task.worker_id, offer.nonce))
        else:
            waiter.handed = task
            waiter.event.set()

    async def _give_back_claimed(self, nonce: str, worker_id: str) -> None:
        """Give back what the claim with ``nonce`` leased, if anything. The
        read goes after the claim on the one connection, so Redis answers it
        once the claim has run (or, if the connection dropped, never will)."""
        try:
            task_ids = await self._retrying(
                "looking for an abandoned claim", self._get, self.keys.claim_nonce(nonce)
            )
            given = (task_ids or b"").decode().split(",")
            await asyncio.gather(*(self._give_back(t, worker_id, nonce) for t in given if t))
        except Unavailable as exc:
            # Closed meanwhile: the lease goes back when the worker says what
            # it holds on its next stream, or at the task's deadline.
            log.warning("a task a cancelled claim may have leased stays leased: %s", exc)

    async def _give_back(self, task_id: str, worker_id: str, nonce: str = "") -> None:
        """Undo a lease nobody took (only the one made under ``nonce``, if
        given); retried through an outage, or the task would stay leased to
        a worker that never heard of it."""
        await self._retrying(
            "giving a task back", self._run, "GIVE_BACK", task_id, worker_id, nonce
        )

    def _add_waiter(self, worker: WorkerProfile) -> _Waiter:
        waiter = _Waiter(worker)
        for skill in worker.skills:
            self._waiters.setdefault(skill, {})[waiter] = None
        return waiter

    def _remove_waiter(self, waiter: _Waiter) -> None:
        waiter.done = True
        for skill in waiter.worker.skills:
            waiters = self._waiters.get(skill)
            if waiters is not None:
                waiters.pop(waiter, None)
                if not waiters:
                    del self._waiters[skill]

    def _wake_count(self, worker: WorkerProfile) -> int:
        """How many wake-ups this instance has had for ``worker``'s skills."""
        return sum(self._wakes.get(skill, 0) for skill in worker.skills)

    def _wake(self, skill: str) -> None:
        """A task of ``skill`` was queued: one waiter claims it itself; among
        several, the task's dispatch strategy picks who gets it."""
        self._wakes[skill] = self._wakes.get(skill, 0) + 1
        idle = []
        for waiter in self._waiters.get(skill, ()):
            waiter.quiet = None  # it must look
            if waiter.claiming:
                waiter.event.set()  # it looks again once its claim in flight is back
            elif waiter.parked:
                idle.append(waiter)
        if len(idle) <= 1:
            for waiter in idle:
                waiter.event.set()
            return
        self._to_hand[skill] = None
        if self._handing is None or self._handing.done():
            self._handing = asyncio.ensure_future(self._hand_out_all())
            self._background.add(self._handing)
            self._handing.add_done_callback(self._background.discard)

    async def _hand_out_all(self) -> None:
        """Hand-out passes one skill at a time, in the order tasks came, so
        that a waiter with several skills is offered tasks as the embedded
        store offers them."""
        while self._to_hand:
            skill = next(iter(self._to_hand))
            del self._to_hand[skill]
            await self._hand_out(skill)

    async def _hand_out(self, skill: str) -> None:
        """Hand queued tasks of ``skill`` to this instance's waiting workers
        as :meth:`MemoryStorage._offer` does: the head task's strategy picks
        among the eligible waiters (longest waiting first on ties)."""
        while True:
            waiters = [w for w in self._waiters.get(skill, ()) if w.parked]
            head = await self._head(skill) if len(waiters) > 1 else None
            if head is None:
                for waiter in waiters:  # each checks for itself
                    waiter.event.set()
                return
            requirements = Requirements.of(head)
            fit = [w for w in waiters if eligible(requirements, w.worker, skill)]
            if not fit:
                for waiter in waiters:  # the head suits none: others may suit them
                    waiter.event.set()
                return
            profiles = [w.worker for w in fit]
            chosen = fit[choose(head.dispatch_strategy, skill, requirements, profiles)]
            task = await self._retrying(
                "handing out a task",
                self._take,
                head.task_id,
                chosen.worker.worker_id,
                secrets.token_hex(8),
            )
            if task is None:
                continue  # another claimer took it first: look at the new head
            if chosen.done or chosen.handed is not None:
                await self._give_back(task.task_id, task.worker_id)  # it left meanwhile
            else:
                chosen.handed = task
                chosen.event.set()

    async def _head(self, skill: str) -> Task | None:
        """The next task of ``skill``'s plain queue, if any."""
        data = await self._run("HEAD", skill)
        return Task.FromString(data) if data else None

    def _on_wake(self, message: bytes) -> None:
        what = message.decode()
        if what == "j":
            self._ready_wake.set()
        elif what.startswith("t:"):
            self._wake(what[2:])

    def _wake_everyone(self) -> None:
        """After a pub/sub outage: every waiter re-checks now, and every
        worker's next claim looks (wake-ups may have been lost)."""
        self._quiet.clear()
        self._ready_wake.set()
        self._timer_wake.set()
        for skill in list(self._waiters):
            self._wake(skill)

    # -- housekeeping --

    async def _retrying(self, what: str, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """``call`` until Redis answers: waiting calls ride out an outage."""
        return await until_up(what, call, *args, giving_up=lambda: self._closing)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush(self) -> None:
        client = await self._redis()
        async for key in client.scan_iter(match=f"{self.keys.root}:*", count=1000):
            await client.unlink(key)
        self._ready.clear()
        self._taken_records.clear()
        self._first_reads.clear()
        self._stepping.clear()
        self._expired.clear()

    async def close(self) -> None:
        """Finish give-backs, hand back the ready jobs taken but not
        started, and disconnect. Idempotent."""
        client = self._client
        if client is None or self._closing:
            return
        self._closing = True  # from here on nothing retries or reconnects
        if self._renewer is not None:
            self._renewer.cancel()
        if self._subscriber is not None:
            await self._subscriber.stop()
        await self._no_claims.wait()  # a claim in flight may lease a task: let it
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._client = None
        untaken, self._ready = [job_id for job_id, _ in self._ready], deque()
        if untaken:
            with contextlib.suppress(*DOWN):
                async with client.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.keys.running, *untaken)
                    pipe.hdel(self.keys.claims, *untaken)
                    pipe.lpush(self.keys.ready, *reversed(untaken))
                    await pipe.execute()
        await client.aclose()
        if self._pipelined is not None:
            await self._pipelined.close()
            self._pipelined = None


class _Waiter:
    """A claim waiting for a task of one of its worker's skills."""

    __slots__ = ("claiming", "done", "event", "handed", "offered", "quiet", "worker")

    def __init__(self, worker: WorkerProfile) -> None:
        self.worker = worker
        self.event = asyncio.Event()
        self.done = False
        self.handed: Task | None = None
        """A task leased to it by a hand-out pass or a commit, not yet taken."""
        self.claiming = False
        """Its own claim is in flight (hand-outs pass it by)."""
        self.offered = False
        """A commit in flight may lease it a new task: it claims nothing
        meanwhile, and hand-outs pass it by."""
        self.quiet: _Look | None = None
        """When its queues last held nothing for it (None once a wake-up
        came: it must look)."""

    @property
    def parked(self) -> bool:
        """Waiting for a wake-up, with nothing in flight for it."""
        return not (self.done or self.claiming or self.offered or self.handed is not None)


class _Look(NamedTuple):
    """A claim that found nothing for a worker."""

    skills: tuple[str, ...]
    wakes: int
    """The wake-up count of those skills when the claim was sent."""
    at: float
    """The loop's time then."""


class _Offer(NamedTuple):
    """A commit's new task that a worker waiting here may get at once."""

    task_id: str
    waiter: _Waiter
    nonce: str
    """The claim nonce the lease is made under, if it is made."""


def _committed(outcome: Any, worker_id: str, now: int) -> tuple[Task | None, CommitOutcome, bool]:
    """A COMMIT script's reply: the task it handed off (leased to
    ``worker_id`` at ``now``), the outcome, and whether it was the retry of
    an attempt applied unheard."""
    if isinstance(outcome, list):
        return _leased(outcome, worker_id, now), CommitOutcome.OK, len(outcome) > 3
    text = outcome.decode() if isinstance(outcome, bytes) else outcome
    if text == "again":
        return None, CommitOutcome.OK, True
    return None, CommitOutcome(text), False


def _all_leased(found: Any, worker_id: str, now: int) -> list[Task]:
    """The tasks a CLAIM script leased (three reply elements each)."""
    if not found:
        return []
    return [
        _as_leased(found[at + 1], found[at + 2], worker_id, now) for at in range(0, len(found), 3)
    ]


def _leased(found: Any, worker_id: str, now: int) -> Task | None:
    """The task a TAKE or COMMIT script leased (None if it leased none)."""
    return _as_leased(found[1], found[2], worker_id, now) if found else None


def _as_leased(data: bytes, sequence: bytes, worker_id: str, now: int) -> Task:
    """A task as a script leased it: to ``worker_id`` at ``now``."""
    task = Task.FromString(data)
    task.state = task_pb2.TASK_STATE_LEASED
    task.worker_id = worker_id
    task.leased_at_ms = now
    task.sequence = int(sequence)
    return task


def _task(
    data: bytes | None,
    state: bytes | None,
    worker: bytes | None,
    leased: bytes | None,
    sequence: bytes | None,
) -> Task | None:
    """A task from its hash: the bytes, overridden by the fields the scripts
    keep outside them."""
    if data is None:
        return None
    task = Task.FromString(data)
    if state is not None:
        task.state = int(state)  # type: ignore[assignment]
    if worker is not None:
        task.worker_id = worker.decode()
    if leased is not None:
        task.leased_at_ms = int(leased)
    if sequence is not None:
        task.sequence = int(sequence)
    return task
