"""What a client sees of the workers and queues: the dashboard's oldest
queued task per skill, each worker's ``agent`` (what it says it is) and its
``active_task_ids``, only the caller's own jobs' tasks (with ``load``
counting them all), over REST and gRPC, on each store."""

from __future__ import annotations

from datetime import datetime
from importlib import metadata
from pathlib import Path

import grpc
import pytest

from avtomatika import ActionFactory, OrchestratorEngine, StateMachineBlueprint
from avtomatika.clock import now_ms
from avtomatika.v1 import job_service_pb2_grpc
from avtomatika.v1.job_service_pb2 import GetDashboardRequest, ListWorkersRequest
from avtomatika.worker import TaskContext
from tests.support import CLIENT_TOKEN, RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import (
    OTHER_CLIENT_TOKEN,
    GrpcChannel,
    HttpClient,
    StartOrchestrator,
    with_other_client,
)
from tests.support.rest_worker import RestWorkers
from tests.support.sdk import serving
from tests.support.waiting import wait_until

pytestmark = pytest.mark.both_stores


async def start(start_orchestrator: StartOrchestrator, tmp_path: Path) -> OrchestratorEngine:
    return await start_orchestrator([echo_blueprint(), resize()], **with_other_client(tmp_path))


def resize() -> StateMachineBlueprint:
    """``jobs/resize``: one ``resize`` task, then done."""
    bp = StateMachineBlueprint("resize", api_endpoint="jobs/resize", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task("resize", transitions={"success": "done"})

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def job_service(channel: grpc.aio.Channel) -> job_service_pb2_grpc.JobServiceAsyncStub:
    stub: job_service_pb2_grpc.JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
    return stub


async def test_the_dashboard_says_since_when_each_skill_has_waited(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    tmp_path: Path,
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    http = http_client(orchestrator)
    board = await (await http.get("/api/v1/dashboard")).json()
    assert board["oldest_queued_at_by_skill"] == {}

    before = now_ms()
    first = await create_job(http, "jobs/echo")
    await wait_for_status(http, first, "waiting_for_worker")
    between = now_ms()
    second = await create_job(http, "jobs/echo")
    await create_job(http, "jobs/resize")
    await wait_for_status(http, second, "waiting_for_worker")
    board = await (await http.get("/api/v1/dashboard")).json()
    oldest = {skill: ms(at) for skill, at in board["oldest_queued_at_by_skill"].items()}
    assert set(oldest) == {"echo", "resize"}
    assert before <= oldest["echo"] <= between <= oldest["resize"]
    assert board["queue_depth_by_skill"] == {"echo": 2, "resize": 1}

    # gRPC: the same instants, in epoch milliseconds.
    answer = await job_service(grpc_channel(orchestrator)).GetDashboard(
        GetDashboardRequest(), metadata=(("x-client-token", CLIENT_TOKEN),)
    )
    assert dict(answer.oldest_queued_at_by_skill_ms) == oldest

    # The first job's task leaves the queue: the second is the oldest now.
    worker = RawWorker(grpc_channel(orchestrator), "w-echo")
    await worker.hello(["echo"])
    task = await worker.next_task()
    assert task.job_id == first
    board = await (await http.get("/api/v1/dashboard")).json()
    assert ms(board["oldest_queued_at_by_skill"]["echo"]) >= between
    await worker.succeed(task, {})
    await worker.credit()
    await worker.succeed(await worker.next_task(), {})
    board = await (await http.get("/api/v1/dashboard")).json()
    assert list(board["oldest_queued_at_by_skill"]) == ["resize"]
    await worker.close()


async def test_each_client_sees_its_own_tasks_on_a_worker_and_what_the_worker_is(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    rest_worker: RestWorkers,
    tmp_path: Path,
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    mine, theirs = http_client(orchestrator), http_client(orchestrator, OTHER_CLIENT_TOKEN)
    my_job = await create_job(mine, "jobs/echo")
    their_job = await create_job(theirs, "jobs/echo")
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{orchestrator.grpc_port}",
        options=[("grpc.primary_user_agent", "acme-worker/2.1")],
    ) as channel:
        worker = RawWorker(channel, "w-grpc")
        await worker.hello(["echo"], credits=2)
        tasks = {(await worker.next_task()).job_id: None for _ in range(2)}
        assert set(tasks) == {my_job, their_job}
        polling = rest_worker(orchestrator, "w-rest")
        polling.http.headers["User-Agent"] = "avtomatika-worker/1.0b7 (test)"
        await polling.register()

        seen = {}
        for client, job_id in ((mine, my_job), (theirs, their_job)):
            listed = {w["worker_id"]: w for w in await (await client.get("/api/v1/workers")).json()}
            grpc_worker = listed["w-grpc"]
            assert grpc_worker["agent"].startswith("acme-worker/2.1")
            assert grpc_worker["load"] == 2
            [own_task] = grpc_worker["active_task_ids"]
            seen[job_id] = own_task
            # The protocol its X-RXON-Version names tells the SDK generation.
            assert listed["w-rest"]["agent"] == "avtomatika-worker/1.0b7 (test) rxon/1.0b3"
            assert (listed["w-rest"]["load"], listed["w-rest"]["active_task_ids"]) == (0, [])
        assert seen[my_job] != seen[their_job]

        # gRPC ListWorkers: the same view, for the caller.
        answer = await job_service(channel).ListWorkers(
            ListWorkersRequest(), metadata=(("x-client-token", OTHER_CLIENT_TOKEN),)
        )
        by_id = {w.registration.worker_id: w for w in answer.workers}
        assert list(by_id["w-grpc"].active_task_ids) == [seen[their_job]]
        assert by_id["w-grpc"].load == 2
        assert by_id["w-rest"].agent == "avtomatika-worker/1.0b7 (test) rxon/1.0b3"
        await worker.close()


async def test_our_sdk_worker_names_itself_and_its_version(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    http = http_client(orchestrator)

    async def echo(params: dict[str, object], task: TaskContext) -> dict[str, object]:
        return params

    async with serving(orchestrator, {"echo": echo}, worker_id="sdk-agent"):

        async def listed() -> dict[str, object] | None:
            workers = await (await http.get("/api/v1/workers")).json()
            return next((w for w in workers if w["worker_id"] == "sdk-agent"), None)

        worker = await wait_until(listed, message="the SDK worker is listed")
    assert str(worker["agent"]).startswith(f"avtomatika-worker/{metadata.version('avtomatika')} ")
