"""A real ``redis-server`` on a free port, started by the tests themselves.

The session shares one server (:func:`redis_server`); each test that uses
:func:`redis_url` gets it emptied first. Tests that stop and restart Redis
mid-run start their own with :class:`RedisServer`. Nothing is written to disk
(no RDB, no AOF) unless a test asks for a ``persistent`` server, which keeps
its data across a stop and a start, as a production Redis with an AOF does.

Without a ``redis-server`` binary the tests that need one are skipped, saying
how to enable them; under ``CI=true`` they fail instead (CI installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

__all__ = ["RedisServer", "redis_server", "redis_url"]

_HOW_TO_ENABLE = (
    "no redis-server binary on PATH; install it (e.g. `apt-get install redis-server`) "
    "to run the Redis tests"
)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`start` again keep
    its port, so clients reconnect to the same address after an outage."""

    def __init__(self, *, persistent: bool = False, password: str = "") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{_HOW_TO_ENABLE}; CI=true requires Redis")
            pytest.skip(_HOW_TO_ENABLE)
        self._binary = binary
        self.port = free_port()
        self._dir = tempfile.mkdtemp(prefix="avtomatika-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        self._persistent = persistent
        self._password = password

    @property
    def url(self) -> str:
        auth = f":{self._password}@" if self._password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        args = [
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self._persistent else "no",
            "--appendfsync",
            "always",
            "--dir",
            self._dir,
            "--logfile",
            str(Path(self._dir) / "redis.log"),
            *(["--requirepass", self._password] if self._password else []),
        ]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(
            port=self.port, password=self._password or None, socket_connect_timeout=0.2
        )
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server on port {self.port} did not start; "
                            f"see {self._dir}/redis.log"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM: a persistent one flushes its AOF)."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait(10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connected, but it answers nothing."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.flushall()
        finally:
            client.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis server."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's Redis server, emptied for this test."""
    redis_server.flush()
    return redis_server.url
