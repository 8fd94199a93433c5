"""Batches of stream messages, for both ends of the worker stream.

The server (``avtomatika.grpc.worker_stream``) and the Python SDK
(``avtomatika.worker``) each queue the messages they will write; whoever
writes takes what is queued at that moment as one batch, so a burst of
results, acks or tasks costs one stream message. ``None`` in the queue marks
the end: what was queued before it is still written.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

__all__ = ["Batcher"]

# A batch stays well under gRPC's default 4 MiB message limit; a message
# bigger than this goes on its own.
_BATCH_BYTES = 1 << 20
_BATCH_MESSAGES = 256


class _Sized(Protocol):
    def ByteSize(self) -> int: ...


_M = TypeVar("_M", bound=_Sized)


class Batcher(Generic[_M]):
    """Takes batches from ``queue``."""

    def __init__(self, queue: asyncio.Queue[_M | None]) -> None:
        self._queue = queue
        self._carried: _M | None = None
        self._ended = False

    async def next(self, *, batching: bool = True) -> list[_M]:
        """The messages queued now (waiting for one): as many as fit in a
        batch, or just one without ``batching``; empty once the end marker
        was reached."""
        if self._ended:
            return []
        first = self._carried if self._carried is not None else await self._queue.get()
        self._carried = None
        if first is None:
            self._ended = True
            return []
        batch = [first]
        if not batching:
            return batch
        size = first.ByteSize()
        while len(batch) < _BATCH_MESSAGES and not self._queue.empty():
            message = self._queue.get_nowait()
            if message is None:
                self._ended = True  # write what was queued before the end, then end
                break
            size += message.ByteSize()
            if size > _BATCH_BYTES:
                self._carried = message
                break
            batch.append(message)
        return batch
