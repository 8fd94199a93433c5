"""The claim-check (issue 17, finding 1): with S3 configured, a payload over
``MAX_PAYLOAD_BYTES`` is stored as a file of its job and travels as a
reference, so it never crosses a worker's stream; the real worker SDK
fetches it and its handler gets the data. Inputs here are 6 MB against the
default 4 MiB limit and the SDK's default 5 MiB channel: sent whole, the
task could not have reached the worker. Against a real S3 emulator (moto)."""

from __future__ import annotations

from typing import Any

import pytest

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.payload import REFERENCE_KEY
from avtomatika.worker import TaskContext
from tests.support import get_job, wait_for_status, wait_for_terminal
from tests.support.blueprints import echo_blueprint
from tests.support.jobs import create_big_job
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.s3 import S3Emulator, keys_in, unique_bucket
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores

SIX_MB = 6 * 1000 * 1000


async def measure(params: Params, task: TaskContext) -> Params:
    """What the handler got: the length of its blob and its first bytes."""
    blob = params.get("blob", "")
    return {"length": len(blob), "head": blob[:8], "keys": sorted(params)}


async def test_a_big_input_goes_by_reference_and_the_sdk_worker_gets_the_data(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    bucket = unique_bucket()
    orchestrator = await start_orchestrator(
        [echo_blueprint()], **s3_emulator.settings(bucket, s3_auto_cleanup=False)
    )
    http = http_client(orchestrator)
    async with serving(orchestrator, {"echo": measure}):
        job_id = await create_big_job(http, "jobs/echo", {"blob": "abcdefgh" * (SIX_MB // 8)})
        done = await wait_for_status(http, job_id, "finished")
    assert done["state_history"]["length"] == SIX_MB
    assert done["state_history"]["head"] == "abcdefgh"
    assert done["state_history"]["keys"] == ["blob"]
    # What the job stores (and what went to the worker) is the reference.
    reference = done["initial_data"][REFERENCE_KEY]
    assert reference["name"] == "initial_data.json"
    assert reference["uri"] == f"s3://{bucket}/jobs/{job_id}/initial_data.json"
    assert reference["bytes"] > SIX_MB
    usage = await orchestrator.engine.storage.client_usage("default")
    assert usage.stored_bytes < 100_000
    async with s3_emulator.client() as s3:
        assert await keys_in(s3, bucket, f"jobs/{job_id}/") == [f"jobs/{job_id}/initial_data.json"]


async def test_big_task_params_built_by_a_blueprint_go_by_reference(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    """A small input, params of 6 MB built by the handler: stored as the
    task's params file, fetched by the SDK."""
    bp = StateMachineBlueprint("grow", api_endpoint="/jobs/grow", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        blob = initial_data["letter"] * SIX_MB
        actions.dispatch_task("measure", params={"blob": blob}, transitions={"success": "done"})

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    bucket = unique_bucket()
    orchestrator = await start_orchestrator(
        [bp], **s3_emulator.settings(bucket, s3_auto_cleanup=False)
    )
    http = http_client(orchestrator)
    async with serving(orchestrator, {"measure": measure}):
        job_id = await create_big_job(http, "jobs/grow", {"letter": "z"})
        finished = await wait_for_status(http, job_id, "finished")
    assert finished["state_history"]["length"] == SIX_MB
    assert finished["state_history"]["head"] == "z" * 8
    async with s3_emulator.client() as s3:
        keys = await keys_in(s3, bucket, f"jobs/{job_id}/")
    assert len(keys) == 1
    assert keys[0].startswith(f"jobs/{job_id}/task-")
    assert keys[0].endswith("-params.json")


async def test_over_the_claim_check_limit_is_413_and_stores_nothing(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    bucket = unique_bucket()
    orchestrator = await start_orchestrator(
        [echo_blueprint()],
        **s3_emulator.settings(bucket, s3_auto_cleanup=False),
        max_payload_bytes=10_000,
        claim_check_max_bytes=100_000,
    )
    http = http_client(orchestrator)
    response = await http.post("/api/v1/jobs/echo", json={"initial_data": {"b": "x" * 200_000}})
    assert response.status == 413
    assert "CLAIM_CHECK_MAX_BYTES (100000 bytes)" in (await response.json())["error"]
    assert await orchestrator.engine.storage.count_jobs() == {}
    async with s3_emulator.client() as s3:
        assert await keys_in(s3, bucket) == []
    response = await http.post("/api/v1/jobs/echo", json={"initial_data": {"b": "x" * 90_000}})
    assert response.status == 202
    job = await get_job(http, (await response.json())["job_id"])
    assert REFERENCE_KEY in job["initial_data"]


async def test_without_s3_a_params_file_that_cannot_be_fetched_fails_the_task_clearly(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """A reference whose URL does not answer (here, made by hand): the SDK
    reports a failure naming the file; retries end the job quarantined."""
    orchestrator = await start_orchestrator([echo_blueprint()], job_max_retries=0)
    http = http_client(orchestrator)
    reference = {REFERENCE_KEY: {"name": "gone.json", "url": "http://127.0.0.1:9/gone"}}
    async with serving(orchestrator, {"echo": measure}):
        job_id = await create_big_job(http, "jobs/echo", reference)
        ended = await wait_for_terminal(http, job_id)
    assert ended["status"] in ("failed", "quarantined")
    assert "could not fetch the task's params (gone.json)" in ended["error"]
