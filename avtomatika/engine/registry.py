"""The workers connected to this process, whatever their transport.

Transports register a worker with a :class:`CancelSink` (its gRPC stream or
WebSocket) so the engine can push a cancel to it in real time; the registry is
also what ``GET /api/v1/workers`` lists.

Leases outlive connections. The registry keeps, per worker id, the set of
task ids leased to it (:meth:`WorkerRegistry.connect` returns it, the
transport adds and removes ids). A second connection for the same id gets the
same set and replaces the first. When the live connection ends, the worker
has ``grace`` seconds to come back and keep its leases (results of tasks it
ran meanwhile are accepted); after that every task still leased to it is
re-queued as a transient failure. The grace timer is an asyncio timer,
cancelled when the worker returns. At shutdown (:meth:`WorkerRegistry.close`)
nothing waits: leases are re-queued at once.

With several instances the registry tells a :class:`~avtomatika.presence.Presence`
about each change and asks it before acting alone: a cancel for a worker
connected elsewhere is forwarded, a worker that came back through another
instance keeps its leases, and tasks leased to the worker through another
instance are re-queued with the ones this process knows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from avtomatika.clock import now_ms
from avtomatika.engine.signals import Signal
from avtomatika.presence import Presence, Solo
from avtomatika.v1.worker_pb2 import WorkerInfo

__all__ = [
    "CancelSink",
    "DrainSink",
    "Joined",
    "ReplaceableSink",
    "Requeue",
    "WorkerChange",
    "WorkerRegistry",
]

log = logging.getLogger(__name__)

Requeue = Callable[[str, str, str], Awaitable[bool]]
"""``requeue(task_id, worker_id, reason)``: the engine's ``requeue_task``."""


class CancelSink(Protocol):
    """A live connection to a worker that can carry a cancel command."""

    def push_cancel(self, task_id: str, job_id: str, reason: str) -> bool:
        """Queue a cancel for the worker; False if the connection is gone."""


@runtime_checkable
class ReplaceableSink(Protocol):
    """A connection that can be closed because a newer one replaced it."""

    def close_replaced(self) -> None:
        """Tell the worker (if the transport can) and end the connection."""


@runtime_checkable
class DrainSink(Protocol):
    """A connection that can also tell its worker to take no more tasks."""

    def push_drain(self, reason: str) -> bool:
        """Queue a drain for the worker; False if the connection is gone."""


@dataclass(frozen=True, slots=True)
class WorkerChange:
    """A worker came, went or was told to stop taking work: what the
    registry's :attr:`WorkerRegistry.changes` signal carries (the logs
    listen)."""

    kind: str
    """``connected``, ``returned`` (within its grace period), ``replaced``
    (a newer connection took over), ``registered_again`` (a REST worker
    restarted), ``disconnected``, ``away`` (disconnected holding tasks,
    within its grace period), ``gone`` (the grace period passed),
    ``drained`` (told to take no more tasks) or ``draining`` (it said so)."""
    worker_id: str
    info: WorkerInfo | None = None
    """The worker's record when it connects (its skills, its transport)."""
    reason: str = ""
    held: int = 0
    """Tasks it held when it left."""
    dropped: bool = False
    """The server ended the connection (the worker went silent), rather
    than the worker or the network: worth a warning."""


class Joined(NamedTuple):
    """What :meth:`WorkerRegistry.connect` hands a new connection."""

    leases: set[str]
    """Task ids leased to the worker, shared by all its connections."""
    replaced: CancelSink | None
    """The live connection this one replaces, which the transport closes."""


@dataclass(slots=True)
class _Entry:
    info: WorkerInfo
    sink: CancelSink | None
    leases: set[str] = field(default_factory=set)
    grace: asyncio.TimerHandle | None = None


class WorkerRegistry:
    """Connected workers by id, and the leases they hold across reconnects."""

    def __init__(
        self,
        requeue: Requeue | None = None,
        grace_seconds: float = 0.0,
        presence: Presence | None = None,
    ) -> None:
        self._workers: dict[str, _Entry] = {}
        self.presence: Presence = presence if presence is not None else Solo()
        """The other instances (none by default); set before workers connect."""
        self._requeue = requeue
        self._grace_seconds = grace_seconds
        self._releases: set[asyncio.Task[None]] = set()
        self._closing = False
        self.cancel_acked: Signal[float] = Signal("cancel acks")
        """Seconds from pushing a cancel to the worker's ack, per ack."""
        self.changes: Signal[WorkerChange] = Signal("worker changes")
        """Workers connecting, leaving and draining here."""

    def connect(self, info: WorkerInfo, sink: CancelSink | None) -> Joined:
        """Record ``info`` as connected through ``sink``. A worker back within
        its grace period keeps its leases; a live connection for the same id
        is replaced (returned, for the transport to close)."""
        info.last_seen_ms = now_ms()
        worker_id = info.registration.worker_id
        previous = self._workers.get(worker_id)
        leases: set[str] = set()
        replaced = None
        if previous is not None:
            leases = previous.leases
            if previous.grace is not None:
                previous.grace.cancel()
                self.changes.send(WorkerChange("returned", worker_id, info))
            elif previous.sink is not sink:
                replaced = previous.sink
                if replaced is not None and sink is not None:
                    self.changes.send(WorkerChange("replaced", worker_id, info))
        else:
            self.changes.send(WorkerChange("connected", worker_id, info))
        self._workers[worker_id] = _Entry(info, sink, leases)
        if sink is None:
            self.presence.seen(info)
        else:
            self.presence.held(info)
        return Joined(leases, replaced)

    def disconnect(
        self,
        worker_id: str,
        sink: CancelSink | None,
        reason: str = "connection closed",
        *,
        dropped: bool = False,
    ) -> list[str]:
        """The connection ``sink`` ended (``reason`` says how; ``dropped``:
        the server ended it, the worker having gone silent). Unless a newer
        connection replaced it, the worker's leases wait out the grace
        period; returns those to re-queue now instead (no grace, or shutting
        down)."""
        entry = self._workers.get(worker_id)
        if entry is None or entry.sink is not sink or entry.grace is not None:
            return []
        if not entry.leases or self._grace_seconds <= 0 or self._closing:
            held = len(entry.leases)
            self.changes.send(WorkerChange("disconnected", worker_id, None, reason, held, dropped))
            del self._workers[worker_id]
            self.presence.gone(worker_id)
            # The caller re-queues the leases this process knows; tasks the
            # worker took through another instance are found in the shared
            # store (the presence answers none for one process).
            self._spawn(self._release(worker_id, []))
            return sorted(entry.leases)
        entry.sink = None
        self.presence.away(worker_id, self._grace_seconds)
        loop = asyncio.get_running_loop()
        entry.grace = loop.call_later(self._grace_seconds, self._expire, worker_id, entry)
        held = len(entry.leases)
        self.changes.send(WorkerChange("away", worker_id, None, reason, held, dropped))
        return []

    def _expire(self, worker_id: str, entry: _Entry) -> None:
        if self._workers.get(worker_id) is entry:
            del self._workers[worker_id]
            self.changes.send(WorkerChange("gone", worker_id, held=len(entry.leases)))
        entry.grace = None
        self._spawn(self._release(worker_id, sorted(entry.leases)))

    def _spawn(self, release: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(release)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, worker_id: str, known: list[str]) -> None:
        """Re-queue the worker's leases, ``known`` and those in the shared
        store, unless another instance holds the worker now (it came back
        there within its grace period)."""
        if self._requeue is None:
            return
        try:
            if not await self.presence.may_release(worker_id):
                log.info("worker %s is back through another instance; leases kept", worker_id)
                return
            task_ids = sorted({*known, *await self.presence.leases(worker_id)})
        except Exception as exc:
            # Redis unreachable (or closed at shutdown): what this process
            # knows still goes back; a survivor's sweep finds the rest.
            log.warning("worker %s: finding its leases failed: %s", worker_id, exc)
            task_ids = known
        for task_id in task_ids:
            try:
                if await self._requeue(task_id, worker_id, "worker disconnected"):
                    log.info("worker %s did not return; task %s re-queued", worker_id, task_id)
            except Exception:
                log.exception("worker %s: re-queueing task %s failed", worker_id, task_id)

    async def close(self) -> None:
        """Shutting down: end every grace period now (re-queueing its leases)
        and wait for the re-queues. Later disconnects re-queue at once."""
        self._closing = True
        for worker_id, entry in list(self._workers.items()):
            if entry.grace is not None:
                entry.grace.cancel()
                self._expire(worker_id, entry)
        while self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    def supersede(self, worker_id: str) -> None:
        """The worker connected to another instance since: close its
        connection here, as a second connection here would (its leases
        then wait out the grace period, and stay with the worker)."""
        entry = self._workers.get(worker_id)
        if entry is not None and isinstance(entry.sink, ReplaceableSink):
            entry.sink.close_replaced()

    def is_current(self, worker_id: str, sink: CancelSink | None) -> bool:
        """Whether ``sink`` is the worker's live connection."""
        entry = self._workers.get(worker_id)
        return entry is not None and entry.sink is sink and entry.grace is None

    def info(self, worker_id: str) -> WorkerInfo | None:
        """The connected worker's live record (not a copy: do not modify it)."""
        entry = self._workers.get(worker_id)
        return None if entry is None else entry.info

    def touch(self, worker_id: str) -> None:
        """Note a sign of life."""
        entry = self._workers.get(worker_id)
        if entry is not None:
            entry.info.last_seen_ms = now_ms()

    async def push_cancel(self, worker_id: str, task_id: str, job_id: str, reason: str) -> bool:
        """Push a cancel to the worker, here or through the instance holding
        its connection; True when it went out in real time."""
        if self.push_here(worker_id, task_id, job_id, reason):
            return True
        return await self.presence.forward_cancel(worker_id, task_id, job_id, reason)

    def leases_here(self) -> dict[str, list[str]]:
        """The tasks leased to each worker connected to this process."""
        return {
            worker_id: sorted(entry.leases)
            for worker_id, entry in self._workers.items()
            if entry.sink is not None and entry.leases
        }

    def push_here(self, worker_id: str, task_id: str, job_id: str, reason: str) -> bool:
        """Push a cancel to the worker if its live connection is here."""
        entry = self._workers.get(worker_id)
        if entry is None or entry.sink is None:
            return False
        return entry.sink.push_cancel(task_id, job_id, reason)

    def drain(self, worker_id: str, reason: str) -> bool:
        """Tell a connected worker to take no more tasks; False when it is
        not connected or its transport cannot carry a drain."""
        entry = self._workers.get(worker_id)
        if entry is None or not isinstance(entry.sink, DrainSink):
            return False
        drained = entry.sink.push_drain(reason)
        if drained:
            self.changes.send(WorkerChange("drained", worker_id, reason=reason))
        return drained

    def drain_all(self, reason: str) -> int:
        """Drain every connected worker that can be told; how many were."""
        return sum(self.drain(worker_id, reason) for worker_id in list(self._workers))

    async def list_all(self) -> list[WorkerInfo]:
        """Snapshots of the workers of every instance (this one's first)."""
        return await self.presence.workers(self.list())

    def list(self) -> list[WorkerInfo]:
        """Snapshots of every worker connected here (not those in their grace
        period)."""
        result = []
        for entry in self._workers.values():
            if entry.grace is not None:
                continue
            info = WorkerInfo()
            info.CopyFrom(entry.info)
            result.append(info)
        return result
