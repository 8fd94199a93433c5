"""Matchmaking between queued tasks and the workers waiting on this
instance: wake-ups, hand-out passes, and a commit's offer of its new task.

A worker with nothing to take waits (:class:`WaitingClaim`). When a task of
its skill is queued (a wake-up, from this instance or another), one waiter
claims it itself; among several, a hand-out pass leases the task to the one
the task's dispatch strategy picks (:func:`~avtomatika.storage.waiters.pick`,
as the embedded store does), so that the strategy, not the first claim to
land, decides. A commit that queues a task while a worker for it waits here
offers it to that worker: the COMMIT script leases it there and then
(:class:`Offer`). An offer or a pass that came to nothing makes the worker
look again. Across instances, the first claim wins.

A claim for several tasks (a gRPC stream with credits) takes several offers
at once, up to its limit: under load commits come faster than a claim parks
again, and with one offer at a time most new tasks went through the queue
and a claim instead (about nine more Redis commands each). A parked claim
is preferred, so the task's strategy picks as before whenever one waits;
the claim returns what it was handed once its offers in flight are back.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from avtomatika.dispatch import Requirements, WorkerProfile
from avtomatika.storage.redis.leases import Leases
from avtomatika.storage.redis.link import Link
from avtomatika.storage.waiters import Waiters, pick
from avtomatika.v1.task_pb2 import Task

__all__ = ["HandOuts", "Look", "Offer", "WaitingClaim"]


class Look(NamedTuple):
    """A claim that found nothing for a worker."""

    skills: tuple[str, ...]
    wakes: int
    """The wake-up count of those skills when the claim was sent."""
    at: float
    """The loop's time then."""


class WaitingClaim:
    """A claim waiting for a task of one of its worker's skills."""

    __slots__ = ("claiming", "done", "event", "handed", "limit", "offers", "quiet", "worker")

    def __init__(self, worker: WorkerProfile, limit: int = 1) -> None:
        self.worker = worker
        self.limit = limit
        """The most tasks it may be handed."""
        self.event = asyncio.Event()
        """Set when it should look (again), or was handed a task."""
        self.done = False
        self.handed: list[Task] = []
        """Tasks leased to it by a hand-out pass or a commit, not yet taken."""
        self.claiming = False
        """Its own claim is in flight (hand-outs pass it by)."""
        self.offers: set[str] = set()
        """The nonces of the commits in flight that may lease it a new task:
        it claims nothing meanwhile, and hand-out passes pass it by."""
        self.quiet: Look | None = None
        """When its queues last held nothing for it (None once a wake-up
        came: it must look)."""

    @property
    def parked(self) -> bool:
        """Waiting for a wake-up, with nothing in flight for it."""
        return not (self.done or self.claiming or self.offers or self.handed)

    @property
    def open(self) -> bool:
        """It may be offered one more task: waiting, handed nothing yet
        (once handed a task it returns as soon as its offers are back), and
        with room for one more than the offers in flight."""
        return not (self.done or self.claiming or self.handed) and len(self.offers) < self.limit

    def receive(self, task: Task) -> bool:
        """Take ``task``, leased to it, unless it left or is full (then the
        caller gives the task back)."""
        if self.done or len(self.handed) >= self.limit:
            return False
        self.handed.append(task)
        self.event.set()
        return True


class Offer(NamedTuple):
    """A commit's new task that a worker waiting here may get at once."""

    task_id: str
    waiter: WaitingClaim
    nonce: str
    """The claim nonce the lease is made under, if it is made."""


class HandOuts:
    """The claims waiting on this instance and what is handed to them."""

    def __init__(self, link: Link, leases: Leases) -> None:
        self._link = link
        self._leases = leases
        self.waiters: Waiters[WaitingClaim] = Waiters()
        self._wakes: dict[str, int] = {}
        """Wake-ups per skill, ever (local and from other instances)."""
        # Skills whose queued tasks wait for a hand-out pass, in order, and
        # the one coroutine running the passes.
        self._to_hand: dict[str, None] = {}
        self._handing: asyncio.Future[None] | None = None

    def add(self, worker: WorkerProfile, limit: int = 1) -> WaitingClaim:
        """A claim of ``worker`` for up to ``limit`` tasks waits from now on."""
        waiter = WaitingClaim(worker, limit)
        self.waiters.add(waiter)
        return waiter

    def remove(self, waiter: WaitingClaim) -> None:
        """The claim of ``waiter`` is over: nothing is handed to it any more."""
        waiter.done = True
        self.waiters.remove(waiter)

    def wake_count(self, worker: WorkerProfile) -> int:
        """How many wake-ups this instance has had for ``worker``'s skills."""
        return sum(self._wakes.get(skill, 0) for skill in worker.skills)

    def wake(self, skill: str) -> None:
        """A task of ``skill`` was queued: one waiter claims it itself; among
        several, the task's dispatch strategy picks who gets it."""
        self._wakes[skill] = self._wakes.get(skill, 0) + 1
        idle = []
        for waiter in self.waiters.of(skill):
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
            self._handing = self._link.spawn(self._hand_out_all())

    def wake_all(self) -> None:
        """Every waiter looks (wake-ups may have been lost)."""
        for skill in self.waiters.skills():
            self.wake(skill)

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
            waiters = self.waiters.parked(skill)
            head = await self._head(skill) if len(waiters) > 1 else None
            if head is None:
                for waiter in waiters:  # each checks for itself
                    waiter.event.set()
                return
            chosen = pick(head, skill, Requirements.of(head), waiters)
            if chosen is None:
                for waiter in waiters:  # the head suits none: others may suit them
                    waiter.event.set()
                return
            task = await self._link.retrying(
                "handing out a task",
                self._leases.take,
                head.task_id,
                chosen.worker.worker_id,
                secrets.token_hex(8),
            )
            if task is None:
                continue  # another claimer took it first: look at the new head
            if not chosen.receive(task):  # it left, or offers filled it, meanwhile
                await self._leases.give_back(task.task_id, task.worker_id)

    async def _head(self, skill: str) -> Task | None:
        """The next task of ``skill``'s plain queue, if any (HEAD)."""
        data = await self._link.run("HEAD", skill)
        return Task.FromString(data) if data else None

    def offer(self, tasks: Sequence[Task]) -> Offer | None:
        """A worker waiting here that the commit of ``tasks`` (queued, no
        requirements) may lease one of them to at once, saving the claim,
        as the embedded store hands a task to a waiting worker. The task's
        strategy picks among several (longest waiting first on ties); with
        none parked, among those with room for another offer."""
        for task in tasks:
            chosen = pick(task, task.type, None, self.waiters.parked(task.type))
            if chosen is None:
                waiters = self.waiters.of(task.type)
                chosen = pick(task, task.type, None, [w for w in waiters if w.open])
            if chosen is not None:
                return Offer(task.task_id, chosen, secrets.token_hex(8))
        return None

    @contextlib.contextmanager
    def offering(self, offer: Offer | None) -> Iterator[None]:
        """While the commit carrying ``offer`` is in flight, its waiter
        claims nothing else. A commit that fails unheard may have leased the
        task all the same: that lease (its nonce) goes back."""
        if offer is None:
            yield
            return
        waiter = offer.waiter
        waiter.offers.add(offer.nonce)
        try:
            yield
        except BaseException:
            if offer.nonce in waiter.offers:  # the reply never came
                waiter.offers.discard(offer.nonce)
                waiter.event.set()
                worker_id = waiter.worker.worker_id
                self._link.spawn(self._leases.give_back(offer.task_id, worker_id, offer.nonce))
            raise

    def hand(self, offer: Offer, task: Task | None, unheard: bool) -> None:
        """The reply to a commit that offered its waiter a task: ``task`` if
        it was leased to it. ``unheard``: an earlier attempt's reply was
        lost, so a reply without the task (the job moved on meanwhile) may
        hide a lease it made."""
        waiter = offer.waiter
        waiter.offers.discard(offer.nonce)
        if task is None:
            if unheard:
                worker_id = waiter.worker.worker_id
                self._link.spawn(self._leases.give_back(offer.task_id, worker_id, offer.nonce))
            waiter.event.set()  # wake-ups passed it by while it was offered
            return
        if not waiter.receive(task):  # it left, or is full, meanwhile
            self._link.spawn(self._leases.give_back(task.task_id, task.worker_id, offer.nonce))
            # A full claim may be waiting for this very reply before it
            # returns what it was handed.
            waiter.event.set()
