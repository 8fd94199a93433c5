"""The public worker SDK ``avtomatika-worker==1.0b20`` (protocol 1.0b17),
unmodified, against a live orchestrator over the REST worker API, beside
1.0b7 (``tests/test_rest_worker_sdk.py``): skills as objects, skills
hashes, events, the newer error codes. Installed from PyPI into a throwaway
virtualenv once per session (see :mod:`tests.support.pypi_sdk`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support import create_job, wait_for, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.pypi_sdk import wait_registered
from tests.support.sdk_releases import SDK_1_0B7, SDK_1_0B20, StartWorker, workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
async def sdk20_worker(
    pypi_sdks: Callable[[str], Path], tmp_path: Path
) -> AsyncIterator[StartWorker]:
    """Factory: ``await sdk20_worker(orchestrator, worker_id, **env)``."""
    python = pypi_sdks(SDK_1_0B20.requirement)
    async with workers(python, tmp_path, SDK_1_0B20) as start:
        yield start


async def test_an_sdk_1_0b20_worker_registers_and_runs_jobs_through_every_outcome(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, sdk20_worker: StartWorker
) -> None:
    transitions = {"success": "done", "needs_review": "review"}
    orchestrator = await start_orchestrator(
        [echo_blueprint(transitions=transitions)], job_max_retries=1
    )
    http = http_client(orchestrator)
    worker = await sdk20_worker(orchestrator, "sdk20-w1")
    listed = await wait_registered(http, "sdk20-w1")

    ok = await create_job(http, "jobs/echo", {"value": 12345678901234567})
    custom = await create_job(http, "jobs/echo", {"mode": "custom"})
    outcomes = {
        "TRANSIENT_ERROR": "quarantined",  # after its one retry
        "PERMANENT_ERROR": "quarantined",
        "INVALID_INPUT_ERROR": "failed",
        # 1.0b20's further codes, handled as upstream handles them.
        "SECURITY_ERROR": "quarantined",
        "DEPENDENCY_MISSING_ERROR": "quarantined",
        "CONTRACT_VIOLATION_ERROR": "quarantined",
        "INTEGRITY_MISMATCH_ERROR": "failed",
        "LIMIT_EXCEEDED_ERROR": "quarantined",  # after its one retry
    }
    failures = {
        code: await create_job(http, "jobs/echo", {"mode": "fail", "code": code})
        for code in outcomes
    }

    try:
        assert listed["skills"] == ["echo"]
        finished = await wait_for_status(http, ok, "finished")
        assert finished["state_history"]["echoed"] == 12345678901234567
        reviewed = await wait_for_status(http, custom, "finished")
        assert (reviewed["current_state"], reviewed["state_history"]["score"]) == ("review", 3)
        for code, status in outcomes.items():
            job = await wait_for_status(http, failures[code], status)
            assert code in job["error"]
        retried = await wait_for_status(http, failures["LIMIT_EXCEEDED_ERROR"], "quarantined")
        assert "1 retries" in retried["error"]
    except BaseException:
        worker.dump()
        raise


async def test_progress_by_post_and_cancel_by_heartbeat_reach_the_sdk_1_0b20_worker(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, sdk20_worker: StartWorker
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = await sdk20_worker(orchestrator, "sdk20-w2")  # no WebSocket
    await wait_registered(http, "sdk20-w2")
    job_id = await create_job(http, "jobs/echo", {"mode": "run"})

    try:
        # Progress comes as POST /_worker/events.
        job = await wait_for(http, job_id, lambda j: j["progress"] == 0.5)
        assert job["progress_message"] == "half way"
        (task_id,) = orchestrator.polling_workers.held("sdk20-w2")

        cancelled = await (await http.post(f"/api/v1/jobs/{job_id}/cancel")).json()

        # No socket: the next heartbeat reply names the task.
        assert cancelled == {"status": "cancellation_request_accepted"}
        await worker.marked("cancelled", task_id)
    except BaseException:
        worker.dump()
        raise


async def test_progress_and_cancel_go_over_the_sdk_1_0b20_socket(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, sdk20_worker: StartWorker
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    # Heartbeats an hour apart: only the socket can deliver the cancel in
    # time. 1.0b20 opens /_worker/ws/{worker_id}, so the socket is its own.
    worker = await sdk20_worker(
        orchestrator, "sdk20-w3", WORKER_ENABLE_WEBSOCKETS="true", HEARTBEAT_INTERVAL="3600"
    )
    await wait_registered(http, "sdk20-w3")
    job_id = await create_job(http, "jobs/echo", {"mode": "run"})

    try:
        await wait_for(http, job_id, lambda j: j["progress"] == 0.5)
        (task_id,) = orchestrator.polling_workers.held("sdk20-w3")
        await worker.marked("started", task_id)

        cancelled = await (await http.post(f"/api/v1/jobs/{job_id}/cancel")).json()

        assert cancelled == {"status": "cancellation_request_sent"}
        await worker.marked("cancelled", task_id)
    except BaseException:
        worker.dump()
        raise


async def test_after_a_restart_of_an_in_memory_server_the_sdk_1_0b20_worker_registers_again(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, sdk20_worker: StartWorker
) -> None:
    first = await start_orchestrator([echo_blueprint()])
    worker = await sdk20_worker(first, "sdk20-w4")
    await wait_registered(http_client(first), "sdk20-w4")

    # The same address, a new process with empty books: the worker's next
    # heartbeat is from a stranger, answered "not found".
    port = first.rest_port
    await first.stop()
    second = await start_orchestrator([echo_blueprint()], api_port=port)
    http = http_client(second)

    try:
        listed = await wait_registered(http, "sdk20-w4")
        assert listed["skills"] == ["echo"]  # registered again, not restored empty
        job_id = await create_job(http, "jobs/echo", {"value": 7})
        finished = await wait_for_status(http, job_id, "finished")
        assert finished["state_history"]["echoed"] == 7
    except BaseException:
        worker.dump()
        raise


async def test_signed_both_ways_the_sdk_1_0b20_worker_runs_jobs_to_the_end(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, sdk20_worker: StartWorker
) -> None:
    # Tasks signed with the worker's ORCHESTRATOR_SECRET_KEY (without a valid
    # sig it drops them); every request of the worker checked against the
    # signature it makes with its token.
    orchestrator = await start_orchestrator(
        [echo_blueprint()], worker_task_signing_secret="s3cret", worker_signatures_required=True
    )
    http = http_client(orchestrator)
    worker = await sdk20_worker(orchestrator, "sdk20-w5", ORCHESTRATOR_SECRET_KEY="s3cret")
    await wait_registered(http, "sdk20-w5")
    # What naive signing gets wrong: nulls, whole-number floats, nesting.
    tricky = {"whole": 2.0, "half": 0.5, "none": None, "nested": {"list": [1.0, None, "é"]}}
    ok = await create_job(http, "jobs/echo", {"value": tricky})
    running = await create_job(http, "jobs/echo", {"mode": "run"})

    try:
        finished = await wait_for_status(http, ok, "finished")
        assert finished["state_history"]["echoed"]["nested"]["list"][2] == "é"
        await wait_for(http, running, lambda j: j["progress"] == 0.5)  # a signed event
    except BaseException:
        worker.dump()
        raise


@pytest.mark.parametrize("instances", [1, 2], ids=["one-server", "two-instances-on-redis"])
async def test_sdk_1_0b7_and_1_0b20_workers_drain_one_queue(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    sdk20_worker: StartWorker,
    pypi_sdks: Callable[[str], Path],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    instances: int,
) -> None:
    settings = {}
    if instances == 2:
        settings["redis_url"] = request.getfixturevalue("redis_url")
    servers = [await start_orchestrator([echo_blueprint()], **settings) for _ in range(instances)]
    http = http_client(servers[0])
    # One task at a time each: two jobs that run until cancelled occupy
    # both workers, so each generation must have taken one from the queue.
    new = await sdk20_worker(servers[-1], "gen-new", MAX_CONCURRENT_TASKS="1")
    async with workers(pypi_sdks(SDK_1_0B7.requirement), tmp_path, SDK_1_0B7) as start_old:
        old = await start_old(servers[0], "gen-old", MAX_CONCURRENT_TASKS="1")
        await wait_registered(http, "gen-new")
        await wait_registered(http, "gen-old")

        try:
            running = [await create_job(http, "jobs/echo", {"mode": "run"}) for _ in range(2)]
            for job_id in running:
                await wait_for(http, job_id, lambda j: j["progress"] == 0.5)
            held = {
                worker_id: [t for s in servers for t in s.polling_workers.held(worker_id)]
                for worker_id in ("gen-old", "gen-new")
            }
            await old.marked("started", held["gen-old"][0])
            await new.marked("started", held["gen-new"][0])
            for job_id in running:
                await http.post(f"/api/v1/jobs/{job_id}/cancel")
            # Then the rest of the queue, to whichever generation is free.
            done = [await create_job(http, "jobs/echo", {"value": i}) for i in range(6)]
            for i, job_id in enumerate(done):
                finished = await wait_for_status(http, job_id, "finished")
                assert finished["state_history"]["echoed"] == i
        except BaseException:
            old.dump()
            new.dump()
            raise
