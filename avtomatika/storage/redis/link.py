"""The Redis store's way to Redis, shared by its parts: the clients, the
registered scripts, the wake-up subscription, and the background work that
must finish before the store closes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from redis.exceptions import TimeoutError as RedisTimeoutError

from avtomatika.backoff import backoff_delay
from avtomatika.clock import now_ms
from avtomatika.errors import Unavailable
from avtomatika.storage.redis import scripts
from avtomatika.storage.redis.connection import Redis, connect
from avtomatika.storage.redis.keys import Keys
from avtomatika.storage.redis.outages import DOWN, until_up
from avtomatika.storage.redis.pipelined import Pipelined, Script
from avtomatika.storage.redis.pubsub import Subscriber

__all__ = ["RECHECK", "Deadline", "Link"]

_T = TypeVar("_T")

RECHECK = 1.0
"""A waiting claim or an idle executor re-checks Redis at least this often,
in case a wake-up message was lost (pub/sub is fire-and-forget)."""


# A write's deadline in Redis' clock comes this long before its caller gives
# up: the clock offset is known to within half a round trip, and readings
# whose round trip took longer than this are not used.
_DEADLINE_MARGIN_MS = 250


class Deadline(NamedTuple):
    """When a write sent now must have landed: the script refuses to run
    after ``redis_ms`` (Redis' clock, epoch ms), and its caller stops
    trying at ``give_up`` (the event loop's clock), by when it no longer
    can (see :meth:`Link.run_before`)."""

    give_up: float
    redis_ms: int


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
        timeout: float,
    ) -> None:
        """``on_wake`` gets each message of the wake-up channel,
        ``on_reconnect`` is called when the subscription comes back after an
        outage (messages may have been lost), ``on_open`` once connected.
        A call waits at most ``timeout`` seconds for a connection or a
        reply (``REDIS_COMMAND_TIMEOUT_SECONDS``)."""
        self._url = url
        self.timeout = timeout
        # Redis' clock minus ours (ms), for the deadlines of writes; measured
        # at open and at every ping.
        self._clock_offset_ms = 0
        self._clock_read = False
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
            client = await connect(self._url, timeout=self.timeout)
            pipelined = Pipelined(self._url, timeout=self.timeout, connect_timeout=self.timeout)
            # Loaded now, so that a script runs by its SHA even for a caller
            # that is gone before the reply (one that found it missing
            # would not be there to send it whole).
            loads = (("SCRIPT", "LOAD", script.body) for script in self._scripts.values())
            try:
                await pipelined.execute_many(*loads)
                await self._read_clock(pipelined)
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

    async def ping(self) -> None:
        """One round trip (Redis' ``TIME``, which also keeps the clock
        offset of :meth:`deadline` fresh)."""
        await self._read_clock(await self.fast())

    async def _read_clock(self, pipelined: Pipelined) -> None:
        before = now_ms()
        seconds, micros = await pipelined.execute("TIME")
        after = now_ms()
        if self._clock_read and after - before > _DEADLINE_MARGIN_MS:
            # Known only to within half the round trip: a slow answer (a
            # backlog, a Redis just woken up) would move the deadlines by
            # more than their margin. The last good reading stands.
            return
        self._clock_read = True
        self._clock_offset_ms = int(seconds) * 1000 + int(micros) // 1000 - (before + after) // 2

    def deadline(self) -> Deadline:
        """The deadline of a write sent now: :attr:`timeout` from now."""
        redis_ms = now_ms() + self._clock_offset_ms + int(self.timeout * 1000)
        give_up = asyncio.get_running_loop().time() + self.timeout + _DEADLINE_MARGIN_MS / 1000
        return Deadline(give_up, redis_ms)

    async def run_before(self, deadline: Deadline, name: str, *args: Any) -> Any:
        """:meth:`run` a script that refuses to run after
        ``deadline.redis_ms`` (an argument of its own), trying again after a
        failure while ``deadline.give_up`` has not passed. So a failure
        raised from here (one of :data:`DOWN`) means the script did not run
        and never will, even if Redis, frozen with the command in its
        socket, wakes up later: the caller's 503 is the truth. A retry may
        repeat a script whose reply was lost; the scripts given here say so
        (a nonce, an existing record)."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                return await self.run(name, *args)
            except DOWN as exc:
                remaining = deadline.give_up - loop.time()
                if self.closing or remaining <= 0:
                    raise
                if isinstance(exc, RedisTimeoutError) and remaining < self.timeout:
                    # A server that hangs would hold another try past the
                    # deadline. Only the deadline must pass (the script can
                    # no longer run) before the failure is told.
                    await asyncio.sleep(remaining)
                    raise
            await asyncio.sleep(backoff_delay(attempt, base=0.05, cap=0.2))
            attempt += 1

    def too_late(self, what: str) -> Unavailable:
        """The error of a write that reached Redis only past its deadline,
        and so was refused: nothing was written."""
        return Unavailable(
            f"{what}: the shared store (Redis) did not answer within {self.timeout:g} s; "
            "nothing was written"
        )

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
