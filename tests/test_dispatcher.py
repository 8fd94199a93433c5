"""The dispatcher through real worker streams: requirements and max_cost,
each strategy choosing among several waiting workers, tasks waiting for a
suitable worker (then starting, or timing out), order under requirements, and
reputation computed from results."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from avtomatika import ActionFactory, OrchestratorEngine, StateMachineBlueprint
from avtomatika.v1.task_pb2 import ErrorCode, TaskState
from avtomatika.v1.worker_pb2 import (
    GpuInfo,
    InstalledModel,
    WorkerRegistration,
    WorkerResources,
)
from avtomatika.v1.worker_service_pb2 import ConnectRequest, Hello, TaskAssignment
from tests.support import WORKER_TOKEN, RawWorker, create_job, wait_for_status
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.both_stores


SKILL = "render"


def render_blueprint() -> StateMachineBlueprint:
    """start -> a ``render`` task dispatched with the options in initial_data
    -> done (on success or failure)."""
    bp = StateMachineBlueprint("render", api_endpoint="/jobs/render", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        actions.dispatch_task(
            SKILL,
            params={"name": initial_data.get("name", "")},
            transitions={"success": "done", "failure": "done"},
            **initial_data.get("options", {}),
        )

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


async def connect(
    orchestrator: OrchestratorEngine,
    channel: GrpcChannel,
    worker_id: str,
    *,
    credits: int = 1,
    cost: float = 0.0,
    gpu: str = "",
    vram_gb: float = 0.0,
    models: tuple[tuple[str, str], ...] = (),
    labels: dict[str, str] | None = None,
    waits: bool = True,
) -> RawWorker:
    """A worker with a full registration, connected (and, if ``waits``, once
    it waits for a task: nothing queued suits it)."""
    before = (await orchestrator.engine.storage.waiting_workers()).get(SKILL, 0)
    worker = RawWorker(channel(orchestrator), worker_id)
    registration = WorkerRegistration(
        worker_id=worker_id,
        skills=[SKILL],
        resources=WorkerResources(
            max_concurrent_tasks=credits,
            gpu_info=GpuInfo(model=gpu, vram_gb=vram_gb),
            installed_models=[InstalledModel(name=n, version=v) for n, v in models],
        ),
        cost_per_skill={SKILL: cost},
        labels=labels or {},
    )
    await worker.send(
        ConnectRequest(hello=Hello(registration=registration, initial_credits=credits))
    )
    await worker.expect("welcome")
    if waits:
        await waiting(orchestrator, before + 1)
    return worker


async def waiting(orchestrator: OrchestratorEngine, count: int) -> None:
    """Until ``count`` workers wait for a task of SKILL."""

    async def counted() -> bool:
        return (await orchestrator.engine.storage.waiting_workers()).get(SKILL, 0) == count

    await wait_until(counted)


async def leased_to(orchestrator: OrchestratorEngine, job_id: str) -> str:
    """The id of the worker the job's task was leased to, once it is."""
    storage = orchestrator.engine.storage

    async def leased() -> str | None:
        job = await storage.get_job(job_id)
        assert job is not None
        for task_id in job.active_task_ids:
            task = await storage.get_task(task_id)
            if task is not None and task.state == TaskState.TASK_STATE_LEASED:
                return task.worker_id
        return None

    return await wait_until(leased)


async def run(worker: RawWorker, *, fail: bool = False) -> TaskAssignment:
    """The worker takes its next task and reports it, then asks for another."""
    task = await worker.next_task()
    if fail:
        ack = await worker.fail(task, ErrorCode.ERROR_CODE_PERMANENT)
    else:
        ack = await worker.succeed(task, None)
    assert ack.result_ack.accepted
    return task


# -- requirements --


@pytest.mark.parametrize(
    ("options", "fit", "unfit"),
    [
        (
            {"resource_requirements": {"gpu_info": {"model": "4090"}}},
            {"gpu": "NVIDIA RTX 4090"},
            {"gpu": "NVIDIA A10"},
        ),
        (
            {"resource_requirements": {"gpu_info": {"vram_gb": 40}}},
            {"vram_gb": 80},
            {"vram_gb": 24},
        ),
        (
            {"resource_requirements": {"installed_models": ["whisper", "llama"]}},
            {"models": (("whisper", "3"), ("llama", "2"))},
            {"models": (("whisper", "3"),)},
        ),
        (
            {"resource_requirements": {"installed_models": [{"name": "llama", "version": "3"}]}},
            {"models": (("llama", "3"),)},
            {"models": (("llama", "2"),)},
        ),
        (
            {"resource_requirements": {"extra_requirements": {"region": "eu"}}},
            {"labels": {"region": "eu"}},
            {"labels": {"region": "us"}},
        ),
        ({"max_cost": 0.5}, {"cost": 0.5}, {"cost": 0.6}),
    ],
    ids=["gpu-model", "vram", "models", "model-version", "extra", "max-cost"],
)
async def test_a_task_goes_only_to_a_worker_that_meets_its_requirements(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    options: dict[str, Any],
    fit: dict[str, Any],
    unfit: dict[str, Any],
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    # The unfit worker has waited longest: first in line, were it suitable.
    await connect(orchestrator, grpc_channel, "unfit", **unfit)
    await connect(orchestrator, grpc_channel, "fit", **fit)

    job_id = await create_job(http, "jobs/render", {"options": options})

    assert await leased_to(orchestrator, job_id) == "fit"


async def test_a_task_no_worker_suits_waits_and_starts_when_one_connects(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    await connect(orchestrator, grpc_channel, "small", vram_gb=8)
    options = {"resource_requirements": {"gpu_info": {"vram_gb": 40}}}
    job_id = await create_job(http, "jobs/render", {"options": options})
    await wait_for_status(http, job_id, "waiting_for_worker")
    assert await orchestrator.engine.storage.queue_depths() == {SKILL: 1}

    big = await connect(orchestrator, grpc_channel, "big", vram_gb=80, waits=False)
    await run(big)

    await wait_for_status(http, job_id, "finished")


async def test_a_task_no_worker_suits_fails_at_its_dispatch_timeout(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    await connect(orchestrator, grpc_channel, "small", vram_gb=8)
    options = {
        "resource_requirements": {"gpu_info": {"vram_gb": 40}},
        "dispatch_timeout_seconds": 0.2,
    }
    job_id = await create_job(http, "jobs/render", {"options": options})

    job = await wait_for_status(http, job_id, "failed")

    assert "dispatch timeout" in job["error"]
    assert await orchestrator.engine.storage.queue_depths() == {}


async def test_priority_then_fifo_holds_among_the_tasks_a_worker_suits(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    gpu = {"gpu_info": {"model": "4090"}}
    other = {"gpu_info": {"model": "A100"}}
    jobs = [
        ("a", 0, gpu),
        ("b", 5, {}),
        ("c", 0, {}),
        ("d", 9, other),  # never this worker's
        ("e", 5, gpu),
        ("f", 9, {}),
    ]
    for name, priority, requirements in jobs:
        options = {"priority": priority, "resource_requirements": requirements}
        job_id = await create_job(http, "jobs/render", {"name": name, "options": options})
        await wait_for_status(http, job_id, "waiting_for_worker")

    worker = RawWorker(grpc_channel(orchestrator), "w-4090")
    registration = WorkerRegistration(
        worker_id="w-4090",
        skills=[SKILL],
        resources=WorkerResources(gpu_info=GpuInfo(model="RTX 4090")),
    )
    await worker.send(ConnectRequest(hello=Hello(registration=registration, initial_credits=5)))
    await worker.expect("welcome")
    received = [RawWorker.params(await worker.next_task())["name"] for _ in range(5)]

    assert received == ["f", "b", "e", "a", "c"]
    assert await orchestrator.engine.storage.queue_depths() == {SKILL: 1}


# -- strategies: which of several waiting workers a new task goes to --


async def test_cheapest_picks_the_lowest_price(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    for worker_id, cost in (("three", 3.0), ("one", 1.0), ("two", 2.0)):
        await connect(orchestrator, grpc_channel, worker_id, cost=cost)

    job_id = await create_job(http, "jobs/render", {"options": {"dispatch_strategy": "cheapest"}})

    assert await leased_to(orchestrator, job_id) == "one"


async def test_default_prefers_a_warm_worker_then_the_cheapest(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    warm = await connect(orchestrator, grpc_channel, "warm", cost=5.0)
    first = await create_job(http, "jobs/render")
    await run(warm)
    await wait_for_status(http, first, "finished")
    await connect(orchestrator, grpc_channel, "cold", cost=1.0)
    await warm.credit()
    await waiting(orchestrator, 2)

    job_id = await create_job(http, "jobs/render")

    # Cold, cheaper and waiting longer, but the warm worker ran this skill.
    assert await leased_to(orchestrator, job_id) == "warm"


async def test_round_robin_picks_the_worker_served_longest_ago(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    early = await connect(orchestrator, grpc_channel, "early")
    late = await connect(orchestrator, grpc_channel, "late")
    for worker in (early, late):  # first served early, then late
        job_id = await create_job(
            http, "jobs/render", {"options": {"dispatch_strategy": "round_robin"}}
        )
        assert await leased_to(orchestrator, job_id) == worker.worker_id
        await run(worker)
    # late asks again first, so it has waited longest...
    await late.credit()
    await waiting(orchestrator, 1)
    await early.credit()
    await waiting(orchestrator, 2)

    job_id = await create_job(
        http, "jobs/render", {"options": {"dispatch_strategy": "round_robin"}}
    )

    # ...but early was served longer ago.
    assert await leased_to(orchestrator, job_id) == "early"


async def test_least_connections_picks_the_worker_holding_fewest_tasks(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    options = {"options": {"dispatch_strategy": "least_connections"}}
    busy = await connect(orchestrator, grpc_channel, "busy", credits=2)
    await create_job(http, "jobs/render", options)
    await busy.next_task()  # holds it, and waits for one more
    await waiting(orchestrator, 1)
    await connect(orchestrator, grpc_channel, "idle")

    job_id = await create_job(http, "jobs/render", options)

    assert await leased_to(orchestrator, job_id) == "idle"


async def test_a_failing_worker_loses_best_value_selections(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    options = {"options": {"dispatch_strategy": "best_value"}}
    flaky = await connect(orchestrator, grpc_channel, "flaky", cost=1.0)
    solid = await connect(orchestrator, grpc_channel, "solid", cost=1.0)
    # Two rounds: flaky (waiting longest, equal reputations) fails its task,
    # solid succeeds at its own; both ask again, flaky first.
    for _ in range(2):
        for worker, fails in ((flaky, True), (solid, False)):
            job_id = await create_job(
                http, "jobs/render", {"options": {"dispatch_strategy": "round_robin"}}
            )
            assert await leased_to(orchestrator, job_id) == worker.worker_id
            await run(worker, fail=fails)
        await flaky.credit()
        await waiting(orchestrator, 1)
        await solid.credit()
        await waiting(orchestrator, 2)
    reputation = orchestrator.engine.roster.reputation
    assert reputation.of("flaky") < reputation.of("solid")

    job_id = await create_job(http, "jobs/render", options)

    assert await leased_to(orchestrator, job_id) == "solid"


# -- one line for both transports --


async def test_rest_and_grpc_workers_claim_from_the_same_queue_by_the_same_rules(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    grpc_worker = await connect(orchestrator, grpc_channel, "grpc-plain")
    rest = aiohttp.ClientSession(
        f"http://127.0.0.1:{orchestrator.rest_port}",
        headers={"X-Worker-Token": WORKER_TOKEN, "X-RXON-Version": "1.0b3"},
    )
    async with rest:
        registered = await rest.post(
            "/_worker/workers/register",
            json={
                "worker_id": "rest-gpu",
                "worker_type": "gpu-box",
                "supported_skills": [SKILL],
                "resources": {
                    "max_concurrent_tasks": 1,
                    "cpu_cores": 4,
                    "gpu_info": {"model": "RTX 4090", "vram_gb": 24},
                },
                "installed_software": {},
                "installed_models": [],
                "capabilities": {
                    "hostname": "vm",
                    "ip_address": "127.0.0.1",
                    "cost_per_skill": {SKILL: 0.5},
                    "s3_config_hash": None,
                    "extra": {"region": "eu"},
                },
            },
        )
        assert registered.status == 200, await registered.text()
        poll = asyncio.create_task(rest.get("/_worker/workers/rest-gpu/tasks/next"))
        await waiting(orchestrator, 2)  # the gRPC worker has waited longer
        requirements = {"gpu_info": {"model": "4090"}, "extra_requirements": {"region": "eu"}}
        gpu_job = await create_job(
            http, "jobs/render", {"options": {"resource_requirements": requirements}}
        )

        response = await poll
        assert response.status == 200
        assert (await response.json())["job_id"] == gpu_job

    plain_job = await create_job(http, "jobs/render")
    assert await leased_to(orchestrator, plain_job) == "grpc-plain"
    await run(grpc_worker)


async def test_a_task_held_past_its_result_deadline_costs_the_worker_reputation(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([render_blueprint()])
    http = http_client(orchestrator)
    worker = await connect(orchestrator, grpc_channel, "silent")
    job_id = await create_job(http, "jobs/render", {"options": {"result_timeout_seconds": 0.2}})
    await worker.next_task()  # and never answers

    await wait_for_status(http, job_id, "failed")

    reputation = orchestrator.engine.roster.reputation
    assert reputation.of("silent") < reputation.of("newcomer")
