"""``GET /api/v1/dashboard`` and ``POST /_public/debug/flush_db`` over real
HTTP."""

from __future__ import annotations

from avtomatika.v1.task_pb2 import ErrorCode
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator


async def test_the_dashboard_counts_jobs_queues_workers_and_recent_outcomes(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    empty = await (await http.get("/api/v1/dashboard")).json()
    assert set(empty["jobs_by_status"].values()) == {0}
    assert "waiting_for_worker" in empty["jobs_by_status"]
    assert empty["queue_depth_by_skill"] == {}
    assert empty["workers_by_status"] == {"idle": 0, "busy": 0, "draining": 0, "offline": 0}
    assert empty["workers_by_transport"] == {"grpc": 0, "rest": 0}
    assert (empty["jobs_finished_last_minute"], empty["jobs_failed_last_minute"]) == (0, 0)

    finished, failed, queued = [await create_job(http, "jobs/echo") for _ in range(3)]
    for job_id in (finished, failed, queued):
        await wait_for_status(http, job_id, "waiting_for_worker")
    worker = RawWorker(grpc_channel(orchestrator), "w1")
    await worker.hello(["echo"])
    await worker.succeed(await worker.next_task(), {})
    await worker.credit()
    await worker.fail(await worker.next_task(), ErrorCode.ERROR_CODE_INVALID_INPUT)
    await wait_for_status(http, finished, "finished")
    await wait_for_status(http, failed, "failed")
    queued_too = await create_job(http, "jobs/echo")
    await wait_for_status(http, queued_too, "waiting_for_worker")
    await worker.credit()
    await worker.next_task()  # the third job runs on w1; the fourth stays queued

    board = await (await http.get("/api/v1/dashboard")).json()
    jobs = board["jobs_by_status"]
    assert (jobs["finished"], jobs["failed"], jobs["waiting_for_worker"]) == (1, 1, 2)
    assert board["queue_depth_by_skill"] == {"echo": 1}
    assert board["workers_by_transport"]["grpc"] == 1
    assert sum(board["workers_by_status"].values()) == 1
    assert (board["jobs_finished_last_minute"], board["jobs_failed_last_minute"]) == (1, 1)


async def test_flush_is_404_unless_enabled(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    anonymous = http_client(orchestrator, token=None)
    # Every method: a GET answering 405 would reveal that the route exists.
    for method in ("POST", "GET", "PUT", "DELETE"):
        response = await anonymous.request(method, "/_public/debug/flush_db")
        assert response.status == 404, method
        assert response.content_type == "application/json"
    assert (await http.get(f"/api/v1/jobs/{job_id}")).status == 200


async def test_flush_when_enabled_empties_the_store_and_ends_followers(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], debug_flush_enabled=True)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    stream = await http.get(f"/api/v1/jobs/{job_id}/events")
    assert b"event: status" in await stream.content.readuntil(b"\n\n")
    response = await http_client(orchestrator, token=None).post("/_public/debug/flush_db")
    assert response.status == 200
    assert await response.json() == {"status": "db_flushed"}
    assert (await http.get(f"/api/v1/jobs/{job_id}")).status == 404
    board = await (await http.get("/api/v1/dashboard")).json()
    assert set(board["jobs_by_status"].values()) == {0}
    # The follower learns that the job is gone, and the stream ends.
    rest = await stream.content.read()
    assert rest.startswith(b"event: error\n")
    assert job_id.encode() in rest
