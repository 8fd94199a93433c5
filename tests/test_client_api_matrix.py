"""One table of client scenarios, run over REST and over gRPC, on each store.

Every scenario is a small async function that drives an
:class:`~tests.support.client_api.Api` against a real orchestrator and
asserts what a client sees; it never asks which transport it speaks. Both
transports call one service layer, so each scenario holds the same results
over both: a scenario that passes over one and fails over the other is a
place where REST and gRPC disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from avtomatika import OrchestratorEngine
from avtomatika.clock import now_ms
from avtomatika.v1.worker_service_pb2 import ConnectRequest, TaskProgress
from tests.support import RawWorker, wait_until
from tests.support.blueprints import approval_blueprint, echo_blueprint
from tests.support.client_api import TRANSPORTS, Api, ApiError, ConnectApi, put, reaches
from tests.support.follow import followers_reach
from tests.support.orchestrator import StartOrchestrator
from tests.support.s3 import S3Emulator, unique_bucket

pytestmark = pytest.mark.both_stores

ACME, GLOBEX = "acme-token-0123456789", "globex-token-0123456789"
"""Two clients of the clients file every scenario's orchestrator reads,
besides the default client the :class:`Api` speaks for."""


@asynccontextmanager
async def worker(orchestrator: OrchestratorEngine, skills: list[str]) -> AsyncIterator[RawWorker]:
    """A registered gRPC worker with ``skills``, whatever the client's transport."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.grpc_port}") as channel:
        connected = RawWorker(channel, "w-matrix")
        await connected.hello(skills)
        yield connected
        await connected.close()


async def refused(call: Awaitable[object], kind: str, mentions: str = "") -> ApiError:
    """``call`` fails with ``kind``, its message naming ``mentions``."""
    with pytest.raises(ApiError) as error:
        await call
    assert error.value.kind == kind, error.value
    assert mentions.lower() in error.value.message.lower(), error.value
    return error.value


async def every_page(api: Api, size: int, **filters: Any) -> list[str]:
    """Every job id the filters match, page by page."""
    listed: list[str] = []
    token = ""
    while True:
        ids, token = await api.list_jobs(page_size=size, page_token=token, **filters)
        listed += ids
        if not token:
            return listed


ORDER_SCHEMA = {
    "type": "object",
    "required": ["customer", "items"],
    "properties": {
        "customer": {"type": "string"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 0}},
            },
        },
        "notes": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
}
"""The input schema of the ``order`` blueprint (an echo with a schema)."""


# The scenarios ------------------------------------------------------------


async def create_and_get(api: Api, orchestrator: OrchestratorEngine) -> None:
    job_id = await api.create("jobs/echo", {"n": 7, "id": 12345678901234567})
    job = await reaches(api, job_id, "waiting_for_worker")
    assert job == job | {
        "id": job_id,
        "blueprint_name": "echo",
        "current_state": "start",
        # A 17-digit integer survives both transports exactly.
        "initial_data": {"n": 7, "id": 12345678901234567},
        "error": None,
        "result": None,  # not before the job ends
        "approval_token": None,
    }
    assert abs(job["created_at_ms"] - now_ms()) < 600_000
    await refused(api.get("no-such-job"), "not_found")


async def large_initial_data(api: Api, orchestrator: OrchestratorEngine) -> None:
    # Beyond grpc's default 4 MiB message, within the 16 MiB both transports read.
    blob = "x" * (5 * 1024 * 1024)
    job_id = await api.create("jobs/echo", {"blob": blob})
    assert (await api.get(job_id))["initial_data"] == {"blob": blob}


async def follow_to_the_end(api: Api, orchestrator: OrchestratorEngine) -> None:
    job_id = await api.create("jobs/echo", {"n": 7})
    await reaches(api, job_id, "waiting_for_worker")
    following = asyncio.create_task(api.follow(job_id))
    await followers_reach(orchestrator, 1)  # every change from here on is seen
    async with worker(orchestrator, ["echo"]) as echo:
        task = await echo.next_task()
        assert echo.params(task) == {"n": 7}
        progress = TaskProgress(task_id=task.task_id, job_id=job_id, progress=0.5)
        await echo.send(ConnectRequest(progress=progress))
        await wait_until(lambda: _progress_of(api, job_id, 0.5))
        await echo.succeed(task, {"echoed": 7})
        seen = await following
    # The job as it was, its progress (a task running keeps the job waiting
    # for its worker), and its end, after which the stream ends.
    assert seen == ["waiting_for_worker", "waiting_for_worker", "finished"]
    job = await api.get(job_id)
    assert (job["status"], job["current_state"]) == ("finished", "done")
    assert job["result"] == job["state_history"] == {"echoed": 7}
    assert await api.follow(job_id) == ["finished"]  # an ended job: one event


async def _progress_of(api: Api, job_id: str, progress: float) -> bool:
    return bool((await api.get(job_id))["progress"] == progress)


async def cancel(api: Api, orchestrator: OrchestratorEngine) -> None:
    queued = await api.create("jobs/echo")
    assert await api.cancel(queued) == "cancellation_request_accepted"  # no worker held it
    cancelled = await api.get(queued)
    assert (cancelled["status"], cancelled["result"]) == ("cancelled", {})  # ended with nothing
    await refused(api.cancel(queued), "failed_precondition")

    held = await api.create("jobs/echo")
    async with worker(orchestrator, ["echo"]) as echo:
        task = await echo.next_task()
        assert await api.cancel(held) == "cancellation_request_sent"
        assert (await echo.expect("cancel")).cancel.task_id == task.task_id
    assert (await api.get(held))["status"] == "cancelled"


async def history(api: Api, orchestrator: OrchestratorEngine) -> None:
    job_id = await api.create("jobs/echo", {"n": 1})
    async with worker(orchestrator, ["echo"]) as echo:
        await echo.succeed(await echo.next_task(), {"n": 1})
    await reaches(api, job_id, "finished")

    async def ended() -> list[str] | None:
        # History is written after the change it records: wait for the end.
        names = await api.history(job_id)
        return names if "job_ended" in names else None

    names = await wait_until(ended)
    assert names[0] == "job_created", names
    assert {"task_dispatched", "task_finished"} <= set(names), names


async def list_with_each_filter(api: Api, orchestrator: OrchestratorEngine) -> None:
    echoes = [await api.create("jobs/echo") for _ in range(5)]
    others = [await api.create("jobs/other") for _ in range(3)]
    for job_id in echoes[:2]:
        await api.cancel(job_id)
    for job_id in echoes[2:] + others:
        await reaches(api, job_id, "waiting_for_worker")

    async def listed(**filters: Any) -> set[str]:
        ids = await every_page(api, 2, **filters)  # small pages: the token keeps the filter
        assert len(ids) == len(set(ids)), ids
        return set(ids)

    assert await listed() == set(echoes + others)
    assert await listed(statuses=["cancelled"]) == set(echoes[:2])
    assert await listed(statuses=["cancelled", "waiting_for_worker"]) == set(echoes + others)
    assert await listed(blueprint="other") == set(others)
    assert await listed(current_state="start", statuses=["waiting_for_worker"]) == set(
        echoes[2:] + others
    )
    assert await listed(current_state="nowhere") == set()

    newest = max([(await api.get(job_id))["created_at_ms"] for job_id in echoes + others])
    # The filter keeps jobs created at or after its instant: start the next
    # batch in a later millisecond than every earlier job.
    await wait_until(lambda: now_ms() > newest)
    later = [await api.create("jobs/other") for _ in range(2)]
    assert await listed(created_after_ms=newest + 1) == set(later)
    assert await listed(created_after_ms=newest + 1, blueprint="echo") == set()


async def paging_while_jobs_arrive(api: Api, orchestrator: OrchestratorEngine) -> None:
    created: list[str] = []
    for _ in range(5):
        created += await asyncio.gather(*(api.create("jobs/echo") for _ in range(50)))
    arrived: list[str] = []
    listed: list[str] = []
    token = ""
    while True:
        ids, token = await api.list_jobs(page_size=40, page_token=token)
        assert len(ids) <= 40
        listed += ids
        if not token:
            break
        arrived += await asyncio.gather(*(api.create("jobs/echo") for _ in range(3)))
    assert len(listed) == len(set(listed))  # no job twice
    assert set(created) <= set(listed)  # no gap
    assert set(listed) <= set(created) | set(arrived)


async def files(api: Api, orchestrator: OrchestratorEngine) -> None:
    bucket = orchestrator.engine.config.s3_default_bucket
    job_id = await api.create("jobs/echo")
    assert (await api.upload_url(job_id, "in.bin"))[1] == 3600  # by default
    url, expires_in = await api.upload_url(job_id, "in.bin", 120)
    assert expires_in == 120
    await put(url, b"straight to s3")
    # A name with folders, as the docs allow (a %2F in a REST path).
    assert await api.upload(job_id, "out/proxied.txt", b"through the orchestrator") == (
        f"s3://{bucket}/jobs/{job_id}/out/proxied.txt"
    )
    assert await api.download(job_id, "in.bin") == b"straight to s3"
    assert await api.download(job_id, "out/proxied.txt") == b"through the orchestrator"
    async with S3Emulator(orchestrator.engine.config.s3_endpoint_url or "").client() as s3:
        stored = await s3.head_object(Bucket=bucket, Key=f"jobs/{job_id}/out/proxied.txt")
    assert stored["ContentType"] == "text/plain"  # as the client gave it
    await refused(api.upload_url(job_id, "in.bin", 604_801), "invalid_argument", "expires_in")
    await refused(api.upload(job_id, "../escape", b"no"), "invalid_argument", "filename")
    await refused(api.download(job_id, "missing.txt"), "not_found", "missing.txt")
    stranger = api.as_client(GLOBEX)
    await refused(stranger.upload_url(job_id, "x.bin"), "not_found")
    await refused(stranger.upload(job_id, "x.bin", b"no"), "not_found")
    await refused(stranger.download(job_id, "in.bin"), "not_found")


async def approval(api: Api, orchestrator: OrchestratorEngine) -> None:
    job_id = await api.create("jobs/sign_off")
    waiting = await reaches(api, job_id, "waiting_for_human")
    assert waiting["approval_token"]  # shown to the owner while the job waits
    await refused(api.approve(job_id, "maybe"), "invalid_argument", "maybe")
    await refused(api.approve("no-such-job", "approved"), "not_found")
    assert await api.approve(job_id, "approved") == "approval_received"
    job = await reaches(api, job_id, "finished")
    assert (job["current_state"], job["approval_token"]) == ("shipped", None)
    await refused(api.approve(job_id, "approved"), "failed_precondition")


async def approval_with_its_token(api: Api, orchestrator: OrchestratorEngine) -> None:
    job_id = await api.create("jobs/sign_off")
    token = (await reaches(api, job_id, "waiting_for_human"))["approval_token"]
    assert token
    await refused(api.approve(job_id, "approved"), "unauthenticated", "approval token")
    await refused(api.approve(job_id, "approved", "not-the-token"), "unauthenticated")
    assert await api.approve(job_id, "rejected", token) == "approval_received"
    assert (await reaches(api, job_id, "finished"))["current_state"] == "dropped"


async def graph_workers_and_dashboard(api: Api, orchestrator: OrchestratorEngine) -> None:
    dot = await api.graph("echo")
    assert dot.startswith("digraph")
    assert "start" in dot
    assert "done" in dot
    await refused(api.graph("nope"), "not_found", "nope")
    kept, dropped = await api.create("jobs/echo"), await api.create("jobs/echo")
    await api.cancel(dropped)
    await reaches(api, kept, "waiting_for_worker")
    # A worker for another skill: the echo job stays queued while it is listed.
    async with worker(orchestrator, ["resize"]):
        assert await api.workers() == [
            {"worker_id": "w-matrix", "skills": ["resize"], "status": "idle", "transport": "grpc"}
        ]
        dashboard = await api.dashboard()
    assert set(dashboard) == {
        "jobs_by_status",
        "queue_depth_by_skill",
        "workers_by_status",
        "workers_by_transport",
        "jobs_finished_last_minute",
        "jobs_failed_last_minute",
        "oldest_queued_at_ms",
    }
    counted = {status: n for status, n in dashboard["jobs_by_status"].items() if n}
    assert counted == {"waiting_for_worker": 1, "cancelled": 1}
    assert dashboard["workers_by_transport"]["grpc"] == 1
    assert {status for status, n in dashboard["workers_by_status"].items() if n} == {"idle"}
    assert dashboard["queue_depth_by_skill"]["echo"] >= 1
    assert 0 < dashboard["oldest_queued_at_ms"]["echo"] <= now_ms()


async def unauthenticated(api: Api, orchestrator: OrchestratorEngine) -> None:
    job_id = await api.create("jobs/echo")
    for stranger in (api.as_client(None), api.as_client("not-a-token")):
        for call in (
            stranger.create("jobs/echo"),
            stranger.get(job_id),
            stranger.list_jobs(),
            stranger.cancel(job_id),
            stranger.workers(),
        ):
            await refused(call, "unauthenticated", "x-client-token")
    assert (await api.get(job_id))["status"] != "cancelled"


async def another_clients_job(api: Api, orchestrator: OrchestratorEngine) -> None:
    acme, globex = api.as_client(ACME), api.as_client(GLOBEX)
    job_id = await acme.create("jobs/echo")
    for call in (
        globex.get(job_id),
        globex.cancel(job_id),
        globex.history(job_id),
        globex.follow(job_id),
    ):
        await refused(call, "not_found")
    assert await globex.list_jobs() == ([], "")
    assert await acme.list_jobs() == ([job_id], "")
    assert (await acme.get(job_id))["status"] != "cancelled"  # untouched


async def bad_input(api: Api, orchestrator: OrchestratorEngine) -> None:
    for initial_data in ([1, 2], "text", 3):
        await refused(api.create("jobs/echo", initial_data), "invalid_argument", "initial_data")
    await refused(
        api.create("jobs/echo", dispatch_timeout=-1), "invalid_argument", "dispatch_timeout"
    )
    await refused(
        api.create("jobs/echo", result_timeout=-0.5), "invalid_argument", "result_timeout"
    )
    for webhook_url in ("ftp://example.com/hook", "http://127.0.0.1/hook"):
        await refused(
            api.create("jobs/echo", webhook_url=webhook_url), "invalid_argument", "webhook_url"
        )
    await refused(api.create("jobs/nothing-here"), "not_found")
    assert await api.list_jobs() == ([], "")  # nothing half-created

    for _ in range(2):
        await api.create("jobs/echo")
    _, token = await api.list_jobs(page_size=1)
    assert token
    await refused(api.list_jobs(page_size=501), "invalid_argument", "page_size")
    await refused(api.list_jobs(statuses=["unspecified"]), "invalid_argument", "statuses")
    await refused(api.list_jobs(created_after_ms=-5), "invalid_argument", "created_after_ms")
    await refused(api.list_jobs(page_token="forged"), "invalid_argument", "page_token")
    await refused(api.list_jobs(page_token=token[:-3] + "AAA"), "invalid_argument", "page_token")
    await refused(
        api.list_jobs(page_size=1, page_token=token, blueprint="echo"),  # made for other filters
        "invalid_argument",
        "page_token",
    )
    newest, _ = await api.list_jobs(page_size=1)
    await refused(api.get(newest[0], wait=-1), "invalid_argument", "wait")


async def input_schema(api: Api, orchestrator: OrchestratorEngine) -> None:
    assert await api.blueprints() == {
        "echo": None,
        "other": None,
        "sign_off": None,
        "order": ORDER_SCHEMA,
    }
    good = {"customer": "acme", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 0}]}
    job_id = await api.create("jobs/order", good)
    assert (await api.get(job_id))["initial_data"] == good
    # A refusal at each depth, naming the path to what failed.
    for initial_data, mentions in (
        ({"items": []}, "initial_data: 'customer' is a required property"),
        ({"customer": 7, "items": []}, "initial_data.customer: 7 is not of type 'string'"),
        (
            {"customer": "acme", "items": [{"sku": "a", "qty": 1}, "b"]},
            "initial_data.items[1]: 'b' is not of type 'object'",
        ),
        (
            {"customer": "acme", "items": [{"sku": "a", "qty": 1}] * 2 + [{"sku": "c", "qty": -1}]},
            "initial_data.items[2].qty: -1 is less than the minimum of 0",
        ),
        (
            {"customer": "acme", "items": [], "notes": {"gift wrap": 1}},
            "initial_data.notes[\"gift wrap\"]: 1 is not of type 'boolean'",
        ),
    ):
        await refused(api.create("jobs/order", initial_data), "invalid_argument", mentions)
    assert await api.list_jobs() == ([job_id], "")  # nothing created by a refusal


async def rate_limited(api: Api, orchestrator: OrchestratorEngine) -> None:
    for _ in range(3):
        await api.workers()
    limited = await refused(api.workers(), "resource_exhausted")
    assert limited.retry_after is not None
    assert limited.retry_after >= 1
    await refused(api.create("jobs/echo"), "resource_exhausted")
    assert await api.as_client(ACME).workers() == []  # a limit per client


async def files_without_s3(api: Api, orchestrator: OrchestratorEngine) -> None:
    job_id = await api.create("jobs/echo")
    for call in (
        api.upload_url(job_id, "a.txt"),
        api.upload(job_id, "a.txt", b"a"),
        api.download(job_id, "a.txt"),
    ):
        await refused(call, "unimplemented", "S3")


@dataclass(frozen=True, slots=True)
class Scenario:
    """A row of the table: the scenario, and what its orchestrator needs
    beyond the shared blueprints and clients file."""

    run: Callable[[Api, OrchestratorEngine], Awaitable[None]]
    settings: Mapping[str, Any] = field(default_factory=dict)
    s3: bool = False

    @property
    def name(self) -> str:
        return self.run.__name__


SCENARIOS = (
    Scenario(create_and_get),
    Scenario(large_initial_data),
    Scenario(follow_to_the_end),
    Scenario(cancel),
    Scenario(history),
    Scenario(list_with_each_filter),
    Scenario(paging_while_jobs_arrive),
    Scenario(files, s3=True),
    Scenario(approval),
    Scenario(approval_with_its_token, settings={"approval_token_required": True}),
    Scenario(graph_workers_and_dashboard),
    Scenario(unauthenticated),
    Scenario(another_clients_job),
    Scenario(bad_input),
    Scenario(input_schema),
    Scenario(
        rate_limited,
        settings={"rate_limiting_enabled": True, "rate_limit_limit": 3, "rate_limit_period": 60.0},
    ),
    Scenario(files_without_s3),
)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.name)
async def test_scenario(
    scenario: Scenario,
    transport: str,
    start_orchestrator: StartOrchestrator,
    connect_api: ConnectApi,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(f'[acme]\ntoken = "{ACME}"\n[globex]\ntoken = "{GLOBEX}"\n')
    settings: dict[str, Any] = {"clients_config_path": clients, **scenario.settings}
    if scenario.s3:
        emulator: S3Emulator = request.getfixturevalue("s3_emulator")
        settings |= emulator.settings(unique_bucket())
    orchestrator = await start_orchestrator(
        [
            echo_blueprint(),
            echo_blueprint("other"),
            approval_blueprint("sign_off", approved="shipped", rejected="dropped"),
            echo_blueprint("order", input_schema=ORDER_SCHEMA),
        ],
        **settings,
    )
    await scenario.run(connect_api(transport, orchestrator), orchestrator)
