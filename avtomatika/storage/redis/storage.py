"""Storage in Redis, shared by every orchestrator instance pointed at it.

Every change is one Lua script (:mod:`.scripts`), so the version and lease
guards of :meth:`RedisStorage.commit` hold across instances exactly as they
do in one process. What an instance keeps locally is only how to wait well.
:class:`RedisStorage` composes the parts, one module each:

- :mod:`.link`: the clients, the registered scripts, the wake-up channel;
- :mod:`.commits`: creating and changing jobs (CREATE, COMMIT, SET_PROGRESS),
  with the hand-off of a new task to a worker waiting here;
- :mod:`.claims`: a worker's claim of queued tasks (CLAIM), waiting when
  there is none;
- :mod:`.handouts`: which waiting worker a queued task goes to (wake-ups,
  hand-out passes, a commit's offer);
- :mod:`.leases`: leasing one given task and undoing a lease nobody took
  (TAKE, GIVE_BACK);
- :mod:`.steps`: the executor's ready jobs and the claims on their steps
  (TAKE_READY, STEP_DONE, RENEW, UNKEEP);
- :mod:`.deadlines`: timers and retention (DUE, SWEEP).

Here: reading jobs and tasks, the counts, opening and closing.

Redis being unreachable surfaces as :class:`~avtomatika.errors.Unavailable`
from the calls a request makes; the waiting calls (claims, ready jobs,
timers) back off and retry instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Sequence
from typing import Any

from avtomatika.config import Settings
from avtomatika.dispatch import WorkerProfile
from avtomatika.status import TERMINAL
from avtomatika.storage.base import (
    BoundReached,
    ClientBounds,
    ClientUsage,
    CommitOutcome,
    Expiry,
    JobCursor,
    Lease,
)
from avtomatika.storage.redis.claims import Claims
from avtomatika.storage.redis.commits import Commits
from avtomatika.storage.redis.deadlines import Deadlines
from avtomatika.storage.redis.handouts import HandOuts
from avtomatika.storage.redis.keys import Keys
from avtomatika.storage.redis.leases import Leases
from avtomatika.storage.redis.link import Link
from avtomatika.storage.redis.outages import DOWN, unavailable
from avtomatika.storage.redis.recent import Recent
from avtomatika.storage.redis.steps import Steps
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task

__all__ = ["RedisStorage"]

# A reservation of a creation whose instance died lapses after this long.
_RESERVATION_TTL_MS = 60_000


class RedisStorage:
    """The storage contract on Redis (redis-py asyncio)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ValueError("RedisStorage needs REDIS_URL")
        self.keys = Keys(settings.redis_prefix)
        # The default is unique even for two orchestrators in one process.
        self.instance_id = (
            settings.instance_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        )
        self._link = link = Link(
            settings.redis_url,
            self.keys,
            on_wake=self._on_wake,
            on_reconnect=self._wake_everyone,
            on_open=self._opened,
            timeout=settings.redis_command_timeout_seconds,
        )
        self._recent = recent = Recent()
        self._leases = Leases(link, recent)
        self._hand_outs = HandOuts(link, self._leases)
        self._claims = Claims(link, self._leases, self._hand_outs)
        self._steps = Steps(link, self.instance_id, settings.step_lease_seconds)
        self._deadlines = Deadlines(link, settings.job_retention_seconds)
        self._commits = Commits(link, self._steps, self._hand_outs, self._deadlines.wake, recent)

    # -- connection --

    @property
    def client(self) -> Any:
        """The Redis client (after :meth:`open`)."""
        return self._link.client

    async def open(self) -> None:
        """Connect (raising :class:`~avtomatika.errors.ConfigError` naming
        the URL if Redis does not answer), register the scripts and start
        listening for wake-ups. Idempotent."""
        await self._link.open()
        await self._adopt_clients()

    def _opened(self) -> None:
        self._steps.start_renewing()

    def _on_wake(self, message: bytes) -> None:
        what = message.decode()
        if what == "j":
            self._steps.wake.set()
        elif what.startswith("t:"):
            self._hand_outs.wake(what[2:])

    def _wake_everyone(self) -> None:
        """After a pub/sub outage: every waiter re-checks now, and every
        worker's next claim looks (wake-ups may have been lost)."""
        self._claims.forget_looks()
        self._steps.wake.set()
        self._deadlines.wake.set()
        self._hand_outs.wake_all()

    # -- jobs and tasks --

    async def create_job(self, job: Job) -> None:
        await self._commits.create_job(job)

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
        return await self._commits.commit(
            job,
            expected_version=expected_version,
            tasks=tasks,
            withdraw=withdraw,
            new_jobs=new_jobs,
            lease=lease,
            ready=ready,
            ready_at_ms=ready_at_ms,
        )

    async def set_progress(self, job_id: str, task_id: str, progress: float, message: str) -> bool:
        return await self._commits.set_progress(job_id, task_id, progress, message)

    async def get_job(self, job_id: str) -> Job | None:
        # A step reading the job it just took: the record came with it. It
        # may be a few milliseconds old; the step's commit is guarded by the
        # version it read, as with any read.
        first = self._steps.first_read(job_id)
        if first is not None:
            return Job.FromString(first)
        with unavailable("cannot read the job"):
            data = await (await self._link.fast()).execute("HGET", self.keys.job(job_id), "d")
        return None if data is None else Job.FromString(data)

    async def get_task(self, task_id: str) -> Task | None:
        with unavailable("cannot read the task"):
            fields = await (await self._link.fast()).execute(*self._task_read(task_id))
        return _task(*fields)

    async def get_tasks(self, task_ids: Sequence[str]) -> list[Task | None]:
        if not task_ids:
            return []
        with unavailable("cannot read the tasks"):
            found = await (await self._link.fast()).execute_many(*map(self._task_read, task_ids))
        return [_task(*fields) for fields in found]

    async def get_task_and_job(
        self, task_id: str, job_id: str, worker_id: str = ""
    ) -> tuple[Task | None, Job | None]:
        # A result for a task leased here, of a job last committed here: both
        # as written, and the commit on them guarded (see .recent).
        known = self._recent.take(task_id, job_id, worker_id) if worker_id else None
        if known is not None:
            return known
        with unavailable("cannot read the task and its job"):
            fields, data = await (await self._link.fast()).execute_many(
                self._task_read(task_id), ("HGET", self.keys.job(job_id), "d")
            )
        return _task(*fields), None if data is None else Job.FromString(data)

    def _task_read(self, task_id: str) -> tuple[str, ...]:
        """The command reading a task: its bytes and the fields kept beside."""
        return ("HMGET", self.keys.task(task_id), "d", "st", "w", "la", "sq")

    # -- counts --

    async def client_jobs(
        self, client_id: str, before: JobCursor | None, since_ms: int, limit: int
    ) -> tuple[list[Job], JobCursor | None]:
        key = self.keys.client_jobs(client_id)
        with unavailable("cannot list the jobs"):
            client = await self._link.redis()
            head: list[JobCursor] = []
            top: float | str = "+inf"
            if before is not None:
                # The cursor's own millisecond first: ties on the score are
                # ordered by member, which a score bound cannot express.
                ms, last = before
                if ms >= since_ms:
                    same = await client.zrange(key, ms, ms, byscore=True)
                    head = sorted(
                        ((ms, m.decode()) for m in same if m.decode() < last), reverse=True
                    )
                top = f"({ms}"
            rest = await client.zrange(
                key, top, since_ms, desc=True, withscores=True, byscore=True, offset=0, num=limit
            )
            entries = [*head, *((int(score), m.decode()) for m, score in rest)][:limit]
            fast = await self._link.fast()
            records = (
                await fast.execute_many(*(("HGET", self.keys.job(j), "d") for _, j in entries))
                if entries
                else []
            )
            gone = [j for (_, j), data in zip(entries, records, strict=True) if data is None]
            if gone:
                await client.zrem(key, *gone)  # forgotten (retention): out of the index
        jobs = [Job.FromString(data) for data in records if data is not None]
        return jobs, entries[-1] if len(entries) == limit else None

    async def count_jobs(self) -> dict[int, int]:
        # The clients' counts summed: the scripts keep no count of every job
        # apart (two commands less on each status change).
        totals: dict[int, int] = {}
        with unavailable("cannot count jobs"):
            # An earlier release's instance still running in an upgrade may
            # have created a client's first job since the last instance
            # opened: its client is listed now (one EXISTS when there is none).
            await self._adopt_clients()
            client = await self._link.redis()
            clients = await client.smembers(self.keys.clients)
            async with client.pipeline(transaction=False) as pipe:
                for client_id in clients:
                    pipe.hgetall(self.keys.client_statuses(client_id.decode()))
                for counts in await pipe.execute():
                    for status, n in counts.items():
                        totals[int(status)] = totals.get(int(status), 0) + int(n)
        return {status: n for status, n in totals.items() if n > 0}

    async def _adopt_clients(self) -> None:
        """Where an earlier release kept a count of every job (its instances
        may still run during an upgrade, and create clients' first jobs
        without listing them in ``clients``): list every client with counts
        there, and drop that count, which nothing reads any more. Done when
        an instance opens and before every count of all jobs, so what old
        instances create after the last new one opened is counted too."""
        client = await self._link.redis()
        if not await client.exists(self.keys.statuses):
            return
        prefix = self.keys.client_statuses("")
        found = [
            key.decode().removeprefix(prefix)
            async for key in client.scan_iter(match=f"{prefix}*", count=1000)
        ]
        for start in range(0, len(found), 1000):
            await client.sadd(self.keys.clients, *found[start : start + 1000])
        await client.delete(self.keys.statuses)

    async def count_client_jobs(self, client_id: str) -> dict[int, int]:
        with unavailable("cannot count jobs"):
            client = await self._link.redis()
            counts = await client.hgetall(self.keys.client_statuses(client_id))
        return {int(status): int(n) for status, n in counts.items() if int(n) > 0}

    async def client_usage(self, client_id: str) -> ClientUsage:
        with unavailable("cannot count the client's jobs"):
            client = await self._link.redis()
            async with client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.client_statuses(client_id))
                pipe.get(self.keys.client_bytes(client_id))
                counts, stored = await pipe.execute()
        in_flight = sum(int(n) for status, n in counts.items() if int(status) not in TERMINAL)
        return ClientUsage(in_flight, int(stored or 0))

    async def reserve(
        self, client_id: str, job_id: str, size: int, bounds: ClientBounds
    ) -> BoundReached | None:
        args = (
            client_id,
            job_id,
            size,
            bounds.max_jobs_in_flight,
            bounds.max_stored_bytes,
            _RESERVATION_TTL_MS,
        )
        with unavailable("cannot check the client's bounds"):
            verdict = await self._link.run("RESERVE", *args)
        if int(verdict[0]) == 0:
            return None
        return BoundReached("jobs" if int(verdict[0]) == 1 else "bytes", int(verdict[1]))

    async def unreserve(self, client_id: str, job_id: str) -> None:
        with unavailable("cannot give back the client's reservation"):
            await self._link.run("UNRESERVE", client_id, job_id)

    async def queue_depths(self) -> dict[str, int]:
        with unavailable("cannot read queue depths"):
            client = await self._link.redis()
            skills = sorted(s.decode() for s in await client.smembers(self.keys.skills))
            async with client.pipeline(transaction=False) as pipe:
                for skill in skills:
                    pipe.zcard(self.keys.queue(skill))
                    pipe.zcard(self.keys.constrained(skill))
                sizes = await pipe.execute()
        depths = {skill: sizes[2 * i] + sizes[2 * i + 1] for i, skill in enumerate(skills)}
        return {skill: n for skill, n in depths.items() if n}

    async def oldest_queued(self) -> dict[str, int]:
        with unavailable("cannot read queue ages"):
            client = await self._link.redis()
            skills = sorted(s.decode() for s in await client.smembers(self.keys.skills))
            async with client.pipeline(transaction=False) as pipe:
                for skill in skills:
                    pipe.zrange(self.keys.queued_since(skill), 0, 0, withscores=True)
                heads = await pipe.execute()
        return {skill: int(head[0][1]) for skill, head in zip(skills, heads, strict=True) if head}

    async def waiting_workers(self) -> dict[str, int]:
        """Workers waiting in :meth:`claim_tasks` on this instance, per skill:
        those parked until a task comes. One whose own claim is in flight is
        not counted yet: a task queued meanwhile goes to whichever claim
        lands first, not to the pick of the task's dispatch strategy."""
        return self._hand_outs.waiters.counts()

    async def leased_to(self, worker_id: str) -> list[str]:
        """Ids of the tasks leased to ``worker_id``."""
        with unavailable("cannot read the worker's leases"):
            ids = await (await self._link.redis()).smembers(self.keys.worker_leases(worker_id))
        return sorted(i.decode() for i in ids)

    # -- the executor, timers and claims (see their modules) --

    async def next_ready_job(self) -> str:
        return await self._steps.next_ready_job()

    async def step_done(self, job_id: str, *, completed: bool = True) -> None:
        await self._steps.step_done(job_id, completed=completed)

    async def next_expiry(self) -> Expiry:
        return await self._deadlines.next_expiry()

    async def claim_tasks(
        self, worker: WorkerProfile, timeout: float | None, limit: int = 1
    ) -> list[Task]:
        return await self._claims.claim_tasks(worker, timeout, limit)

    # -- housekeeping --

    async def ping(self) -> None:
        with unavailable("Redis does not answer"):
            await self._link.ping()

    async def flush(self) -> None:
        client = await self._link.redis()
        async for key in client.scan_iter(match=f"{self.keys.root}:*", count=1000):
            await client.unlink(key)
        self._steps.clear()
        self._deadlines.clear()
        self._recent.clear()

    async def close(self) -> None:
        """Finish give-backs, hand back the ready jobs taken but not
        started, and disconnect. Idempotent."""
        link = self._link
        if not link.is_open or link.closing:
            return
        link.begin_closing()  # from here on nothing retries or reconnects
        self._steps.stop_renewing()
        await link.stop_listening()
        await self._claims.settled()  # a claim in flight may lease a task: let it
        await link.drain()
        client = link.detach()
        untaken = self._steps.untaken()
        if untaken:
            with contextlib.suppress(*DOWN):
                async with client.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.keys.running, *untaken)
                    pipe.hdel(self.keys.claims, *untaken)
                    pipe.lpush(self.keys.ready, *reversed(untaken))
                    await pipe.execute()
        await link.disconnect(client)


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
