"""Timers (deadlines, backoffs, scheduled retries) and retention: the DUE
and SWEEP scripts.

The timers are a sorted set that every instance polls; a fired deadline is
re-armed a while later until handling it changes the task, so it fires on
exactly one instance while that instance lives, and on another if it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from avtomatika.clock import now_ms
from avtomatika.storage.base import Expiry
from avtomatika.storage.redis.link import Link

__all__ = ["Deadlines"]

# The timer loop sleeps at most this long: timers set by other instances are
# seen within it.
_TIMER_TICK = 0.1
# Timers fired per script call; ended jobs forgotten per sweep.
_BATCH = 100
# A fired deadline is re-armed this much later in case its handler dies.
_RECLAIM_MS = 30_000
_SWEEP_EVERY = 5.0


class Deadlines:
    """Fires the timers that are due and forgets ended jobs past retention."""

    def __init__(self, link: Link, retention_seconds: float) -> None:
        self._link = link
        self._retention_ms = int(retention_seconds * 1000)
        self._sweep_every = min(_SWEEP_EVERY, retention_seconds / 4)
        self._last_sweep = 0.0
        self._expired: deque[Expiry] = deque()
        self.wake = asyncio.Event()
        """Set when a timer may have been armed: look before the tick ends."""

    async def next_expiry(self) -> Expiry:
        """See :meth:`Storage.next_expiry <avtomatika.storage.base.Storage.next_expiry>`."""
        while not self._expired:
            fired = await self._link.retrying("firing timers", self._fire_due)
            if fired:
                break
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TIMER_TICK):
                    await self.wake.wait()
        return self._expired.popleft()

    async def _fire_due(self) -> bool:
        run = self._link.run
        now = now_ms()
        fired = await run("DUE", now, _BATCH, _RECLAIM_MS)
        for member in fired:
            kind, _, task_id = member.decode().partition(":")
            self._expired.append(Expiry(task_id=task_id, kind=kind))
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_sweep >= self._sweep_every:
            self._last_sweep = loop_now
            while await run("SWEEP", now - self._retention_ms, _BATCH) == _BATCH:
                pass
        return bool(fired)

    def clear(self) -> None:
        """Forget the deadlines fired but not yet handed out (the store was flushed)."""
        self._expired.clear()
