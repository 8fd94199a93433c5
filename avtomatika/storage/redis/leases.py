"""Leasing one given task, and undoing a lease nobody took: the TAKE and
GIVE_BACK scripts, and reading the tasks a script replies it leased."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from avtomatika.clock import now_ms
from avtomatika.errors import Unavailable
from avtomatika.storage.redis.link import Link
from avtomatika.storage.redis.recent import Recent
from avtomatika.v1 import task_pb2
from avtomatika.v1.task_pb2 import Task

__all__ = ["Leases", "all_leased", "leased"]

log = logging.getLogger(__name__)


class Leases:
    """Leases made and undone one task at a time."""

    def __init__(self, link: Link, recent: Recent) -> None:
        self._link = link
        self.recent = recent
        """Where every lease made here is noted, with its nonce."""

    async def take(self, task_id: str, worker_id: str, nonce: str) -> Task | None:
        """Lease ``task_id`` to ``worker_id`` if it is still queued (TAKE)."""
        now = now_ms()
        task = leased(await self._link.run("TAKE", task_id, worker_id, now, nonce), worker_id, now)
        if task is not None:
            self.recent.task_leased(task, nonce)
        return task

    async def give_back(self, task_id: str, worker_id: str, nonce: str = "") -> None:
        """Undo a lease nobody took (only the one made under ``nonce``, if
        given); retried through an outage, or the task would stay leased to
        a worker that never heard of it."""
        self.recent.forget_task(task_id)
        await self._link.retrying(
            "giving a task back", self._link.run, "GIVE_BACK", task_id, worker_id, nonce
        )

    async def give_back_claimed(self, nonce: str, worker_id: str) -> None:
        """Give back what the claim with ``nonce`` leased, if anything. The
        read goes after the claim on the one connection, so Redis answers it
        once the claim has run (or, if the connection dropped, never will)."""
        link = self._link
        try:
            task_ids = await link.retrying(
                "looking for an abandoned claim", link.get, link.keys.claim_nonce(nonce)
            )
            given = (task_ids or b"").decode().split(",")
            await asyncio.gather(*(self.give_back(t, worker_id, nonce) for t in given if t))
        except Unavailable as exc:
            # Closed meanwhile: the lease goes back when the worker says what
            # it holds on its next stream, or at the task's deadline.
            log.warning("a task a cancelled claim may have leased stays leased: %s", exc)


def all_leased(found: Any, worker_id: str, now: int) -> list[Task]:
    """The tasks a CLAIM script leased (three reply elements each)."""
    if not found:
        return []
    return [
        _as_leased(found[at + 1], found[at + 2], worker_id, now) for at in range(0, len(found), 3)
    ]


def leased(found: Any, worker_id: str, now: int) -> Task | None:
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
