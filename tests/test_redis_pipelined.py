"""The pipelined Redis connection the store's hot paths share
(:mod:`avtomatika.storage.redis.pipelined`), against a real ``redis-server``:
replies reach their own callers, a cancelled caller leaves the connection in
step, and failures (a restart, a hung server, an error reply, a lost script
cache, a wrong password) surface as redis-py's errors that the store already
handles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from avtomatika.errors import ConfigError
from avtomatika.storage.redis import Pipelined, Script, Subscriber, connect_pipelined
from tests.support.net import free_port
from tests.support.redis import RedisServer

_INCR_BY = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Pipelined]:
    pipelined = Pipelined(redis_url)
    yield pipelined
    await pipelined.close()


async def test_concurrent_commands_each_get_their_own_reply(client: Pipelined) -> None:
    # 2,000 commands issued at once travel in a few writes; every caller
    # must still get the reply to its own command.
    await asyncio.gather(*(client.execute("SET", f"k{n}", n * 7) for n in range(2000)))
    replies = await asyncio.gather(*(client.execute("GET", f"k{n}") for n in range(2000)))
    assert replies == [str(n * 7).encode() for n in range(2000)]
    assert await client.execute("MGET", "k1", "missing", "k2") == [b"7", None, b"14"]
    assert await client.execute("HSET", "h", "f", b"\x00\xff") == 1
    assert await client.execute("HGETALL", "h") == [b"f", b"\x00\xff"]


async def test_an_error_reply_raises_for_its_caller_only(client: Pipelined) -> None:
    await client.execute("SET", "text", "x")
    outcomes = await asyncio.gather(
        client.execute("INCR", "text"),
        client.execute("INCR", "counter"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], ResponseError)
    assert outcomes[1] == 1
    assert await client.execute("GET", "counter") == b"1"  # still in step


async def test_commands_sent_together_answer_together(client: Pipelined) -> None:
    await client.execute("SET", "text", "x")
    assert await client.execute_many(("GET", "text"), ("EXISTS", "none")) == [b"x", 0]
    # An error reply raises; the commands beside it ran all the same.
    with pytest.raises(ResponseError):
        await client.execute_many(("SET", "ran", "1"), ("INCR", "text"))
    assert await client.execute("GET", "ran") == b"1"


async def test_a_cancelled_caller_leaves_the_connection_in_step(client: Pipelined) -> None:
    # Callers cancelled with their commands in flight: their replies still
    # arrive and must be dropped, not handed to the next callers.
    await client.execute("SET", "a", "A")
    await client.execute("SET", "b", "B")
    doomed = [asyncio.ensure_future(client.execute("GET", "a")) for _ in range(50)]
    survivors = [asyncio.ensure_future(client.execute("GET", "b")) for _ in range(50)]
    await asyncio.sleep(0)  # all queued, none answered
    for future in doomed:
        future.cancel()
    assert await asyncio.gather(*survivors) == [b"B"] * 50
    assert all(future.cancelled() for future in doomed)
    assert await client.execute("GET", "a") == b"A"


async def test_scripts_run_by_sha_and_are_reloaded_after_a_script_flush(
    client: Pipelined, redis_url: str
) -> None:
    assert await client.run(_INCR_BY, ["n"], [5]) == 5
    sync = redis.Redis.from_url(redis_url)
    try:
        assert sync.script_exists(_INCR_BY.sha) == [True]
        sync.script_flush()  # as after a Redis restart
    finally:
        sync.close()
    assert await client.run(_INCR_BY, ["n"], [2]) == 7  # NOSCRIPT, then sent whole
    assert await client.run(_INCR_BY, ["n"], [1]) == 8


async def test_a_redis_restart_fails_the_commands_in_flight_then_reconnects() -> None:
    server = RedisServer()
    server.start()
    client = Pipelined(server.url)
    try:
        await client.execute("SET", "k", "v")
        server.stop()
        # The first call finds the connection dead, retries once on a fresh
        # one, and that fails too: Redis is down.
        with pytest.raises(RedisConnectionError):
            await client.execute("GET", "k")
        server.start()
        # Back: the next call reconnects (nothing kept on disk, so k is gone).
        assert await client.execute("GET", "k") is None
        assert await client.execute("SET", "k", "again") == b"OK"
        assert await client.execute("GET", "k") == b"again"
    finally:
        await client.close()
        server.close()


async def test_a_server_that_stops_answering_times_out() -> None:
    server = RedisServer()
    server.start()
    client = Pipelined(server.url, timeout=0.5)
    try:
        await client.execute("PING")
        server.pause()
        try:
            with pytest.raises(RedisTimeoutError):
                await client.execute("PING")
        finally:
            server.resume()
        assert await client.execute("PING") == b"PONG"  # a fresh connection
    finally:
        await client.close()
        server.close()


async def test_password_and_database_from_the_url() -> None:
    server = RedisServer(password="s3cret")
    server.start()
    url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
    client = Pipelined(url)
    wrong = Pipelined(f"redis://:wrong@127.0.0.1:{server.port}/0")
    try:
        await client.execute("SET", "where", "db3")
        sync = redis.Redis(port=server.port, password="s3cret", db=3)
        try:
            assert sync.get("where") == b"db3"
        finally:
            sync.close()
        with pytest.raises(RedisConnectionError, match="refused"):
            await wrong.execute("PING")
    finally:
        await client.close()
        await wrong.close()
        server.close()


async def test_clients_of_one_url_share_one_connection_until_the_last_closes(
    redis_url: str,
) -> None:
    store, history = Pipelined(redis_url), Pipelined(redis_url)
    assert await store.execute("CLIENT", "ID") == await history.execute("CLIENT", "ID")
    await store.close()
    with pytest.raises(RedisConnectionError, match="closed"):
        await store.execute("PING")
    assert await history.execute("PING") == b"PONG"  # its share is still open
    await history.close()
    again = Pipelined(redis_url)  # a new connection once the last closed
    try:
        assert await again.execute("PING") == b"PONG"
    finally:
        await again.close()


async def test_tls_as_the_rediss_url_asks_for_the_commands_and_the_subscriber() -> None:
    server = RedisServer(tls=True)
    server.start()
    base = f"rediss://127.0.0.1:{server.port}/0"
    verified = Pipelined(server.url)  # the server's certificate as the CA
    unverified = Pipelined(f"{base}?ssl_cert_reqs=none")
    untrusted = Pipelined(base)  # a self-signed certificate, not trusted
    subscriber = Subscriber(server.url)
    received: asyncio.Queue[bytes] = asyncio.Queue()
    subscriber.on("news", received.put_nowait)
    try:
        assert await verified.execute("PING") == b"PONG"
        assert await unverified.execute("PING") == b"PONG"
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusted.execute("PING")
        mistyped = Pipelined(f"{base}?ssl_cert_reqs=sometimes")
        try:
            with pytest.raises(RedisConnectionError, match="ssl_cert_reqs must be none"):
                await mistyped.execute("PING")
        finally:
            await mistyped.close()
        await subscriber.start()
        assert await verified.execute("PUBLISH", "news", b"over TLS") == 1
        assert await asyncio.wait_for(received.get(), 5) == b"over TLS"
    finally:
        await subscriber.stop()
        for client in (verified, unverified, untrusted):
            await client.close()
        server.close()


async def test_a_refused_subscription_is_retried_and_does_not_hold_up_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A user whose ACL forbids SUBSCRIBE: Redis answers with an error.
    acl = ["--user", "mute", "on", ">pw", "~*", "+@all", "-subscribe", "allchannels"]
    server = RedisServer(options=acl)
    server.start()
    subscriber = Subscriber(f"redis://mute:pw@127.0.0.1:{server.port}/0")
    subscriber.on("news", lambda data: None)
    try:
        await asyncio.wait_for(subscriber.start(), 5)
        assert "Redis refused the subscription" in caplog.text
    finally:
        await subscriber.stop()
        server.close()


async def test_start_up_fails_with_the_url_when_redis_does_not_answer() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigError, match=url):
        await connect_pipelined(url, timeout=5)


async def test_a_closed_client_refuses_commands(redis_url: str) -> None:
    client = await connect_pipelined(redis_url, timeout=5)
    await client.close()
    with pytest.raises(RedisConnectionError, match="closed"):
        await client.execute("PING")
