"""The Redis store's way to Redis, shared by its parts: the clients, the
registered scripts, the wake-up subscription, and the background work that
must finish before the store closes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from avtomatika.errors import Unavailable
from avtomatika.storage.redis import scripts
from avtomatika.storage.redis.connection import Redis, connect
from avtomatika.storage.redis.keys import Keys
from avtomatika.storage.redis.outages import until_up
from avtomatika.storage.redis.pipelined import Pipelined, Script
from avtomatika.storage.redis.pubsub import Subscriber

__all__ = ["RECHECK", "Link"]

_T = TypeVar("_T")

RECHECK = 1.0
"""A waiting claim or an idle executor re-checks Redis at least this often,
in case a wake-up message was lost (pub/sub is fire-and-forget)."""


class Link:
    """One store's connection to Redis. Opens on first use (or
    :meth:`open`); once :meth:`begin_closing` is called nothing retries or
    reconnects."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        *,
        on_wake: Callable[[bytes], None],
        on_reconnect: Callable[[], None],
        on_open: Callable[[], None],
    ) -> None:
        """``on_wake`` gets each message of the wake-up channel,
        ``on_reconnect`` is called when the subscription comes back after an
        outage (messages may have been lost), ``on_open`` once connected."""
        self._url = url
        self.keys = keys
        self._on_wake = on_wake
        self._on_reconnect = on_reconnect
        self._on_open = on_open
        self._client: Redis | None = None
        # The commands of every job's path go through one pipelined
        # connection; the pool above serves the rare and multi-reply ones.
        self._pipelined: Pipelined | None = None
        self._scripts = {
            name: Script(scripts.source(keys, getattr(scripts, name))) for name in scripts.NAMES
        }
        self._subscriber: Subscriber | None = None
        self._opening: asyncio.Lock | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self.closing = False
        """Closing or closed: calls fail instead of reconnecting."""

    # redis-py types replies as ``bytes | str`` (it cannot know whether the
    # client decodes); this one never does, so replies are bytes. The client
    # is typed Any here rather than every reply cast at its call.
    @property
    def client(self) -> Any:
        """The Redis client (after :meth:`open`)."""
        if self._client is None:
            raise RuntimeError("RedisStorage is not open")
        return self._client

    @property
    def is_open(self) -> bool:
        """Connected, and not closed since."""
        return self._client is not None

    async def open(self) -> None:
        """Connect (raising :class:`~avtomatika.errors.ConfigError` naming
        the URL if Redis does not answer), register the scripts and start
        listening for wake-ups. Idempotent."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is not None:
                return
            client = await connect(self._url)
            pipelined = Pipelined(self._url)
            # Loaded now, so that a script runs by its SHA even for a caller
            # that is gone before the reply (one that found it missing
            # would not be there to send it whole).
            loads = (("SCRIPT", "LOAD", script.body) for script in self._scripts.values())
            try:
                await pipelined.execute_many(*loads)
            except BaseException:
                await pipelined.close()
                await client.aclose()
                raise
            self._pipelined = pipelined
            subscriber = Subscriber(self._url)
            subscriber.on(self.keys.wake_channel, self._on_wake)
            subscriber.on_reconnect(self._on_reconnect)
            await subscriber.start()
            self._client, self._subscriber = client, subscriber
            self._on_open()

    async def redis(self) -> Any:
        """The client, connecting first if need be."""
        if self._client is None:
            if self.closing:
                raise Unavailable("the shared store (Redis) is closed")
            await self.open()
        return self.client

    async def fast(self) -> Pipelined:
        """The pipelined connection, connecting first if need be."""
        await self.redis()
        assert self._pipelined is not None
        return self._pipelined

    async def get(self, key: str) -> bytes | None:
        """``GET key`` on the pipelined connection."""
        value: bytes | None = await (await self.fast()).execute("GET", key)
        return value

    async def run(self, name: str, *args: Any) -> Any:
        """Run the script ``name`` of :mod:`.scripts` with ``args`` as its ARGV."""
        pipelined = self._pipelined or await self.fast()
        return await pipelined.run(self._scripts[name], [self.keys.root], list(args))

    async def retrying(self, what: str, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """``call`` until Redis answers: waiting calls ride out an outage."""
        return await until_up(what, call, *args, giving_up=lambda: self.closing)

    def spawn(self, coroutine: Awaitable[_T]) -> asyncio.Future[_T]:
        """Run ``coroutine`` in the background; :meth:`drain` waits for it."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def begin_closing(self) -> None:
        """From here on nothing retries or reconnects."""
        self.closing = True

    async def stop_listening(self) -> None:
        """Stop the wake-up subscription."""
        if self._subscriber is not None:
            await self._subscriber.stop()

    async def drain(self) -> None:
        """Wait for the background work (give-backs, hand-backs), including
        any it starts meanwhile."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def detach(self) -> Any:
        """Stop serving calls (they fail as closed) and return the client,
        for the last writes before :meth:`disconnect`."""
        client, self._client = self._client, None
        return client

    async def disconnect(self, client: Any) -> None:
        """Close ``client`` (from :meth:`detach`) and the pipelined connection."""
        await client.aclose()
        if self._pipelined is not None:
            await self._pipelined.close()
            self._pipelined = None
