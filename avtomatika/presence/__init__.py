"""What the other orchestrator instances need to know about this one's
workers, behind one narrow interface.

The :class:`~avtomatika.engine.registry.WorkerRegistry` keeps the workers connected
to this process. With several instances on one Redis, a worker's stream or
WebSocket is in exactly one of them, while a cancel, a listing or a dead
worker's leases may concern any. The registry reports each change of its
books to a :class:`Presence` and asks it what it cannot answer alone:

- where a worker is (to forward a cancel to the instance holding it),
- which workers the whole cluster has (``GET /api/v1/workers``),
- which tasks are leased to a worker in shared storage (a worker may have
  taken them through another instance), and
- whether this instance may re-queue a worker's leases now (not if the
  worker came back through another instance meanwhile).

:class:`Solo` is the answer for one process (the embedded store): every
worker is here, so it forwards nothing, adds nothing and always lets the
registry decide alone. The Redis implementation is
:class:`avtomatika.presence.redis.RedisPresence`.
"""

from __future__ import annotations

from typing import Protocol

from avtomatika.v1.worker_pb2 import WorkerInfo

__all__ = ["Presence", "Solo"]


class Presence(Protocol):
    """The registry's view of the other instances."""

    def held(self, info: WorkerInfo) -> None:
        """The worker's connection (stream or socket) is here now; ``info``
        is the registry's live record (read later, never modified)."""

    def seen(self, info: WorkerInfo) -> None:
        """The worker is known here without a connection (a REST worker
        between requests); ``info`` as for :meth:`held`."""

    def away(self, worker_id: str, grace_seconds: float) -> None:
        """The worker's connection here ended; it has ``grace_seconds`` to
        come back (here or elsewhere) before its leases are re-queued."""

    def gone(self, worker_id: str) -> None:
        """This instance forgot the worker (it left, or was replaced)."""

    async def leases(self, worker_id: str) -> list[str]:
        """Tasks leased to the worker that this process's books may not
        know (taken through another instance)."""

    async def may_release(self, worker_id: str) -> bool:
        """Whether this instance may re-queue the worker's leases now: no
        other instance holds the worker. Claims the release when it says so."""

    async def forward_cancel(self, worker_id: str, task_id: str, job_id: str, reason: str) -> bool:
        """Send a cancel to the instance holding the worker's connection;
        True when the worker is connected there and the cancel went out."""

    async def workers(self, local: list[WorkerInfo]) -> list[WorkerInfo]:
        """Every worker of the cluster: ``local`` (this instance's) and the
        live workers of the others."""

    async def lookup(self, worker_id: str) -> WorkerInfo | None:
        """The worker's record as another instance announced it, if it is
        alive somewhere."""


class Solo:
    """One process: every worker that exists is in the local registry."""

    def held(self, info: WorkerInfo) -> None:
        pass

    def seen(self, info: WorkerInfo) -> None:
        pass

    def away(self, worker_id: str, grace_seconds: float) -> None:
        pass

    def gone(self, worker_id: str) -> None:
        pass

    async def leases(self, worker_id: str) -> list[str]:
        return []  # the registry's own books are complete

    async def may_release(self, worker_id: str) -> bool:
        return True

    async def forward_cancel(self, worker_id: str, task_id: str, job_id: str, reason: str) -> bool:
        return False  # not connected here means not connected at all

    async def workers(self, local: list[WorkerInfo]) -> list[WorkerInfo]:
        return local

    async def lookup(self, worker_id: str) -> WorkerInfo | None:
        return None
