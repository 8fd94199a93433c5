"""The public worker SDK ``avtomatika-worker==1.0b7``, unmodified, against a
live orchestrator over the legacy REST API: it is installed from PyPI into a
throwaway virtualenv (once per session) and runs as a real process (see
:mod:`tests.support.pypi_sdk`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support import create_job, wait_for, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.pypi_sdk import wait_registered
from tests.support.sdk_releases import SDK_1_0B7, StartWorker, workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
async def sdk_worker(
    pypi_sdks: Callable[[str], Path], tmp_path: Path
) -> AsyncIterator[StartWorker]:
    """Factory: ``await sdk_worker(orchestrator, worker_id, **env)``."""
    python = pypi_sdks(SDK_1_0B7.requirement)
    async with workers(python, tmp_path, SDK_1_0B7) as start:
        yield start


async def test_an_sdk_1_0b7_worker_runs_jobs_through_every_outcome(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, sdk_worker: StartWorker
) -> None:
    transitions = {"success": "done", "needs_review": "review"}
    orchestrator = await start_orchestrator(
        [echo_blueprint(transitions=transitions)], job_max_retries=1
    )
    http = http_client(orchestrator)
    worker = await sdk_worker(orchestrator, "sdk-w1")
    await wait_registered(http, "sdk-w1")

    ok = await create_job(http, "jobs/echo", {"value": 12345678901234567})
    custom = await create_job(http, "jobs/echo", {"mode": "custom"})
    failures = {
        code: await create_job(http, "jobs/echo", {"mode": "fail", "code": code})
        for code in ("TRANSIENT_ERROR", "PERMANENT_ERROR", "INVALID_INPUT_ERROR")
    }

    try:
        finished = await wait_for_status(http, ok, "finished")
        assert finished["state_history"]["echoed"] == 12345678901234567
        reviewed = await wait_for_status(http, custom, "finished")
        assert (reviewed["current_state"], reviewed["state_history"]["score"]) == ("review", 3)
        transient = await wait_for_status(http, failures["TRANSIENT_ERROR"], "quarantined")
        assert "TRANSIENT_ERROR" in transient["error"]
        assert "1 retries" in transient["error"]  # retried once, then quarantined
        permanent = await wait_for_status(http, failures["PERMANENT_ERROR"], "quarantined")
        assert "PERMANENT_ERROR" in permanent["error"]
        invalid = await wait_for_status(http, failures["INVALID_INPUT_ERROR"], "failed")
        assert "INVALID_INPUT_ERROR" in invalid["error"]
    except BaseException:
        worker.dump()
        raise


async def test_progress_and_cancel_of_a_running_task_reach_the_sdk_worker(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, sdk_worker: StartWorker
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = await sdk_worker(orchestrator, "sdk-w2")
    await wait_registered(http, "sdk-w2")
    job_id = await create_job(http, "jobs/echo", {"mode": "run"})

    # Progress goes up the SDK's (anonymous) WebSocket.
    job = await wait_for(http, job_id, lambda j: j["progress"] == 0.5)
    assert job["progress_message"] == "half way"
    (task_id,) = orchestrator.polling_workers.held("sdk-w2")
    await worker.marked("started", task_id)

    cancelled = await (await http.post(f"/api/v1/jobs/{job_id}/cancel")).json()

    # The socket names no worker, so the next heartbeat reply carries the cancel.
    assert cancelled == {"status": "cancellation_request_accepted"}
    await worker.marked("cancelled", task_id)
    assert (await wait_for_status(http, job_id, "cancelled"))["status"] == "cancelled"


async def test_with_a_per_worker_token_the_cancel_is_pushed_down_the_sdk_socket(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    sdk_worker: StartWorker,
    tmp_path: Path,
) -> None:
    config = tmp_path / "workers.toml"
    config.write_text('[sdk-w3]\ntoken = "sdk-w3-token"\n')
    orchestrator = await start_orchestrator([echo_blueprint()], workers_config_path=config)
    http = http_client(orchestrator)
    # Heartbeats an hour apart: only the socket can deliver the cancel in time.
    worker = await sdk_worker(
        orchestrator, "sdk-w3", WORKER_TOKEN="sdk-w3-token", HEARTBEAT_INTERVAL="3600"
    )
    await wait_registered(http, "sdk-w3")
    job_id = await create_job(http, "jobs/echo", {"mode": "run"})
    await wait_for(http, job_id, lambda j: j["progress"] == 0.5)  # the socket is up
    (task_id,) = orchestrator.polling_workers.held("sdk-w3")

    cancelled = await (await http.post(f"/api/v1/jobs/{job_id}/cancel")).json()

    assert cancelled == {"status": "cancellation_request_sent"}
    await worker.marked("cancelled", task_id)
