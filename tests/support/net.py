"""The network under the tests: free ports for the servers they start, and
a tap on what this process sends to one of them."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def free_port() -> int:
    """A TCP port nothing listens on right now (for a server that cannot
    bind port 0 and report what it got, or a port that must refuse)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WireTap:
    """What this process's sockets sent to one local port while the tap was
    on (see :func:`wire_tap`)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = bytearray()

    def saw(self, needle: bytes) -> bool:
        """Whether ``needle`` went out to the port."""
        return needle in self.sent


@contextlib.contextmanager
def wire_tap(port: int) -> Iterator[WireTap]:
    """Record the bytes every socket of this process sends to
    ``127.0.0.1:port`` until the block ends.

    For "the request is on the wire" without knowing the client that sends
    it: a test that paused a server waits until the request's bytes have
    left, rather than sleeping and hoping they have. asyncio's transports
    write through ``socket.socket.send`` (and ``sendmsg``), which is where
    the tap sits."""
    tap = WireTap(port)
    send, sendmsg = socket.socket.send, socket.socket.sendmsg

    def to_port(sock: socket.socket) -> bool:
        try:
            peer = sock.getpeername()
        except OSError:
            return False
        return isinstance(peer, tuple) and peer[1] == port

    def tapped_send(sock: socket.socket, data: ReadableBuffer, flags: int = 0) -> int:
        count = send(sock, data, flags)
        if to_port(sock):
            tap.sent += memoryview(data).cast("B")[:count]
        return count

    def tapped_sendmsg(sock: socket.socket, buffers: Iterable[ReadableBuffer], *args: Any) -> int:
        chunks = [bytes(memoryview(b).cast("B")) for b in buffers]
        count = sendmsg(sock, chunks, *args)
        if to_port(sock):
            tap.sent += b"".join(chunks)[:count]
        return count

    socket.socket.send = tapped_send  # type: ignore[method-assign, assignment]
    socket.socket.sendmsg = tapped_sendmsg  # type: ignore[method-assign, assignment]
    try:
        yield tap
    finally:
        socket.socket.send = send  # type: ignore[method-assign]
        socket.socket.sendmsg = sendmsg  # type: ignore[method-assign]
