"""Listing a client's jobs and the blueprints, over REST and gRPC, on both
stores: newest first, filtered, paged by a cursor that neither skips nor
repeats a job while new ones arrive, and refusing what is not a page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from avtomatika.clock import now_ms
from avtomatika.payload import from_payload
from avtomatika.v1 import job_pb2, job_service_pb2_grpc
from avtomatika.v1.job_service_pb2 import ListBlueprintsRequest, ListJobsRequest
from tests.support import CLIENT_TOKEN, create_job
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores

ACME, GLOBEX = "acme-token-0123456789", "globex-token-0123456789"
GRPC_AUTH = (("x-client-token", CLIENT_TOKEN),)

Page = tuple[list[tuple[Any, str]], str]
"""The jobs of a page as (creation time, id), and the token of the next one."""
Lister = Callable[[str, int], Awaitable[Page]]


def rest_lister(http: aiohttp.ClientSession, **query: str) -> Lister:
    async def page(token: str, size: int) -> Page:
        params = {**query, "page_size": str(size), "page_token": token}
        response = await http.get("/api/v1/jobs", params=params)
        body = await response.json()
        assert response.status == 200, body
        return [(job["created_at"], job["id"]) for job in body["jobs"]], body["next_page_token"]

    return page


def grpc_lister(
    stub: job_service_pb2_grpc.JobServiceAsyncStub, request: ListJobsRequest | None = None
) -> Lister:
    async def page(token: str, size: int) -> Page:
        asked = ListJobsRequest()
        if request is not None:
            asked.CopyFrom(request)
        asked.page_size, asked.page_token = size, token
        answer = await stub.ListJobs(asked, metadata=GRPC_AUTH)
        return [(job.created_at_ms, job.id) for job in answer.jobs], answer.next_page_token

    return page


async def every_page(page: Lister, size: int, between: Callable[[], Awaitable[Any]]) -> list[str]:
    """Every job id, page by page, calling ``between`` after each page;
    checks that they come newest first (creation time, then id)."""
    seen: list[tuple[Any, str]] = []
    token = ""
    while True:
        ids, token = await page(token, size)
        seen += ids
        await between()
        if not token:
            assert seen == sorted(seen, reverse=True)
            return [job_id for _, job_id in seen]


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_paging_through_250_jobs_while_new_ones_arrive(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    transport: str,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    created = [await create_job(http, "jobs/echo", {"n": n}) for n in range(250)]
    stub = job_service_pb2_grpc.JobServiceStub(grpc_channel(orchestrator))
    page = rest_lister(http) if transport == "rest" else grpc_lister(stub)
    arrived: list[str] = []

    async def more() -> None:
        arrived.extend(await asyncio.gather(*(create_job(http, "jobs/echo") for _ in range(3))))

    listed = await every_page(page, 40, more)
    assert len(listed) == len(set(listed))  # no job twice
    assert set(created) <= set(listed)  # no gap
    assert set(listed) <= set(created) | set(arrived)


async def test_filters_by_status_blueprint_state_and_time(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint(), echo_blueprint("other")])
    http = http_client(orchestrator)
    echoes = [await create_job(http, "jobs/echo") for _ in range(5)]
    others = [await create_job(http, "jobs/other") for _ in range(3)]
    for job_id in echoes[:2]:
        assert (await http.post(f"/api/v1/jobs/{job_id}/cancel")).status == 200
    stub = job_service_pb2_grpc.JobServiceStub(grpc_channel(orchestrator))

    async def both(query: dict[str, str], request: ListJobsRequest) -> set[str]:
        over_rest = await every_page(rest_lister(http, **query), 2, _nothing)
        over_grpc = await every_page(grpc_lister(stub, request), 2, _nothing)
        assert over_rest == over_grpc
        return set(over_rest)

    cancelled = job_pb2.JOB_STATUS_CANCELLED
    waiting = job_pb2.JOB_STATUS_WAITING_FOR_WORKER
    assert await both({"statuses": "cancelled"}, ListJobsRequest(statuses=[cancelled])) == set(
        echoes[:2]
    )
    assert await both(
        {"statuses": "cancelled,waiting_for_worker"}, ListJobsRequest(statuses=[cancelled, waiting])
    ) == set(echoes + others)
    assert await both({"blueprint": "other"}, ListJobsRequest(blueprint="other")) == set(others)
    # Every job waits in its start state: a state filter with blueprints.
    assert await both(
        {"current_state": "start", "blueprint": "echo", "statuses": "waiting_for_worker"},
        ListJobsRequest(current_state="start", blueprint="echo", statuses=[waiting]),
    ) == set(echoes[2:])
    assert (
        await both({"current_state": "nowhere"}, ListJobsRequest(current_state="nowhere")) == set()
    )
    later = now_ms() + 60_000
    assert (
        await both({"created_after_ms": str(later)}, ListJobsRequest(created_after_ms=later))
        == set()
    )


async def _nothing() -> None:
    return None


async def test_another_client_lists_none_of_them(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[acme]\ntoken = "{ACME}"\n[globex]\ntoken = "{GLOBEX}"\n')
    orchestrator = await start_orchestrator([echo_blueprint()], clients_config_path=path)
    mine = {await create_job(http_client(orchestrator, token=ACME), "jobs/echo") for _ in range(3)}
    assert (
        set(await every_page(rest_lister(http_client(orchestrator, token=ACME)), 10, _nothing))
        == mine
    )
    assert (
        await every_page(rest_lister(http_client(orchestrator, token=GLOBEX)), 10, _nothing) == []
    )


async def test_what_is_not_a_page_is_refused(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    for _ in range(3):
        await create_job(http, "jobs/echo")
    first = await (await http.get("/api/v1/jobs", params={"page_size": "1"})).json()
    token = first["next_page_token"]
    assert token
    for query, field in (
        ({"page_size": "501"}, "page_size"),
        ({"page_size": "-1"}, "page_size"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"page_token": token[:-3] + "AAA"}, "page_token"),
        ({"page_token": token, "blueprint": "echo"}, "page_token"),  # other filters
        ({"statuses": "done"}, "statuses"),
        ({"created_after_ms": "yesterday"}, "created_after_ms"),
    ):
        response = await http.get("/api/v1/jobs", params=query)
        body = await response.json()
        assert response.status == 400, (query, body)
        assert field in body["error"]

    stub = job_service_pb2_grpc.JobServiceStub(grpc_channel(orchestrator))
    for request, field in (
        (ListJobsRequest(page_size=501), "page_size"),
        (ListJobsRequest(page_token="forged"), "page_token"),
        (ListJobsRequest(page_token=token, blueprint="echo"), "page_token"),
        # A proto3 enum is open: a number no status has still arrives.
        (ListJobsRequest(statuses=[job_pb2.JobStatus.ValueType(99)]), "statuses"),
        (ListJobsRequest(statuses=[job_pb2.JOB_STATUS_UNSPECIFIED]), "statuses"),
        (ListJobsRequest(created_after_ms=-1), "created_after_ms"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListJobs(request, metadata=GRPC_AUTH)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (refused.value.details() or "")


async def test_blueprints_are_listed_over_both_transports(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint("zeta"), echo_blueprint("alpha")])
    body = await (await http_client(orchestrator).get("/api/v1/blueprints")).json()
    assert [bp["name"] for bp in body["blueprints"]] == ["alpha", "zeta"]
    alpha = body["blueprints"][0]
    assert alpha["route"] == "/api/v1/jobs/alpha"
    assert alpha["start_state"] in alpha["states"]
    assert set(alpha["end_states"]) <= set(alpha["states"])
    stub = job_service_pb2_grpc.JobServiceStub(grpc_channel(orchestrator))
    listed = (await stub.ListBlueprints(ListBlueprintsRequest(), metadata=GRPC_AUTH)).blueprints
    assert [
        {
            "name": bp.name,
            "route": bp.route,
            "states": list(bp.states),
            "start_state": bp.start_state,
            "end_states": list(bp.end_states),
            "input_schema": from_payload(bp.input_schema) if bp.input_schema.data else None,
        }
        for bp in listed
    ] == body["blueprints"]


async def test_after_a_debug_flush_the_listing_is_empty_and_goes_on(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], debug_flush_enabled=True)
    http = http_client(orchestrator)
    for _ in range(3):
        await create_job(http, "jobs/echo")
    flushed = await http_client(orchestrator, token=None).post("/_public/debug/flush_db")
    assert flushed.status == 200
    assert await every_page(rest_lister(http), 10, _nothing) == []
    job_id = await create_job(http, "jobs/echo")
    assert await every_page(rest_lister(http), 10, _nothing) == [job_id]
