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
from typing import Any

from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from avtomatika.storage.redis.outages import DOWN, Outage
from avtomatika.storage.redis.pipelined import RespConnection, open_connection, pack

__all__ = ["Handler", "Subscriber"]

log = logging.getLogger(__name__)

# How long Redis may take to confirm a subscription.
_CONFIRM_SECONDS = 10.0

Handler = Callable[[bytes], None]
"""Called with each message's data; must not block (queue work instead)."""


class Subscriber:
    """Listens on a fixed set of channels, each with its handlers, over a
    connection of its own (hiredis parses the messages, in C)."""

    def __init__(self, url: str) -> None:
        self._options = dict(parse_url(url))
        self._handlers: dict[bytes, list[Handler]] = {}
        self._reconnected: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._confirmations = 0

    def on(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` for every message on ``channel``. Register before
        :meth:`start`."""
        self._handlers.setdefault(channel.encode(), []).append(handler)

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
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self) -> None:
        outage = Outage("pub/sub")
        while True:
            connection: RespConnection | None = None
            try:
                connection = await open_connection(self._options)
                await self._subscribe(connection)
                if outage.over():
                    for callback in self._reconnected:
                        self._call(callback)
                self._ready.set()
                raise await connection.closed
            except DOWN as exc:
                await outage.wait(exc)
                self._ready.set()  # start-up must not hang on an outage
            finally:
                if connection is not None:
                    connection.fail(ConnectionError("the subscriber stopped"))

    async def _subscribe(self, connection: RespConnection) -> None:
        """Subscribe on ``connection``; returns once every channel is
        confirmed, raises if the connection drops or Redis does not confirm
        in time (a refusal, e.g. an ACL, drops the connection)."""
        self._subscribed.clear()
        self._confirmations = 0

        def on_push(reply: Any) -> None:
            if isinstance(reply, ResponseError):
                connection.fail(RedisConnectionError(f"Redis refused the subscription: {reply}"))
            else:
                self._on_push(reply)

        connection.on_push = on_push
        connection.write(pack(("SUBSCRIBE", *self._handlers)))
        subscribed: asyncio.Future[Any] = asyncio.ensure_future(self._subscribed.wait())
        try:
            either = [subscribed, connection.closed]
            await asyncio.wait(
                either, timeout=_CONFIRM_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            subscribed.cancel()
        if connection.closed.done():
            raise connection.closed.result()
        if not self._subscribed.is_set():
            raise RedisTimeoutError(f"Redis did not confirm SUBSCRIBE in {_CONFIRM_SECONDS:g} s")

    def _on_push(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) != 3:
            return
        kind, channel, data = reply
        if kind == b"message":
            for handler in self._handlers.get(channel, ()):
                self._call(handler, data)
        elif kind == b"subscribe":
            self._confirmations += 1
            if self._confirmations == len(self._handlers):
                self._subscribed.set()

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("pub/sub listener %r failed", callback)
