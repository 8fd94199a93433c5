"""Connecting to Redis, and what its failures mean to callers.

Redis being unreachable is not a bug: start-up fails with a message naming the
URL, and at run time the failure becomes
:class:`~avtomatika.errors.Unavailable` (503 over HTTP, UNAVAILABLE over gRPC)
while background loops back off and retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from avtomatika.errors import ConfigError, Unavailable
from avtomatika.storage.redis.pipelined import Pipelined

__all__ = [
    "DOWN",
    "Redis",
    "check_cancelled",
    "connect",
    "connect_pipelined",
    "outage_backoff",
    "unavailable",
    "until_up",
]

log = logging.getLogger(__name__)

Redis = aioredis.Redis

_T = TypeVar("_T")

DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a call to an unreachable (or restarting) Redis raises."""


def check_cancelled() -> None:
    """Raise :class:`asyncio.CancelledError` if this task was asked to stop.

    redis-py (8.1, seen with scripts) sometimes swallows a CancelledError
    that arrives mid-command and returns normally: the task stays
    "cancelling" but runs on, so a loop around Redis calls would never stop
    (and shutdown would hang). Loops call this after their Redis calls."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


async def connect(url: str) -> Redis:
    """A client for ``url``, checked with a PING; :class:`ConfigError` naming
    the URL when Redis does not answer."""
    # A blocking pool: beyond its connections, callers queue for one (for
    # up to 10 s) instead of failing at once with "Too many connections".
    # One retry on a fresh connection: after a Redis restart every pooled
    # connection is dead and would otherwise fail one request each. A retry
    # may repeat a command whose reply was lost; every script is safe to
    # repeat (commits and claims carry a nonce, creation and the rest are
    # idempotent or recovered by their leases).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=256,
        timeout=10,
        retry=Retry(NoBackoff(), 1),
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
    )
    client: Redis = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
    try:
        await client.ping()
    except DOWN as exc:
        await client.aclose()
        raise ConfigError(f"cannot reach Redis at REDIS_URL {redacted(url)}: {exc}") from None
    return client


async def connect_pipelined(url: str) -> Pipelined:
    """A :class:`Pipelined` client for ``url``, checked with a PING;
    :class:`ConfigError` naming the URL when Redis does not answer."""
    client = Pipelined(url)
    try:
        await client.execute("PING")
    except DOWN as exc:
        await client.close()
        raise ConfigError(f"cannot reach Redis at REDIS_URL {redacted(url)}: {exc}") from None
    return client


@asynccontextmanager
async def unavailable(what: str) -> AsyncIterator[None]:
    """Turn Redis connection failures inside the block into
    :class:`Unavailable` saying ``what`` could not be done."""
    try:
        yield
    except DOWN as exc:
        raise Unavailable(f"{what}: the shared store (Redis) is unreachable ({exc})") from exc


async def outage_backoff(attempt: int, what: str, exc: BaseException) -> None:
    """Sleep before retrying a background loop's Redis call: 0.1 s doubling
    to 5 s. Logged once per outage, when it starts."""
    if attempt == 0:
        log.warning("%s: Redis is unreachable (%s); retrying until it is back", what, exc)
    await asyncio.sleep(min(0.1 * 2**attempt, 5.0))


async def until_up(
    what: str,
    call: Callable[..., Awaitable[_T]],
    *args: Any,
    giving_up: Callable[[], bool] = lambda: False,
) -> _T:
    """``call(*args)`` until Redis answers, backing off while it is down
    (:func:`outage_backoff`): for work that must not be lost to an outage.
    :class:`Unavailable` instead once ``giving_up()`` (its owner closing)."""
    attempt = 0
    while True:
        try:
            result = await call(*args)
        except DOWN as exc:
            check_cancelled()
            if giving_up():
                raise Unavailable(f"{what}: Redis is unreachable and this is closing") from exc
            await outage_backoff(attempt, what, exc)
            attempt += 1
            continue
        if attempt:
            log.info("%s: Redis is back", what)
        return result
