"""A worker's claim of queued tasks: the CLAIM script, and waiting for a
task when it finds none.

A worker takes the best queued task of its skills in one script, or the
best few, up to its free slots (a backlog drains in one round trip; one at a
time while tasks with requirements are queued for its skills, as Lua cannot
check requirements). A worker with nothing to take waits (see
:mod:`.handouts`) for a wake-up or a task handed to it, and re-checks at
least every ``RECHECK`` seconds, since pub/sub messages can be lost.
A worker handed its last task while it waited makes its next claim wait
without looking first if nothing was queued for it since its last look.
"""

from __future__ import annotations

import asyncio
import secrets

from avtomatika.clock import now_ms
from avtomatika.dispatch import Requirements, WorkerProfile, eligible
from avtomatika.errors import Unavailable
from avtomatika.storage.redis.handouts import HandOuts, Look
from avtomatika.storage.redis.leases import Leases, all_leased
from avtomatika.storage.redis.link import RECHECK, Link
from avtomatika.storage.redis.outages import unavailable
from avtomatika.storage.redis.scripts import ClaimArgs
from avtomatika.v1.task_pb2 import Task

__all__ = ["Claims"]

# Constrained tasks examined per claim (the oldest, by priority).
_CONSTRAINED_SCAN = 200


class Claims:
    """Workers' claims on this instance."""

    def __init__(self, link: Link, leases: Leases, hand_outs: HandOuts) -> None:
        self._link = link
        self._leases = leases
        self._hand_outs = hand_outs
        self._quiet: dict[str, Look] = {}
        """Per worker handed its last task while it waited: when it last
        found its queues empty."""
        self._claiming = 0  # claims in flight
        self._no_claims = asyncio.Event()
        self._no_claims.set()

    def forget_looks(self) -> None:
        """Every worker's next claim looks (wake-ups may have been lost)."""
        self._quiet.clear()

    async def settled(self) -> None:
        """Wait until no claim is in flight (one may yet lease a task)."""
        await self._no_claims.wait()

    async def claim_tasks(
        self, worker: WorkerProfile, timeout: float | None, limit: int = 1
    ) -> list[Task]:
        """See :meth:`Storage.claim_tasks <avtomatika.storage.base.Storage.claim_tasks>`."""
        if limit < 1:
            return []
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        hand_outs = self._hand_outs
        # Registered before the first look: a wake-up that arrives while a
        # claim is in flight makes it look again at once, and none is lost
        # between a claim that found nothing and the wait.
        most = limit
        if worker.max_concurrent:
            # What it may be handed: its free slots now (at least one, as
            # a claim may always be handed the task it waits for).
            most = max(1, min(limit, worker.max_concurrent - worker.active))
        waiter = hand_outs.add(worker, most)
        # Handed its last task while it waited, it looked less than a
        # re-check period ago, and no task of its skills was queued since:
        # its queues hold nothing for it, and the first look is saved (a
        # wake-up, or the period's end, still makes it look).
        quiet = self._quiet.pop(worker.worker_id, None)
        if (
            quiet is not None
            and quiet.skills == worker.skills
            and quiet.wakes == hand_outs.wake_count(worker)
            and loop.time() - quiet.at < RECHECK
        ):
            waiter.quiet = quiet
        try:
            while True:
                # Handed tasks: taken once the offers still in flight are
                # back (their replies are close behind on the connection).
                if waiter.handed and not waiter.offers:
                    handed, waiter.handed = waiter.handed, []
                    if waiter.quiet is not None:
                        self._quiet[worker.worker_id] = waiter.quiet
                    return handed
                waiter.event.clear()
                if waiter.handed:
                    pass  # it waits for its offers in flight
                elif waiter.quiet is None and not waiter.offers:  # else it waits for a wake-up
                    waiter.claiming = True
                    looked = Look(worker.skills, hand_outs.wake_count(worker), loop.time())
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
                    # What it was handed is its (offers still in flight
                    # find it gone, and give theirs back).
                    handed, waiter.handed = waiter.handed, []
                    return handed
                # The periodic look, in case a wake-up was lost: a re-check
                # period after the last look.
                since = waiter.quiet.at if waiter.quiet is not None else loop.time()
                wait = since + RECHECK - loop.time()
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        await waiter.event.wait()
                except TimeoutError:
                    waiter.quiet = None
        finally:
            hand_outs.remove(waiter)
            for task in waiter.handed:
                # Handed a task while leaving (cancelled, timed out, or it
                # claimed one itself): the task goes back.
                self._link.spawn(self._leases.give_back(task.task_id, worker.worker_id))

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
            with unavailable("cannot claim a task"):
                return await self._claim(worker, nonce, limit)
        except (asyncio.CancelledError, Unavailable):
            # The script may have run (or, cancelled, may yet run) with
            # nobody left to hear its reply. The nonce names what it leased,
            # if anything. (Failed, it cannot run any more: its deadline
            # passed. So the give-back, whenever Redis answers, comes last.)
            self._link.spawn(self._leases.give_back_claimed(nonce, worker.worker_id))
            raise
        finally:
            self._claiming -= 1
            if not self._claiming:
                self._no_claims.set()  # close() waits for claims in flight

    async def _claim(self, worker: WorkerProfile, nonce: str, limit: int) -> list[Task]:
        """One claim: :class:`Unavailable` (or one of :data:`DOWN`) when
        Redis does not answer in time, so that a worker's poll, or its
        stream, learns of the outage instead of hanging through it."""
        link = self._link
        deadline = link.deadline()
        args = ClaimArgs(
            worker=worker.worker_id,
            now=now_ms(),
            candidate="",  # tasks with requirements not looked at yet
            nonce=nonce,
            limit=limit,
            deadline=deadline.redis_ms,
            skills=worker.skills,
        )
        found = await link.run_before(deadline, "CLAIM", *args.argv())
        if found == b"scan":
            # Tasks with requirements are queued: pick the best this worker
            # meets, and claim it (a second round trip only then; one task).
            candidate = await self._constrained_candidate(worker) or "-"
            args = args._replace(now=now_ms(), candidate=candidate, limit=1)
            found = await link.run_before(deadline, "CLAIM", *args.argv())
        if found == b"expired":
            raise link.too_late("cannot claim a task")
        tasks = all_leased(found, worker.worker_id, args.now)
        for task in tasks:
            self._leases.recent.task_leased(task, nonce)
        return tasks

    async def _constrained_candidate(self, worker: WorkerProfile) -> str:
        """The best queued task with requirements that ``worker`` meets
        ("" if none): read here, since Lua cannot check requirements; the
        claim script takes it only if it is still queued and still best."""
        # On the pipelined connection, not redis-py: this runs in the
        # claimer's task, and redis-py may swallow its cancellation.
        client = await self._link.fast()
        keys = self._link.keys
        best: tuple[float, bytes, str] | None = None
        for skill in worker.skills:
            flat = await client.execute(
                "ZRANGE", keys.constrained(skill), 0, _CONSTRAINED_SCAN - 1, "WITHSCORES"
            )
            if not flat:
                continue
            pairs = zip(flat[::2], flat[1::2], strict=True)
            entries = [(member, float(score)) for member, score in pairs]
            datas = await client.execute_many(
                *(("HGET", keys.task(member.decode()[21:]), "d") for member, _ in entries)
            )
            for (member, score), data in zip(entries, datas, strict=True):
                if data is None or (best is not None and (score, member) >= best[:2]):
                    continue
                if eligible(Requirements.of(Task.FromString(data)), worker, skill):
                    best = (score, member, member.decode()[21:])
        return best[2] if best else ""
