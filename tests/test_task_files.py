"""``task_files`` in blueprint handlers, and the removal of a job's files
when it ends (``S3_AUTO_CLEANUP``), against a real S3 emulator."""

from __future__ import annotations

from typing import Any

import aiohttp

from avtomatika import ActionFactory, StateMachineBlueprint, TaskFiles
from tests.support import create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.s3 import S3Emulator, keys_in, unique_bucket
from tests.support.waiting import wait_until


def files_blueprint() -> StateMachineBlueprint:
    """start: write files of every kind and read them back -> done."""
    bp = StateMachineBlueprint("files", api_endpoint="/jobs/files", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(
        task_files: TaskFiles, state_history: dict[str, Any], actions: ActionFactory
    ) -> None:
        uri = await task_files.write_json("meta/info.json", {"frames": 24, "name": "Łódź"})
        await task_files.write_text("notes.txt", "première")
        await task_files.upload("raw.bin", b"\x00\x01\xff")
        state_history["uri"] = uri
        state_history["json"] = await task_files.read_json("meta/info.json")
        state_history["text"] = await task_files.read_text("notes.txt")
        state_history["raw"] = list(await task_files.download("raw.bin"))
        state_history["url"] = await task_files.presigned_url("notes.txt", expires_in=120)
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


async def test_handlers_write_and_read_their_jobs_files(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    bucket = unique_bucket()
    orchestrator = await start_orchestrator(
        [files_blueprint()], **s3_emulator.settings(bucket, s3_auto_cleanup=False)
    )
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/files")

    job = await wait_for_status(http, job_id, "finished")
    history = job["state_history"]
    assert history["uri"] == f"s3://{bucket}/jobs/{job_id}/meta/info.json"
    assert history["json"] == {"frames": 24, "name": "Łódź"}
    assert history["text"] == "première"
    assert history["raw"] == [0, 1, 255]
    async with aiohttp.ClientSession() as anonymous:
        response = await anonymous.get(history["url"])
        assert await response.text() == "première"
    # The client sees the same files through the REST API.
    response = await http.get(f"/api/v1/jobs/{job_id}/files/download/notes.txt")
    assert await response.text() == "première"


async def test_task_files_is_none_without_s3(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("probe", api_endpoint="/jobs/probe", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(
        task_files: TaskFiles | None, state_history: dict[str, Any], actions: ActionFactory
    ) -> None:
        state_history["has_files"] = task_files is not None
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job = await wait_for_status(http, await create_job(http, "jobs/probe"), "finished")
    assert job["state_history"] == {"has_files": False}


async def test_a_finished_jobs_files_are_removed(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    bucket = unique_bucket()
    orchestrator = await start_orchestrator([files_blueprint()], **s3_emulator.settings(bucket))
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/files")

    await wait_for_status(http, job_id, "finished")
    async with s3_emulator.client() as s3:

        async def gone() -> bool:
            return not await keys_in(s3, bucket, f"jobs/{job_id}/")

        await wait_until(gone)


async def test_a_cancelled_jobs_uploads_are_removed_and_other_jobs_kept(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    bucket = unique_bucket()
    orchestrator = await start_orchestrator([echo_blueprint()], **s3_emulator.settings(bucket))
    http = http_client(orchestrator)
    # No worker: both jobs wait for one, until cancelled.
    ending, staying = await create_job(http, "jobs/echo"), await create_job(http, "jobs/echo")
    for job_id in (ending, staying):
        response = await http.put(f"/api/v1/jobs/{job_id}/files/content/in.txt", data=b"x")
        assert response.status == 200

    response = await http.post(f"/api/v1/jobs/{ending}/cancel")
    assert response.status == 200
    async with s3_emulator.client() as s3:

        async def gone() -> bool:
            return not await keys_in(s3, bucket, f"jobs/{ending}/")

        await wait_until(gone)
        assert await keys_in(s3, bucket) == [f"jobs/{staying}/in.txt"]


async def test_files_are_kept_when_cleanup_is_off(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    bucket = unique_bucket()
    orchestrator = await start_orchestrator(
        [files_blueprint()], **s3_emulator.settings(bucket, s3_auto_cleanup=False)
    )
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/files")
    await wait_for_status(http, job_id, "finished")

    # Stopping finishes any deletion still queued, so after it the bucket
    # shows what cleanup would have done.
    await orchestrator.stop()
    async with s3_emulator.client() as s3:
        assert sorted(await keys_in(s3, bucket)) == [
            f"jobs/{job_id}/meta/info.json",
            f"jobs/{job_id}/notes.txt",
            f"jobs/{job_id}/raw.bin",
        ]
