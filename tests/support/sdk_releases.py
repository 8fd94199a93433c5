"""The worker SDK releases the tests run, each with the worker script its
tests use and the settings that make it quick, and one factory starting
workers of a release for a test (see :mod:`tests.support.pypi_sdk` for the
processes themselves).

Both scripts serve one skill, ``echo``, whose behaviour the job's params
choose (``mode``: ``ok``, ``fail`` with a ``code``, ``custom``, ``run``
until cancelled, reporting progress); markers for the test go to stderr as
``@@ <event> <task_id>`` (the SDK logs to stdout). The two differ where the
releases' APIs do (1.0b7's ``worker.task``, 1.0b20's ``worker.skill``).
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from avtomatika import OrchestratorEngine
from tests.support.pypi_sdk import SdkWorker, start

__all__ = ["SDK_1_0B7", "SDK_1_0B20", "Release", "StartWorker", "workers"]

StartWorker = Callable[..., Awaitable[SdkWorker]]
"""``await start(orchestrator, worker_id, **settings)``: a running worker."""


@dataclass(frozen=True, slots=True)
class Release:
    """One SDK release as the tests run it."""

    requirement: str
    script: str
    settings: Mapping[str, str]
    """The SDK's settings every worker gets (a test's own win)."""


SDK_1_0B7 = Release(
    "avtomatika-worker==1.0b7",
    textwrap.dedent(
        """
    import asyncio
    import sys

    from avtomatika_worker import Worker

    worker = Worker(worker_type="sdk-test")


    def mark(event, task_id):
        print(f"@@ {event} {task_id}", file=sys.stderr, flush=True)


    @worker.task("echo")
    async def echo(params, task_id, job_id, send_progress, **_):
        mark("started", task_id)
        mode = params.get("mode", "ok")
        if mode == "ok":
            return {"status": "success", "data": {"echoed": params.get("value")}}
        if mode == "fail":
            return {"status": "failure",
                    "error": {"code": params["code"], "message": "it broke", "details": None}}
        if mode == "custom":
            return {"status": "needs_review", "data": {"score": 3}}
        # "run": report progress until cancelled.
        try:
            while True:
                await send_progress(task_id, job_id, 0.5, "half way")
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            mark("cancelled", task_id)
            raise


    worker.run()
    """
    ),
    {
        "MAX_CONCURRENT_TASKS": "4",
        "HEARTBEAT_INTERVAL": "0.2",
        "WORKER_ENABLE_WEBSOCKETS": "true",
        "WORKER_SHUTDOWN_TIMEOUT": "2",
        "RESULT_RETRY_INITIAL_DELAY": "0.05",
    },
)

SDK_1_0B20 = Release(
    "avtomatika-worker==1.0b20",
    textwrap.dedent(
        """
    import asyncio
    import sys

    from avtomatika_worker import Worker

    worker = Worker(worker_type="sdk20-test")


    def mark(event, task_id):
        print(f"@@ {event} {task_id}", file=sys.stderr, flush=True)


    @worker.skill("echo", description="Echo params back.")
    async def echo(params, task_id, job_id, send_progress, **_):
        mark("started", task_id)
        mode = params.get("mode", "ok")
        if mode == "ok":
            return {"status": "success", "data": {"echoed": params.get("value")}}
        if mode == "fail":
            return {"status": "failure",
                    "error": {"code": params["code"], "message": "it broke"}}
        if mode == "custom":
            return {"status": "needs_review", "data": {"score": 3}}
        # "run": report progress until cancelled.
        try:
            while True:
                await send_progress(task_id, job_id, 0.5, "half way")
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            mark("cancelled", task_id)
            raise


    worker.run()
    """
    ),
    {
        "MAX_CONCURRENT_TASKS": "4",
        "HEARTBEAT_INTERVAL": "0.2",
        "WORKER_HEARTBEAT_COOLDOWN": "0",
        "WORKER_ENABLE_WEBSOCKETS": "false",
        "WORKER_SHUTDOWN_TIMEOUT": "2",
        "RESULT_RETRY_INITIAL_DELAY": "0.05",
        "REGISTRATION_RETRY_INITIAL_DELAY": "0.05",
        "REGISTRATION_RETRY_MAX_DELAY": "0.2",
        "POLL_BACKOFF_INITIAL": "0.05",
        "POLL_BACKOFF_MAX": "0.2",
        "TASK_POLL_ERROR_DELAY": "0.05",
        "IDLE_POLL_DELAY": "0.01",
    },
)


@asynccontextmanager
async def workers(python: Path, directory: Path, release: Release) -> AsyncIterator[StartWorker]:
    """Start workers of ``release`` (installed for ``python``) from a script
    in ``directory``; every one still running is stopped on exit."""
    script = directory / f"worker-{release.requirement.rsplit('=', 1)[-1]}.py"
    script.write_text(release.script)
    started: list[SdkWorker] = []

    async def start_one(orchestrator: OrchestratorEngine, worker_id: str, **env: str) -> SdkWorker:
        settings = {
            **release.settings,
            "WORKER_BLOB_CACHE_DIR": str(directory / "blobs"),
            **env,
        }
        started.append(await start(python, script, orchestrator, worker_id, settings))
        return started[-1]

    try:
        yield start_one
    finally:
        for worker in started:
            await worker.stop()
