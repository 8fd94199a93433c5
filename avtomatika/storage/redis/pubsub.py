"""One pub/sub connection per instance, shared by everything that listens.

Redis pub/sub is fire-and-forget: a message published while this instance is
disconnected is lost. Listeners therefore use messages only to act sooner
(wake a waiting worker, push a cancel in real time, wake a follower) and
never as the only record of anything; each has a slower path that reads the
shared state (a periodic re-check, the next heartbeat). After a reconnect
every listener's ``on_reconnect`` runs so it can catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from avtomatika.storage.redis.connection import DOWN, Redis, check_cancelled, outage_backoff

__all__ = ["Handler", "Subscriber"]

log = logging.getLogger(__name__)

Handler = Callable[[bytes], None]
"""Called with each message's data; must not block (queue work instead)."""


class Subscriber:
    """Listens on a fixed set of channels, each with its handlers."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._handlers: dict[str, list[Handler]] = {}
        self._reconnected: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    def on(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` for every message on ``channel``. Register before
        :meth:`start`."""
        self._handlers.setdefault(channel, []).append(handler)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after the connection came back from an outage
        (messages sent meanwhile are lost: catch up from shared state)."""
        self._reconnected.append(callback)

    async def start(self) -> None:
        """Subscribe and wait until the subscription is in place, so that
        nothing published after this returns is missed."""
        if self._task is None and self._handlers:
            self._task = asyncio.create_task(self._listen(), name="avtomatika-redis-pubsub")
            await self._ready.wait()

    async def stop(self) -> None:
        self._stopping = True  # in case redis-py swallows the cancel below
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self) -> None:
        attempt = 0
        while not self._stopping:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._handlers)
                if attempt:
                    log.info("Redis pub/sub is back")
                    for callback in self._reconnected:
                        self._call(callback)
                attempt = 0
                self._ready.set()
                while not self._stopping:
                    message = await pubsub.get_message(timeout=None)
                    check_cancelled()
                    if message is None:
                        continue
                    channel = message["channel"]
                    name = channel.decode() if isinstance(channel, bytes) else str(channel)
                    for handler in self._handlers.get(name, ()):
                        self._call(handler, message["data"])
            except DOWN as exc:
                await outage_backoff(attempt, "pub/sub", exc)
                attempt += 1
                self._ready.set()  # start-up must not hang on an outage
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("pub/sub listener %r failed", callback)
