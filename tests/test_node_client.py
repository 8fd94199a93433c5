"""The TypeScript client of ``examples/node-client`` against a live
orchestrator: the stubs generated into ``clients/typescript`` speak gRPC to our
server, from creating a job to following, cancelling and listing jobs.

``npm ci`` and ``npm run build`` (which copies the stubs and runs tsc) run once
per session in a temporary copy laid out as in the repository. Without
``node``/``npm`` the test is skipped, except under ``CI=true``, where it
fails: CI must run it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from avtomatika.worker import TaskContext
from tests.support import CLIENT_TOKEN, get_job
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.sdk import serving

pytestmark = [pytest.mark.slow, pytest.mark.both_stores]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = Path("examples", "node-client")
STUBS = Path("clients", "typescript", "src", "gen")


@pytest.fixture(scope="session")
def node_client_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built copy of the example; the stubs beside it where the build looks."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed: the Node.js client cannot run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("node-client")
    shutil.copytree(ROOT / STUBS, root / STUBS)
    directory = root / EXAMPLE
    shutil.copytree(
        ROOT / EXAMPLE, directory, ignore=shutil.ignore_patterns("node_modules", "dist", "gen")
    )
    for command in (["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                    ["npm", "run", "--silent", "build"]):  # fmt: skip
        subprocess.run(command, cwd=directory, check=True, timeout=50)
    return directory


async def echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
    """The echo skill; a task with ``sleep_ms`` runs until it is cancelled,
    which is all the client's second job needs."""
    if "sleep_ms" in params:
        await asyncio.Event().wait()
    return {"echoed": params}


async def test_the_node_client_creates_follows_cancels_and_lists_jobs(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, node_client_dir: Path
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    async with serving(orchestrator, {"echo": echo}):
        process = await asyncio.create_subprocess_exec(
            "node", "dist/client.js", "--address", f"127.0.0.1:{orchestrator.grpc_port}",
            cwd=node_client_dir,
            env={**os.environ, "AVTOMATIKA_CLIENT_TOKEN": CLIENT_TOKEN},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
    output = out.decode()
    assert process.returncode == 0, output + err.decode()

    finished_id, cancelled_id = re.findall(r"^created (\S+)$", output, re.MULTILINE)
    assert f"finished {finished_id}\n" in output
    # "sent" when the worker had the task already, "accepted" while it was queued.
    cancel = rf"^cancel {cancelled_id}: cancellation_request_(sent|accepted)$"
    assert re.search(cancel, output, re.MULTILINE)
    assert f"cancelled {cancelled_id}\n" in output
    listed = re.findall(r"^  (\S+) (\S+) blueprint=echo ", output, re.MULTILINE)
    assert listed == [(cancelled_id, "cancelled"), (finished_id, "finished")]
    # The server agrees with what the client printed.
    assert (await get_job(http, finished_id))["status"] == "finished"
    assert (await get_job(http, cancelled_id))["status"] == "cancelled"


async def test_the_node_client_fails_on_a_refused_token(
    start_orchestrator: StartOrchestrator, node_client_dir: Path
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    process = await asyncio.create_subprocess_exec(
        "node", "dist/client.js", "--address", f"127.0.0.1:{orchestrator.grpc_port}",
        "--token", "not-a-client-token",
        cwd=node_client_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode == 1
    assert "avtomatika-error-code" in err.decode()
