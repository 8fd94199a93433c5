"""Following a job without polling: ``GET /api/v1/jobs/{id}?wait=`` and the
Server-Sent Events stream ``GET /api/v1/jobs/{id}/events``, over real HTTP
with a raw gRPC worker driving the job."""

from __future__ import annotations

import asyncio

import pytest

from avtomatika.engine.events import EventBus, event
from avtomatika.engine.followers import JobFollowers
from avtomatika.v1.history_pb2 import HistoryEventType
from avtomatika.v1.worker_service_pb2 import ConnectRequest, TaskProgress
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.follow import EventStream, followers_reach
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


async def test_wait_answers_when_the_job_changes(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], job_wait_max_seconds=30)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    worker = RawWorker(grpc_channel(orchestrator), "w1")
    await worker.hello(["echo"])
    task = await worker.next_task()
    waiting = asyncio.create_task(http.get(f"/api/v1/jobs/{job_id}?wait=30"))
    # Registered before the job is read, so the result cannot slip past it.
    await followers_reach(orchestrator, 1)
    assert not waiting.done()
    await worker.succeed(task, {"echo": 1})
    response = await waiting
    assert response.status == 200
    assert (await response.json())["status"] in ("running", "finished")
    # A terminal job answers at once, however long the wait asked for.
    await wait_for_status(http, job_id, "finished")
    response = await http.get(f"/api/v1/jobs/{job_id}?wait=30")
    assert (await response.json())["status"] == "finished"


async def test_wait_is_bounded_by_job_wait_max_seconds(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], job_wait_max_seconds=0.2)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    # Nothing happens to the job: the request still answers, with its state.
    response = await http.get(f"/api/v1/jobs/{job_id}?wait=3600")
    assert (await response.json())["status"] == "waiting_for_worker"
    assert (await http.get(f"/api/v1/jobs/{job_id}?wait=0")).status == 200


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "inf", ""])
async def test_an_invalid_wait_is_400_json(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, wait: str
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    response = await http.get(f"/api/v1/jobs/{job_id}", params={"wait": wait})
    assert response.status == 400
    assert "wait" in (await response.json())["error"]


async def test_events_stream_status_and_progress_until_the_end(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    response = await http.get(f"/api/v1/jobs/{job_id}/events")
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    stream = EventStream(response)
    kind, first = await stream.next() or ("", {})
    assert kind == "status"
    assert first["job_id"] == job_id
    assert (first["status"], first["current_state"]) == ("waiting_for_worker", "start")
    assert (first["progress"], first["progress_message"]) == (0.0, None)

    worker = RawWorker(grpc_channel(orchestrator), "w1")
    await worker.hello(["echo"])
    task = await worker.next_task()
    progress = TaskProgress(task_id=task.task_id, job_id=job_id, progress=0.5, message="half")
    await worker.send(ConnectRequest(progress=progress))
    kind, data = await stream.next() or ("", {})
    assert kind == "progress"
    assert (data["status"], data["progress"], data["progress_message"]) == (
        "waiting_for_worker",
        0.5,
        "half",
    )
    await worker.succeed(task, {"echo": 1})
    seen = []
    while (item := await stream.next()) is not None:
        seen.append(item)
    kinds = {kind for kind, _ in seen}
    assert kinds <= {"status", "progress"}
    last = seen[-1][1]
    assert (last["status"], last["current_state"], last["error"]) == ("finished", "done", None)
    assert all(data["job_id"] == job_id for _, data in seen)


async def test_the_stream_of_an_ended_job_is_one_event(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    assert (await http.post(f"/api/v1/jobs/{job_id}/cancel")).status == 200
    stream = EventStream(await http.get(f"/api/v1/jobs/{job_id}/events"))
    kind, data = await stream.next() or ("", {})
    assert (kind, data["status"]) == ("status", "cancelled")
    assert await stream.next() is None


async def test_an_unknown_job_is_404_json_before_any_stream(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    for path in ("/api/v1/jobs/nope/events", "/api/v1/jobs/nope?wait=1"):
        response = await http.get(path)
        assert response.status == 404
        assert response.content_type == "application/json"
    assert (await http_client(orchestrator, token=None).get("/api/v1/jobs/x/events")).status == 401


async def test_shutdown_ends_open_streams_and_waits(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], job_wait_max_seconds=3600)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    stream = EventStream(await http.get(f"/api/v1/jobs/{job_id}/events"))
    assert await stream.next() is not None
    waiting = asyncio.create_task(http.get(f"/api/v1/jobs/{job_id}?wait=3600"))
    await followers_reach(orchestrator, 2)
    # Without ending them, aiohttp would wait out its 60 s shutdown timeout
    # (longer than this test may run).
    await orchestrator.stop()
    assert await stream.next() is None
    assert (await (await waiting).json())["status"] == "waiting_for_worker"


async def test_a_follower_is_woken_only_by_its_own_job() -> None:
    bus = EventBus()
    followers = JobFollowers(bus)
    await followers.start()
    kind = HistoryEventType.HISTORY_EVENT_TYPE_PROGRESS
    with followers.follow("a") as follower:
        bus.publish([event(kind, "b", 1)])
        assert not await follower.changed(0)
        bus.publish([event(kind, "a", 2)])
        assert await follower.changed(0)
        assert follower.take() == ([], True)
    assert len(followers) == 0
    await followers.stop()


async def test_a_follower_is_not_woken_by_what_leaves_the_job_as_it_was() -> None:
    bus = EventBus()
    followers = JobFollowers(bus)
    await followers.start()
    with followers.follow("a") as follower:
        # A worker taking the task: the record is as it was, nothing to re-read.
        bus.publish([event(HistoryEventType.HISTORY_EVENT_TYPE_TASK_PICKED_UP, "a", 1)])
        bus.publish([event(HistoryEventType.HISTORY_EVENT_TYPE_WEBHOOK_DELIVERED, "a", 2)])
        assert not await follower.changed(0)
        bus.publish([event(HistoryEventType.HISTORY_EVENT_TYPE_PROGRESS, "a", 3)])
        assert await follower.changed(0)
    await followers.stop()
