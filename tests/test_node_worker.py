"""The Node.js worker of ``examples/node-worker`` against a live orchestrator:
proof that the proto contract is enough for a team in another language.

``npm ci`` runs once per session in a temporary copy of the example. Without
``node``/``npm`` the tests are skipped, except under ``CI=true``, where they
fail: CI must run them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from avtomatika import OrchestratorEngine
from avtomatika.engine.events import E
from tests.support import WORKER_TOKEN, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.tls import Authority, client_context

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "node-worker"

StartNodeWorker = Callable[..., Awaitable[asyncio.subprocess.Process]]
"""``start_node_worker(orchestrator, worker_id, **environment)``."""


@pytest.fixture(scope="session")
def node_worker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example with its locked dependencies installed."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed: the Node.js worker cannot run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    directory = tmp_path_factory.mktemp("node-worker")
    for name in ("package.json", "package-lock.json", "worker.js"):
        shutil.copy(EXAMPLE / name, directory / name)
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory,
        check=True,
        timeout=50,
    )
    return directory


@pytest.fixture
async def start_node_worker(node_worker_dir: Path) -> AsyncIterator[StartNodeWorker]:
    """Factory: run ``worker.js`` against an orchestrator; killed at the end."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(
        orchestrator: OrchestratorEngine, worker_id: str, **environment: str
    ) -> asyncio.subprocess.Process:
        env = {
            **os.environ,
            "ORCHESTRATOR_GRPC": f"127.0.0.1:{orchestrator.grpc_port}",
            "WORKER_TOKEN": WORKER_TOKEN,
            "WORKER_ID": worker_id,
            "MAX_CONCURRENCY": "2",
            "PROTO_ROOT": str(ROOT),
            **environment,
        }
        process = await asyncio.create_subprocess_exec(
            "node", "worker.js", cwd=node_worker_dir, env=env, stdout=asyncio.subprocess.DEVNULL
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_the_node_worker_completes_jobs_and_drains_on_sigterm(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    start_node_worker: StartNodeWorker,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    node = await start_node_worker(orchestrator, "node-1")

    job_ids = [await create_job(http, "jobs/echo", {"n": n}) for n in range(6)]
    for n, job_id in enumerate(job_ids):
        job = await wait_for_status(http, job_id, "finished")
        assert job["state_history"]["echoed"] == {"n": n}
        assert job["state_history"]["language"] == "node"
    (info,) = orchestrator.engine.workers.list()
    assert info.registration.labels["language"] == "node"
    assert info.registration.resources.max_concurrent_tasks == 2

    node.send_signal(signal.SIGTERM)
    assert await node.wait() == 0
    assert orchestrator.engine.workers.list() == []


async def test_the_node_worker_acknowledges_a_cancel(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    start_node_worker: StartNodeWorker,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    acked: asyncio.Queue[float] = asyncio.Queue()
    orchestrator.engine.workers.cancel_acked.subscribe(acked.put_nowait)
    picked_up = asyncio.Event()
    orchestrator.engine.events.subscribe(
        lambda item: (
            picked_up.set() if item.event.type == E.HISTORY_EVENT_TYPE_TASK_PICKED_UP else None
        )
    )
    await start_node_worker(orchestrator, "node-1")
    job_id = await create_job(http, "jobs/echo", {"sleep_ms": 60_000})
    await picked_up.wait()

    response = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert (await response.json())["status"] == "cancellation_request_sent"
    assert await acked.get() >= 0
    assert (await wait_for_status(http, job_id, "cancelled"))["status"] == "cancelled"


async def test_the_node_worker_connects_with_a_client_certificate(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    start_node_worker: StartNodeWorker,
    tmp_path: Path,
) -> None:
    """Issue 17, finding 4: a worker in another language speaks mutual TLS,
    its id bound to its certificate."""
    ca = Authority(tmp_path)
    server, client = ca.server(), ca.client("node-tls")
    orchestrator = await start_orchestrator(
        [echo_blueprint()],
        tls_cert_path=server.cert, tls_key_path=server.key, tls_ca_path=ca.cert,
        tls_require_client_cert=True, tls_bind_worker_identity=True,
    )  # fmt: skip
    https = http_client(orchestrator, ssl=client_context(ca.cert, client))
    node = await start_node_worker(
        orchestrator, "node-tls",
        AVTOMATIKA_TLS_CA=str(ca.cert), AVTOMATIKA_TLS_CERT=str(client.cert),
        AVTOMATIKA_TLS_KEY=str(client.key),
    )  # fmt: skip

    job_id = await create_job(https, "jobs/echo", {"over": "mtls"})
    job = await wait_for_status(https, job_id, "finished")
    assert job["state_history"]["echoed"] == {"over": "mtls"}
    assert job["state_history"]["worker"] == "node-tls"
    node.send_signal(signal.SIGTERM)
    assert await node.wait() == 0
