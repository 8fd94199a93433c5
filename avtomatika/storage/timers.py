"""Due times for the in-memory store: one heap, entries keyed by name.

Setting a key again moves it; dropping it forgets it. The heap keeps stale
entries (cheaper than removing them) and skips them when they surface; it is
rebuilt when stale entries outnumber live ones, so memory stays bounded by the
live timers.
"""

from __future__ import annotations

import asyncio
import heapq

from avtomatika.clock import now_ms

__all__ = ["Timers"]


class Timers:
    """Named timers with wall-clock (epoch ms) due times."""

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def set(self, key: str, due_ms: int) -> None:
        """Fire ``key`` at ``due_ms`` (replacing any earlier setting)."""
        self._due[key] = due_ms
        heapq.heappush(self._heap, (due_ms, key))
        if self._heap[0] == (due_ms, key):
            self._changed.set()  # a new earliest timer: the waiter must re-arm
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._heap = [(due, key) for key, due in self._due.items()]
            heapq.heapify(self._heap)

    def drop(self, key: str) -> None:
        """Forget ``key``."""
        self._due.pop(key, None)

    def clear(self) -> None:
        """Forget every timer."""
        self._due.clear()
        self._heap.clear()

    def pop_due(self) -> str | None:
        """A key whose time has come, removed; None if none is due yet."""
        now = now_ms()
        while self._heap and self._heap[0][0] <= now:
            due, key = heapq.heappop(self._heap)
            if self._due.get(key) == due:
                del self._due[key]
                return key
        return None

    async def wait(self) -> None:
        """Sleep until the earliest timer is due or a new earliest one is set."""
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale head
        self._changed.clear()
        delay = (self._heap[0][0] - now_ms()) / 1000 if self._heap else None
        if delay is not None and delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await self._changed.wait()
        except TimeoutError:
            return
