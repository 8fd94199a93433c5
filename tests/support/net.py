"""Ports for servers the tests start themselves."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on right now (for a server that cannot
    bind port 0 and report what it got, or a port that must refuse)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
