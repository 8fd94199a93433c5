"""Where webhook deliveries wait between attempts.

:class:`Outbox` is the contract the sender works against; each delivery it
hands out with :meth:`Outbox.take` is settled with exactly one of
:meth:`Outbox.retry` or :meth:`Outbox.done`, or given back by
:meth:`Outbox.close`.

:class:`MemoryOutbox` (the embedded store) keeps them in this process: a
queue, and timers for the backoffs, so a dead endpoint never holds a sender.
What is still pending when the orchestrator stops is lost (recorded as
failed). :class:`~avtomatika.webhooks.redis_outbox.RedisOutbox` keeps them in
Redis instead, where they survive a restart and any instance may send them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from avtomatika.webhooks.delivery import Delivery

__all__ = ["MemoryOutbox", "Outbox"]


class Outbox(Protocol):
    durable: bool
    """Deliveries outlive the process: a stopping process leaves them for
    the next one instead of giving them up."""

    @property
    def backlog(self) -> int:
        """Deliveries this process holds: waiting, backing off or under way."""
        ...

    async def open(self) -> None: ...

    def put(self, delivery: Delivery) -> None:
        """A new delivery, due now. Never blocks (called from a listener)."""
        ...

    async def take(self) -> Delivery:
        """Wait for a delivery that is due, with its attempts counting the one
        about to be made."""
        ...

    async def retry(self, delivery: Delivery, delay: float) -> None:
        """Hand ``delivery`` out again in ``delay`` seconds."""
        ...

    async def done(self, delivery: Delivery) -> None:
        """Forget ``delivery``: delivered or given up."""
        ...

    async def drain(self) -> None:
        """Stopping: start no backoff or new attempt that cannot end before
        the process does; return once what is under way has settled."""
        ...

    async def close(self, interrupted: Sequence[Delivery]) -> list[Delivery]:
        """Stop; ``interrupted`` were taken and never settled. Returns the
        deliveries this outbox could not keep, to be recorded as failed."""
        ...


class MemoryOutbox:
    """An :class:`Outbox` in this process's memory."""

    durable = False

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._backing_off: dict[Delivery, asyncio.TimerHandle] = {}
        self._abandoned: list[Delivery] = []
        self._busy = 0

    @property
    def backlog(self) -> int:
        return self._queue.qsize() + len(self._backing_off) + self._busy

    async def open(self) -> None:
        return None

    def put(self, delivery: Delivery) -> None:
        self._queue.put_nowait(delivery)

    async def take(self) -> Delivery:
        delivery = await self._queue.get()
        self._busy += 1
        delivery.attempts += 1
        return delivery

    async def retry(self, delivery: Delivery, delay: float) -> None:
        handle = asyncio.get_running_loop().call_later(delay, self._due, delivery)
        self._backing_off[delivery] = handle
        self._settle()

    async def done(self, delivery: Delivery) -> None:
        self._settle()

    async def drain(self) -> None:
        # Deliveries backing off would be due after the process is gone.
        self._cancel_backoffs()
        await self._queue.join()

    async def close(self, interrupted: Sequence[Delivery]) -> list[Delivery]:
        self._cancel_backoffs()
        lost, self._abandoned = [*self._abandoned, *interrupted], []
        while not self._queue.empty():
            lost.append(self._queue.get_nowait())
            self._queue.task_done()
        for _ in interrupted:
            self._settle()
        return lost

    def _due(self, delivery: Delivery) -> None:
        del self._backing_off[delivery]
        self._queue.put_nowait(delivery)

    def _settle(self) -> None:
        self._busy -= 1
        self._queue.task_done()

    def _cancel_backoffs(self) -> None:
        for delivery, handle in self._backing_off.items():
            handle.cancel()
            self._abandoned.append(delivery)
        self._backing_off.clear()
