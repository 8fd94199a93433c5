"""Connection hygiene for the HTTP server: what aiohttp does not bound itself.

- **Header timeout** (``HEADER_TIMEOUT_SECONDS``): a connection that has not
  sent a whole request line and headers that long after it opened (or after
  the first byte of its next request) gets a 408 and is closed, so clients
  that dribble their headers (slowloris) cannot hold descriptors.
- **Idle keep-alive** (``KEEPALIVE_TIMEOUT_SECONDS``): aiohttp's own
  ``keepalive_timeout``.
- **Connection caps** (``MAX_CONNECTIONS``, ``MAX_CONNECTIONS_PER_ADDRESS``):
  a connection past either cap is answered a fixed 503 JSON and closed as
  soon as it is accepted. Answering costs one small write into an empty
  socket buffer and frees the descriptor as fast as a bare close, while a
  legitimate client learns that it may retry (``Retry-After``) instead of
  seeing a reset that looks like a crash.
- **Parser errors** (oversized header, malformed request line or method,
  over-long URL) are answered ``{"error": ...}`` like every other error, with
  414 / 431 / 400, and never echo what was sent. aiohttp answers them from
  :meth:`RequestHandler.handle_error`, which no middleware sees, hence the
  subclass.

aiohttp builds one :class:`RequestHandler` per connection from the
:class:`~aiohttp.web.Server` its runner makes; :class:`GuardedAppRunner`
makes a :class:`GuardedServer` instead, whose handlers do the above. Every
check is per connection or per parsed request, never per byte.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from avtomatika.config import Settings
from avtomatika.rest.middleware import json_error

__all__ = [
    "MAX_HEADER_FIELD_BYTES",
    "MAX_REQUEST_LINE_BYTES",
    "GuardedAppRunner",
    "GuardedServer",
]

log = logging.getLogger(__name__)

MAX_REQUEST_LINE_BYTES = 8190
"""The longest request target (URL) accepted; longer is 414 (aiohttp's default)."""
MAX_HEADER_FIELD_BYTES = 16384
"""The longest header (name and value) accepted; longer is 431. It differs
from :data:`MAX_REQUEST_LINE_BYTES` on purpose: aiohttp's ``LineTooLong``
tells which limit it hit only by the limit it carries."""
MAX_HEADERS = 128
"""The most header fields in one request (aiohttp's default); more is 431."""


def _raw_response(status: str, message: str, *headers: str) -> bytes:
    """A complete response written straight to the transport, for the
    moments when no request exists to answer through aiohttp."""
    body = b'{"error": "' + message.encode() + b'"}'
    head = [
        f"HTTP/1.1 {status}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
        "Connection: close",
    ]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


# Why a connection was closed before a request was served (metric labels).
_SERVER_CAP = "server_cap"
_ADDRESS_CAP = "address_cap"
_HEADER_TIMEOUT = "header_timeout"

_SERVER_FULL = _raw_response(
    "503 Service Unavailable", "too many open connections", "Retry-After: 1"
)
_ADDRESS_FULL = _raw_response(
    "503 Service Unavailable", "too many open connections from this address", "Retry-After: 1"
)
_HEADERS_LATE = _raw_response("408 Request Timeout", "request headers not received in time")


def _parser_error(exc: BaseException | None) -> tuple[int, str]:
    """Status and message for what aiohttp's parser refused; the message
    never contains the request's bytes (aiohttp's does)."""
    if isinstance(exc, LineTooLong):
        if exc.args[1] == MAX_REQUEST_LINE_BYTES:
            return 414, f"the request target is longer than {MAX_REQUEST_LINE_BYTES} bytes"
        return 431, f"a request header is longer than {MAX_HEADER_FIELD_BYTES} bytes"
    if isinstance(exc, BadHttpMethod):
        return 400, "malformed request method"
    if isinstance(exc, BadStatusLine):
        return 400, "malformed request line"
    if isinstance(exc, InvalidURLError):
        return 400, "malformed request target"
    if isinstance(exc, BadHttpMessage) and exc.message.startswith("Too many headers"):
        return 431, f"more than {MAX_HEADERS} request headers"
    return 400, "malformed request"


class GuardedServer(web.Server):
    """aiohttp's low-level server, counting open connections (in total and
    by client address) and making :class:`_GuardedHandler` protocols."""

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = settings.header_timeout_seconds
        self.max_connections = settings.connection_cap
        self.max_per_address = settings.max_connections_per_address
        self.open_connections = 0
        self.closed_early: collections.Counter[str] = collections.Counter()
        """Connections closed before a request was served, by reason (a running total)."""
        self._by_address: dict[str, int] = {}

    def admit(self, address: str | None) -> bytes | None:
        """Count a new connection in, or return the response refusing it."""
        if self.open_connections >= self.max_connections:
            self.closed_early[_SERVER_CAP] += 1
            return _SERVER_FULL
        if self.max_per_address and address is not None:
            count = self._by_address.get(address, 0)
            if count >= self.max_per_address:
                self.closed_early[_ADDRESS_CAP] += 1
                return _ADDRESS_FULL
            self._by_address[address] = count + 1
        self.open_connections += 1
        return None

    def release(self, address: str | None) -> None:
        """Count an admitted connection out."""
        self.open_connections -= 1
        if self.max_per_address and address is not None:
            count = self._by_address.pop(address) - 1
            if count:
                self._by_address[address] = count

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)


class _GuardedHandler(RequestHandler):
    """One connection: admitted against the caps, held to the header
    timeout, answering parser errors as JSON."""

    __slots__ = ("_address", "_admitted", "_guard", "_header_deadline")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._address: str | None = None
        self._admitted = False
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        # (host, port) for IPv4, a 4-tuple for IPv6; a Unix socket has no address.
        self._address = str(peer[0]) if isinstance(peer, tuple) else None
        refusal = self._guard.admit(self._address)
        if refusal is not None:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(refusal)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._await_headers()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return  # refused at once: nothing of aiohttp's was set up
        self._admitted = False
        self._guard.release(self._address)
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:
            # A whole request line and headers arrived (or a parser error,
            # which is answered and closes): the deadline has been met.
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
        elif self._header_deadline is None and self._waiter is not None and data:
            # The first bytes of the next request on a kept-alive connection.
            self._await_headers()

    def _await_headers(self) -> None:
        self._header_deadline = self._loop.call_later(
            self._guard.header_timeout, self._headers_late
        )

    def _headers_late(self) -> None:
        self._header_deadline = None
        waiter = self._waiter
        # Still waiting for a whole request (not running a handler).
        if waiter is not None and not waiter.done() and self.transport is not None:
            self._guard.closed_early[_HEADER_TIMEOUT] += 1
            self.transport.write(_HEADERS_LATE)
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own check: once a response has started, no other can be sent.
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already; cannot send the error")
        if status == 400:
            status, text = _parser_error(exc)
            # One line, no traceback, never the bytes: garbage is what the
            # internet sends to any open port.
            log.info("refused a malformed request from %s: %d %s", request.remote, status, text)
        elif status == 504:
            text = "the request timed out"
        else:
            log.error("unhandled error serving %s", request.remote, exc_info=exc)
            text = "internal error"
        response = json_error(status, text)
        response.force_close()
        return response


class GuardedAppRunner(web.AppRunner):
    """An :class:`~aiohttp.web.AppRunner` whose server is a
    :class:`GuardedServer`, with the parser limits and keep-alive timeout of
    ``settings``."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            app,
            keepalive_timeout=settings.keepalive_timeout_seconds,
            max_line_size=MAX_REQUEST_LINE_BYTES,
            max_field_size=MAX_HEADER_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            **kwargs,
        )
        self._settings = settings

    @property
    def http_server(self) -> GuardedServer:
        """The server, once :meth:`setup` has made it."""
        server = self.server
        assert isinstance(server, GuardedServer), "GuardedAppRunner.setup() has not run"
        return server

    async def _make_server(self) -> web.Server:
        # The app's start-up runs here; then the same handler and request
        # factory aiohttp would serve with, behind the guard.
        made = await super()._make_server()
        return GuardedServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            settings=self._settings,
            **self._kwargs,
        )
