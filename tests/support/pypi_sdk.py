"""The public worker SDK ``avtomatika-worker`` from PyPI, unmodified, as a
real process against a test orchestrator: :func:`install` puts one release
into a throwaway virtualenv, :func:`start` runs a worker script there, and
:class:`SdkWorker` follows what its handlers mark on stderr.

Without access to the package index the tests are skipped, except under
``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from avtomatika import OrchestratorEngine
from tests.support.tokens import WORKER_TOKEN
from tests.support.waiting import wait_until

__all__ = ["SdkWorker", "install", "pypi_sdks", "start", "wait_registered"]


def install(where: Path, requirement: str) -> Path:
    """The Python of a new virtualenv in ``where`` with ``requirement``."""
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", requirement],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    if installed.returncode != 0:
        message = f"could not install {requirement} from the package index:\n"
        message += installed.stderr[-2000:]
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}\nCI=true requires it")
        pytest.skip(message)
    return python


@pytest.fixture(scope="session")
def pypi_sdks(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory: the Python of a virtualenv with ``requirement`` installed,
    installed once per session whichever test asks first."""
    installed: dict[str, Path] = {}

    def python(requirement: str) -> Path:
        if requirement not in installed:
            installed[requirement] = install(tmp_path_factory.mktemp("sdk-venv"), requirement)
        return installed[requirement]

    return python


class SdkWorker:
    """A running SDK worker process and what it marked on stderr: lines
    ``@@ <event> <task_id>`` (the SDK itself logs to stdout, kept in
    :attr:`log`)."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._changed.notify_all()

    async def marked(self, event: str, task_id: str) -> None:
        """Wait until the handler marks ``event`` for ``task_id``."""
        expected = f"@@ {event} {task_id}"
        async with self._changed:
            await self._changed.wait_for(lambda: expected in self.lines)

    def dump(self) -> None:
        """Print the worker's log and marks (for a failing test)."""
        print(self.log.read_text()[-5000:], *self.lines[-50:], sep="\n", file=sys.stderr)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader


async def start(
    python: Path,
    script: Path,
    orchestrator: OrchestratorEngine,
    worker_id: str,
    env: dict[str, str],
) -> SdkWorker:
    """Run ``script`` with the SDK's settings in ``env`` (beside the
    orchestrator's URL, the test token and ``worker_id``)."""
    here = script.parent
    log = here / f"{worker_id}.log"
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "ORCHESTRATOR_URL": f"http://127.0.0.1:{orchestrator.rest_port}",
        "WORKER_TOKEN": WORKER_TOKEN,
        "WORKER_ID": worker_id,
        "TASK_FILES_DIR": str(here / "files"),
        "WORKER_SKILLS_DIR": str(here / "no-skills"),
        **env,
    }
    with log.open("wb") as stdout:
        process = await asyncio.create_subprocess_exec(
            str(python),
            str(script),
            env=environment,
            cwd=here,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
        )
    return SdkWorker(process, log)


async def wait_registered(http: Any, worker_id: str) -> dict[str, Any]:
    """The worker as ``GET /api/v1/workers`` lists it, once it does."""

    async def listed() -> dict[str, Any] | None:
        workers = await (await http.get("/api/v1/workers")).json()
        return next((w for w in workers if w["worker_id"] == worker_id), None)

    return await wait_until(listed)
