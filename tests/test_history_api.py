"""``GET /api/v1/jobs/{job_id}/history`` over real HTTP: a job's lifecycle in
order, on every backend, for its owner only; and history never holds a job
back."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from avtomatika.v1.task_pb2 import ErrorCode
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.history import ended, history_until
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def database_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """``HISTORY_DATABASE_URI`` for each backend (None: memory)."""
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


async def test_the_history_of_a_job_run_by_a_worker(
    database_uri: str | None,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], history_database_uri=database_uri)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo", {"n": 1})
    task = await worker.next_task()
    await worker.succeed(task, {"echoed": 1})

    events = await history_until(http, job_id, ended)

    assert [(e["type"], e["state"]) for e in events] == [
        ("job_created", None),
        ("state_entered", "start"),
        ("task_dispatched", "start"),
        ("task_picked_up", "start"),
        ("task_finished", "start"),
        ("state_left", "start"),
        ("state_entered", "done"),
        ("job_ended", "done"),
    ]
    by_type = {e["type"]: e for e in events}
    for kind in ("task_dispatched", "task_picked_up", "task_finished"):
        assert by_type[kind]["task_id"] == task.task_id
    assert by_type["task_picked_up"]["worker_id"] == "w-1"
    assert by_type["task_finished"]["worker_id"] == "w-1"
    assert by_type["task_finished"]["message"] == "success"
    assert isinstance(by_type["task_finished"]["duration_ms"], int)
    assert isinstance(by_type["state_left"]["duration_ms"], int)
    assert by_type["job_created"] == {
        "event_id": by_type["job_created"]["event_id"],
        "job_id": job_id,
        "timestamp": by_type["job_created"]["timestamp"],
        "type": "job_created",
        "event_type": "job_created",
        "state": None,
        "task_id": None,
        "worker_id": None,
        "duration_ms": None,
        "message": "echo",
        "details": None,
        "previous_state": None,
        "next_state": None,
        "attempt_number": None,
    }
    assert by_type["job_ended"]["message"] == "finished"
    assert {e["job_id"] for e in events} == {job_id}
    assert len({e["event_id"] for e in events}) == len(events)
    times = [datetime.fromisoformat(e["timestamp"]) for e in events]
    assert all(t.utcoffset() == timedelta(0) for t in times)
    assert times == sorted(times)


async def test_retries_and_cancellation_are_in_the_history(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    await worker.fail(await worker.next_task(), ErrorCode.ERROR_CODE_TRANSIENT, "disk full")
    await worker.credit()
    retried = await worker.next_task()
    assert (await http.post(f"/api/v1/jobs/{job_id}/cancel")).status == 200

    events = await history_until(http, job_id, ended)

    types = [e["type"] for e in events]
    assert types[-2:] == ["job_cancelled", "job_ended"]
    assert events[-1]["message"].startswith("cancelled")
    retry = next(e for e in events if e["type"] == "task_retried")
    assert retry["task_id"] == retried.task_id
    assert retry["message"] == "echo attempt 2"
    assert types.index("task_finished") < types.index("task_retried")


async def test_another_clients_job_and_an_unknown_job_are_not_found(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    not_mine = await orchestrator.create_background_job("echo", {"secret": True})

    for job_id in (not_mine, "no-such-job"):
        response = await http.get(f"/api/v1/jobs/{job_id}/history")
        assert response.status == 404
        assert (await response.json()) == {"error": f"job {job_id!r} not found"}


async def test_a_job_keeps_only_its_latest_events_in_memory(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], history_memory_events_per_job=3)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    await worker.succeed(await worker.next_task(), None)

    events = await history_until(http, job_id, ended)

    assert [e["type"] for e in events] == ["state_left", "state_entered", "job_ended"]


async def test_jobs_finish_when_history_cannot_keep_up_and_the_loss_is_counted(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], history_queue_size=1)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"], credits=5)
    job_ids = [await create_job(http, "jobs/echo", {"i": i}) for i in range(5)]
    tasks = [await worker.next_task() for _ in job_ids]
    for task in tasks:
        await worker.succeed(task, None)

    for job_id in job_ids:
        await wait_for_status(http, job_id, "finished")
    # Each commit publishes several events at once; a queue of one holds
    # the first and the rest are dropped, and counted.
    assert orchestrator.history.dropped > 0
