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
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from tests.support.net import free_port

__all__ = ["RedisServer", "raw", "redis_server", "redis_url"]

_HOW_TO_ENABLE = (
    "no redis-server binary on PATH; install it (e.g. `apt-get install redis-server`) "
    "to run the Redis tests"
)


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`start` again keep
    its port, so clients reconnect to the same address after an outage."""

    def __init__(
        self,
        *,
        persistent: bool = False,
        password: str = "",
        tls: bool = False,
        options: Sequence[str] = (),
    ) -> None:
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
        self._tls = tls
        self._options = list(options)  # more redis-server arguments
        if tls:
            self._make_certificate()

    @property
    def url(self) -> str:
        auth = f":{self._password}@" if self._password else ""
        if self._tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.certificate}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def certificate(self) -> str:
        """The server's self-signed certificate (PEM), with ``tls``."""
        return str(Path(self._dir) / "cert.pem")

    def _make_certificate(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            message = "no openssl binary on PATH; install it to run the Redis TLS tests"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{message}; CI=true requires it")
            pytest.skip(message)
        subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-keyout", str(Path(self._dir) / "key.pem"), "-out", self.certificate,
                "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self._tls:
            listen = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", self.certificate,
                "--tls-key-file", str(Path(self._dir) / "key.pem"),
                "--tls-ca-cert-file", self.certificate,
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            listen = ["--port", str(self.port)]
        args = [
            self._binary,
            *listen,
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
            *self._options,
        ]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(
            port=self.port,
            password=self._password or None,
            socket_connect_timeout=0.2,
            ssl=self._tls,
            ssl_ca_certs=self.certificate if self._tls else None,
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
        """Thaw a frozen server (SIGCONT); nothing for a stopped one."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def calls(self, command: str) -> int:
        """How many times the server has run ``command`` (e.g. ``publish``)."""
        client = redis.Redis(port=self.port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

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


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the test's (emptied) Redis, to look at the keys."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
