"""One connection to Redis that every caller's commands share, pipelined.

The hot paths of the store (each job takes some twenty round trips) spent
more time in redis-py's per-command machinery than in Redis: a connection
taken from the pool and given back, a timeout context around each read, a
health check, one ``write`` system call per command. Here a command costs its
packing (hiredis, in C) and one future:

- commands issued during one turn of the event loop are written together,
  in one system call, at the end of that turn;
- Redis answers in order, so replies are matched to callers first in, first
  out as they arrive (hiredis parses them, in C);
- a caller cancelled while its command is in flight leaves the connection in
  step: its reply is read and dropped.

Only commands with one reply each belong here: no pub/sub, no blocking
commands, no MULTI (a transaction is a Lua script in this project anyway).

Failures keep redis-py's meaning, so callers catch them as before: a lost
connection fails every command in flight with
:class:`redis.exceptions.ConnectionError`, and one that gets no reply for
``timeout`` seconds (a hung server) with :class:`redis.exceptions.TimeoutError`.
A command whose connection was lost is retried once on a fresh connection,
as the pool did: after a Redis restart the connection is dead and would fail
one request for nothing. A timed-out one is not: a hung server would only
make the caller wait a second timeout. A retry may repeat a command whose
reply was lost; the store's scripts are written to be repeated (see
:mod:`.scripts`).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Pipelined", "RespConnection", "Script", "open_connection", "pack"]


# hiredis' stub types the command as a one-element tuple; it takes any length.
pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


class Script:
    """A Lua script run by its SHA1 (``EVALSHA``), sent whole only when the
    server does not have it yet (after a restart or ``SCRIPT FLUSH``)."""

    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()


class Pipelined:
    """A Redis client for one-reply commands over a pipelined connection
    (see the module's docstring). Connects on first use.

    The clients of one event loop for one URL share one connection, so the
    commands of the store, the history and the relay issued in one loop turn
    travel in one write; closing a client gives up its share, and the
    connection closes with the last."""

    def __init__(self, url: str, *, timeout: float = 10.0, connect_timeout: float = 5.0) -> None:
        self._link = _Link.share(url, timeout, connect_timeout)
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply (bytes, int, list or None). An error
        reply raises :class:`~redis.exceptions.ResponseError`."""
        try:
            return await self._open().once(args)
        except RedisConnectionError:
            return await self._open().once(args)  # a fresh connection, once

    async def execute_many(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` together; their replies, in order. An error
        reply to any raises (the others ran)."""
        try:
            return await self._open().many(commands)
        except RedisConnectionError:
            return await self._open().many(commands)

    async def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` with ``keys`` and ``args``."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # EVAL runs it and caches it for the EVALSHAs that follow.
            return await self.execute("EVAL", script.body, len(keys), *keys, *args)

    async def close(self) -> None:
        """Give up this client's share of the connection. Idempotent."""
        if not self._closed:
            self._closed = True
            self._link.release()

    def _open(self) -> _Link:
        if self._closed:
            raise RedisConnectionError("the Redis client was closed")
        return self._link


_LinkKey = tuple[str, float, float]
_links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_LinkKey, _Link]] = (
    weakref.WeakKeyDictionary()
)


class _Link:
    """The connection the clients of one loop and URL share: (re)made on
    demand, once for every caller waiting on it."""

    def __init__(self, key: _LinkKey) -> None:
        self._key = key
        self._options: dict[str, Any] = dict(parse_url(key[0]))
        self._protocol: RespConnection | None = None
        self._connecting: asyncio.Task[RespConnection] | None = None
        self._users = 0

    @classmethod
    def share(cls, url: str, timeout: float, connect_timeout: float) -> _Link:
        shared = _links.setdefault(asyncio.get_running_loop(), {})
        key = (url, timeout, connect_timeout)
        link = shared.get(key)
        if link is None:
            link = shared[key] = cls(key)
        link._users += 1
        return link

    def release(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        shared = _links.get(asyncio.get_running_loop(), {})
        if shared.get(self._key) is self:
            del shared[self._key]
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("the Redis client was closed"))
            self._protocol = None

    async def once(self, args: tuple[Any, ...]) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connected()
        reply = await protocol.send(pack(args))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def many(self, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connected()
        if not commands:
            return []
        futures = [protocol.send(pack(args)) for args in commands]
        # Replies resolve in order, and a lost connection fails them all at
        # once: when the last is done, so is every other (one wake-up, where
        # gather would take one per command).
        try:
            await futures[-1]
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception:
            pass  # raised below, with the others retrieved
        errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error
        replies = [future.result() for future in futures]
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def _connected(self) -> RespConnection:
        if self._users <= 0:
            raise RedisConnectionError("the Redis client was closed")
        if self._connecting is None:
            _, timeout, connect_timeout = self._key
            self._connecting = asyncio.ensure_future(
                open_connection(self._options, timeout=timeout, connect_timeout=connect_timeout)
            )
        connecting = self._connecting
        try:
            # Shielded: one caller cancelled must not cancel the others' connect.
            protocol = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            if connecting.cancelled() and not _being_cancelled():
                # The last client closed while this one waited for the connect.
                raise RedisConnectionError("the Redis client was closed") from None
            raise
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        if self._users <= 0:  # closed meanwhile: the connection is nobody's
            protocol.fail(RedisConnectionError("the Redis client was closed"))
            raise RedisConnectionError("the Redis client was closed")
        self._protocol = protocol
        return protocol


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def open_connection(
    options: dict[str, Any], *, timeout: float = 10.0, connect_timeout: float = 5.0
) -> RespConnection:
    """A connection to the Redis that ``options`` (from redis-py's
    ``parse_url``) name, authenticated and on its database.
    :class:`~redis.exceptions.ConnectionError` if Redis cannot be reached
    or refuses it."""
    loop = asyncio.get_running_loop()

    def factory() -> RespConnection:
        return RespConnection(loop, timeout)

    try:
        async with asyncio.timeout(connect_timeout):
            if "path" in options:
                _, connection = await loop.create_unix_connection(factory, options["path"])
            else:
                tls = _tls_context(options) if _uses_tls(options) else None
                _, connection = await loop.create_connection(
                    factory, options.get("host", "localhost"), int(options.get("port", 6379)),
                    ssl=tls,
                )  # fmt: skip
    except (OSError, TimeoutError) as exc:
        raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
    try:
        await _handshake(connection, options)
    except BaseException:
        connection.fail(RedisConnectionError("the connection to Redis was abandoned"))
        raise
    return connection


async def _handshake(connection: RespConnection, options: dict[str, Any]) -> None:
    handshake = []
    if options.get("password"):
        # AUTH with a user name only where there is one (Redis 6 ACLs); the
        # one-argument form works on every version.
        auth = [options["username"]] if options.get("username") else []
        auth.append(options["password"])
        handshake.append(connection.send(pack(("AUTH", *auth))))
    if int(options.get("db") or 0):
        handshake.append(connection.send(pack(("SELECT", options["db"]))))
    for reply in await asyncio.gather(*handshake):
        if isinstance(reply, ResponseError):
            raise RedisConnectionError(f"Redis refused the connection: {reply}")


def _uses_tls(options: dict[str, Any]) -> bool:
    connection_class = options.get("connection_class")
    return connection_class is not None and connection_class.__name__ == "SSLConnection"


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """TLS as a ``rediss://`` URL's query asks, as redis-py reads it:
    ``ssl_cert_reqs`` (none, optional, required), ``ssl_ca_certs``,
    ``ssl_certfile`` and ``ssl_keyfile``, ``ssl_check_hostname``."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    check_hostname = options.get("ssl_check_hostname")
    if check_hostname is not None:
        context.check_hostname = str(check_hostname).lower() in ("1", "true", "yes")
    raw = options.get("ssl_cert_reqs", "required")
    modes = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    mode = raw if isinstance(raw, ssl.VerifyMode) else modes.get(str(raw).lower())
    if mode is None:
        raise RedisConnectionError(f"ssl_cert_reqs must be none, optional or required: {raw!r}")
    if mode == ssl.CERT_NONE:
        context.check_hostname = False
    context.verify_mode = mode
    return context


class RespConnection(asyncio.Protocol):
    """One connection: writes batched per loop turn, replies matched to
    their commands in order, a watchdog for a server that stops answering.

    Once :attr:`on_push` is set (a subscribed connection), every reply goes
    to it instead: pub/sub messages come unasked."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        self._flush_due = False
        # The last time a reply came, or the queue of waiting commands began.
        self._heard_at = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self.lost = False
        self.on_push: Callable[[Any], None] | None = None
        self.closed: asyncio.Future[Exception] = loop.create_future()
        """Resolves, with the reason, when the connection is gone."""

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            # Finds a peer that vanished while the connection sat idle (a
            # subscriber's always does).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self._heard_at = self._loop.time()
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        try:
            while (reply := reader.gets()) is not False:
                if self.on_push is not None:
                    self.on_push(reply)
                    continue
                future = waiting.popleft()
                if not future.done():  # its caller may have been cancelled
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            # Garbage, or a reply nobody asked for: nothing after it can be
            # matched to its command any more.
            self.fail(RedisConnectionError(f"Redis connection out of step: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self.fail(RedisConnectionError(f"connection to Redis lost{reason}"))

    # -- sending --

    def write(self, packed: bytes) -> None:
        """Send packed commands now, expecting no reply in order (SUBSCRIBE)."""
        if not self.lost and self._transport is not None:
            self._transport.write(packed)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue one packed command; the future of its reply."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.lost:
            future.set_exception(RedisConnectionError("connection to Redis lost"))
            return future
        if not self._waiting:
            self._heard_at = self._loop.time()
        self._waiting.append(future)
        self._out.append(packed)
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_due = False
        if self.lost or self._transport is None:
            return
        out, self._out = self._out, []
        self._transport.write(b"".join(out))
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._timeout / 4, self._watch)

    def _watch(self) -> None:
        """Every quarter of the timeout while commands wait: a server that
        sent nothing for the whole timeout is taken for hung."""
        self._watchdog = None
        if self.lost or not self._waiting:
            return
        if self._loop.time() - self._heard_at > self._timeout:
            self.fail(RedisTimeoutError(f"no reply from Redis for {self._timeout:g} s"))
            return
        self._watchdog = self._loop.call_later(self._timeout / 4, self._watch)

    def fail(self, error: Exception) -> None:
        """Drop the connection; every command waiting gets ``error``."""
        self.lost = True
        if not self.closed.done():
            self.closed.set_result(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None:
            self._transport.abort()
        waiting, self._waiting = self._waiting, deque()
        self._out = []
        for future in waiting:
            if not future.done():
                future.set_exception(error)
