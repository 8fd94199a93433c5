"""Connecting to Redis: a client that is known to answer, or a
:class:`~avtomatika.errors.ConfigError` naming the URL (start-up stops)."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from avtomatika.errors import ConfigError
from avtomatika.storage.redis.outages import DOWN
from avtomatika.storage.redis.pipelined import Pipelined

__all__ = ["Redis", "connect", "connect_pipelined", "redacted"]

Redis = aioredis.Redis


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


async def connect(url: str, *, timeout: float) -> Redis:
    """A client for ``url``, checked with a PING; :class:`ConfigError` naming
    the URL when Redis does not answer. Connecting, waiting for a free
    connection and waiting for a reply each give up after ``timeout``
    seconds (``REDIS_COMMAND_TIMEOUT_SECONDS``) with a
    :class:`~redis.exceptions.TimeoutError`, one of :data:`DOWN`: no call
    waits out a Redis that hangs. No caller uses a blocking command (BLPOP
    and the like) on this client; one that did would need a block time
    shorter than ``timeout``, or the socket timeout would cut it off."""
    # A blocking pool: beyond its connections, callers queue for one
    # instead of failing at once with "Too many connections".
    # One retry on a fresh connection: after a Redis restart every pooled
    # connection is dead and would otherwise fail one request each. A retry
    # may repeat a command whose reply was lost; every script is safe to
    # repeat (commits and claims carry a nonce, creation and the rest are
    # idempotent or recovered by their leases). Only a lost connection is
    # retried: after a timeout the server hangs, and a retry would double
    # the wait.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=256,
        timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
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


async def connect_pipelined(url: str, *, timeout: float) -> Pipelined:
    """A :class:`Pipelined` client for ``url`` whose commands give up after
    ``timeout`` seconds (see :func:`connect`), checked with a PING;
    :class:`ConfigError` naming the URL when Redis does not answer."""
    client = Pipelined(url, timeout=timeout, connect_timeout=timeout)
    try:
        await client.execute("PING")
    except DOWN as exc:
        await client.close()
        raise ConfigError(f"cannot reach Redis at REDIS_URL {redacted(url)}: {exc}") from None
    return client
