"""``python -m avtomatika serve`` as a real process, for tests that need one:
the environment every such test sets, and waiting for the line that names
the ports it bound."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tests.support.tokens import CLIENT_TOKEN, WORKER_TOKEN

_PORTS = re.compile(r"REST on [\d.]+:(\d+), gRPC on [\d.]+:(\d+)")
# The supervisor's line (serve --processes), once every process serves.
_SUPERVISED = re.compile(_PORTS.pattern + r", \d+ processes")


def serve_env(**extra: str) -> dict[str, str]:
    """The environment of a test orchestrator: loopback, ports chosen by the
    OS, the test tokens; ``extra`` adds or overrides settings."""
    env = dict(os.environ)
    env.update(
        API_HOST="127.0.0.1",
        API_PORT="0",
        GRPC_HOST="127.0.0.1",
        GRPC_PORT="0",
        CLIENT_TOKEN=CLIENT_TOKEN,
        GLOBAL_WORKER_TOKEN=WORKER_TOKEN,
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


async def exit_of_serve(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``avtomatika serve *args`` to its end (one that fails to start):
    its exit status and everything it wrote."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "serve", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


@dataclass
class Served:
    """A running ``avtomatika serve``. Its log keeps being read in the
    background, so it never blocks on a full pipe."""

    process: asyncio.subprocess.Process
    rest_port: int
    grpc_port: int
    lines: list[str]
    """What it logged before serving."""
    rest_of_log: asyncio.Task[bytes]

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> str:
        """Signal it, wait for it to exit; everything it logged."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        await self.process.wait()
        return "".join(self.lines) + (await self.rest_of_log).decode()


@asynccontextmanager
async def served(
    *args: str,
    env: dict[str, str],
    command: Sequence[str] = (sys.executable, "-m", "avtomatika"),
    supervised: bool = False,
) -> AsyncIterator[Served]:
    """Start ``avtomatika serve *args`` and yield it once it serves; it is
    stopped (SIGTERM) on exit if the test did not stop it. ``command`` is the
    ``avtomatika`` to run (by default this environment's); ``supervised``:
    it runs ``--processes``, so wait until every process serves."""
    serving = _SUPERVISED if supervised else _PORTS
    process = await asyncio.create_subprocess_exec(
        *command, "serve", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    rest_of_log: asyncio.Task[bytes] | None = None
    try:
        while not (match := serving.search(lines[-1] if lines else "")):
            line = (await process.stdout.readline()).decode()
            assert line, "the orchestrator exited before serving:\n" + "".join(lines)
            lines.append(line)
        rest_of_log = asyncio.create_task(process.stdout.read())
        server = Served(process, int(match.group(1)), int(match.group(2)), lines, rest_of_log)
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
        if rest_of_log is not None:
            await rest_of_log
