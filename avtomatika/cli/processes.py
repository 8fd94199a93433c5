"""``avtomatika serve --processes N``: N server processes of one instance on
this host, sharing its REST and gRPC ports, so every core works.

One process serves from one event loop, which one core bounds. With Redis
every instance keeps its state there, so N processes are N instances on the
same Redis (``INSTANCE_ID`` ``<id>-1`` ... ``<id>-N``), as a cluster of hosts
is; each binds both ports with SO_REUSEPORT (``REUSE_PORT``) and the kernel
spreads new connections between them.

The parent supervises and never serves:

- it binds both ports first (SO_REUSEPORT, never listening): port 0 becomes
  a number the children are given, and the ports stay reserved while a child
  restarts;
- it starts the children with its own settings, through the environment,
  and waits until each serves (it writes a byte to a pipe, ``READY_FD``);
- SIGTERM and SIGINT are passed on to every child, which stops gracefully;
- a child that exits on its own is restarted after a backoff; one that
  keeps crashing soon after it starts ends the whole service (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

from avtomatika.backoff import backoff_delay
from avtomatika.config import Settings

__all__ = ["READY_FD", "ready_signal", "supervise"]

log = logging.getLogger("avtomatika.processes")

READY_FD = "AVTOMATIKA_READY_FD"
"""The environment variable naming the pipe a child writes to once it serves."""

# A child that ran this long before exiting was not crash-looping: its next
# crash counts from one again.
_STABLE_SECONDS = 60.0
# Crashes in a row (each sooner than _STABLE_SECONDS after its start) after
# which the supervisor gives up rather than restart forever.
_MAX_CRASHES = 5
_RESTART_BASE_SECONDS = 0.5
_RESTART_CAP_SECONDS = 10.0


def ready_signal(environ: dict[str, str]) -> Callable[[], None] | None:
    """In a child of :func:`supervise`: what tells the parent it serves
    (the variable is taken out of ``environ``); None elsewhere."""
    raw = environ.pop(READY_FD, None)
    if raw is None:
        return None
    fd = int(raw)

    def ready() -> None:
        with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            os.write(fd, b"1")
            os.close(fd)

    return ready


def supervise(settings: Settings, environ: Mapping[str, str], overrides: Mapping[str, Any]) -> int:
    """Run ``settings.processes`` children until SIGTERM or SIGINT; the exit
    status. ``environ`` and ``overrides`` (the flags) are the settings'
    sources, handed on to every child."""
    sockets = [_reserve(settings.api_host, settings.api_port)]
    sockets.append(_reserve(settings.grpc_host, settings.grpc_port))
    try:
        env = dict(environ)
        env.update({k.upper(): _env_value(v) for k, v in overrides.items() if v is not None})
        env.update(
            API_PORT=str(sockets[0].getsockname()[1]),
            GRPC_PORT=str(sockets[1].getsockname()[1]),
            PROCESSES="1",
            REUSE_PORT="true",
        )
        instance = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        return asyncio.run(_Supervisor(settings, env, instance).run())
    finally:
        for sock in sockets:
            sock.close()


def _reserve(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT, never listening:
    it receives no connection, and holds the port for the children."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Supervisor:
    def __init__(self, settings: Settings, env: dict[str, str], instance: str) -> None:
        self._settings = settings
        self._env = env
        self._instance = instance
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._gave_up = False
        self._signalled = False

    def _name(self, number: int) -> str:
        return f"{self._instance}-{number}"

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        numbers = range(1, self._settings.processes + 1)
        first = await asyncio.gather(*(self._start(n) for n in numbers))
        if self._stopping.is_set() or any(code is not None for code in first):
            # Told to stop while starting, or a process could not start: the
            # status is that of the first one that failed (0 if none did).
            self._stop(signal.SIGTERM)
            await asyncio.gather(*(child.wait() for child in self._children.values()))
            # A process a signal ended while it started has not failed.
            failed = [code for code in first if code and (code > 0 or not self._signalled)]
            if failed:
                return failed[0] if failed[0] > 0 else 1  # < 0: killed by a signal
            return 0 if self._signalled else 1
        settings = self._settings
        log.info(
            "avtomatika serving: REST on %s:%s, gRPC on %s:%s, %d processes (instances %s to %s)",
            settings.api_host,
            self._env["API_PORT"],
            settings.grpc_host,
            self._env["GRPC_PORT"],
            settings.processes,
            self._name(1),
            self._name(settings.processes),
        )
        await asyncio.gather(*(self._keep(n) for n in numbers))
        return 1 if self._gave_up else 0

    async def _start(self, number: int) -> int | None:
        """Start child ``number`` and wait until it serves: None, or the
        status it exited with before serving."""
        read_end, write_end = os.pipe()
        env = {**self._env, "INSTANCE_ID": self._name(number), READY_FD: str(write_end)}
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "avtomatika", "serve", env=env, pass_fds=(write_end,)
            )
        finally:
            os.close(write_end)
        self._children[number] = child
        log.info("process %d started: instance %s, pid %d", number, self._name(number), child.pid)
        if self._stopping.is_set():
            child.send_signal(signal.SIGTERM)
        try:
            # b"" when the child exited (or closed the pipe) without serving.
            served = await asyncio.to_thread(os.read, read_end, 1)
        finally:
            os.close(read_end)
        if served:
            return None
        return await child.wait()

    async def _keep(self, number: int) -> None:
        """Restart child ``number`` whenever it exits on its own."""
        loop = asyncio.get_running_loop()
        crashes = 0
        while True:
            child = self._children[number]
            began = loop.time()
            code = await child.wait()
            if self._stopping.is_set():
                log.info("process %d (instance %s) stopped", number, self._name(number))
                return
            crashes = 1 if loop.time() - began >= _STABLE_SECONDS else crashes + 1
            if crashes > _MAX_CRASHES:
                log.error(
                    "process %d (instance %s) exited %d times in a row soon after starting "
                    "(last status %d); stopping the service",
                    number,
                    self._name(number),
                    crashes,
                    code,
                )
                self._gave_up = True
                self._stop(signal.SIGTERM)
                return
            delay = backoff_delay(crashes - 1, base=_RESTART_BASE_SECONDS, cap=_RESTART_CAP_SECONDS)
            log.warning(
                "process %d (instance %s, pid %d) exited with status %d; restarting in %.1f s",
                number,
                self._name(number),
                child.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            # One that exits before serving is seen by the next wait at once.
            await self._start(number)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signalled = True
        self._stop(sig)

    def _stop(self, sig: signal.Signals) -> None:
        """Pass ``sig`` on to every running child (they stop gracefully)."""
        if not self._stopping.is_set():
            log.info("stopping %d processes", len(self._children))
        self._stopping.set()
        for child in self._children.values():
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(sig)
