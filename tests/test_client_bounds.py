"""Per-client bounds (issue 17, finding 9): jobs in flight (429) and stored
bytes (413) per client, from ``CLIENT_MAX_JOBS_IN_FLIGHT`` /
``CLIENT_MAX_STORED_BYTES`` or the client's own table in ``clients.toml``,
over REST and gRPC, on the embedded store and on Redis. Concurrent
creations at a bound never overshoot it nor stop short of it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from avtomatika.errors import ConfigError
from tests.support import create_job
from tests.support.blueprints import echo_blueprint
from tests.support.client_api import TRANSPORTS, ApiError, ConnectApi
from tests.support.limits import ACME
from tests.support.orchestrator import HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores

KB20 = {"blob": "x" * 20_000}


async def statuses(responses: list[aiohttp.ClientResponse]) -> list[int]:
    return sorted(response.status for response in responses)


async def test_concurrent_creations_at_the_jobs_in_flight_bound_accept_exactly_n(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """Finding 9: 30 creations at once against a bound of 5 (no worker, so
    no job ends): exactly 5 are accepted, the others are 429 JSON naming the
    bound; a job that ends makes room for one more."""
    orchestrator = await start_orchestrator([echo_blueprint()], client_max_jobs_in_flight=5)
    http = http_client(orchestrator)
    responses = await asyncio.gather(
        *(http.post("/api/v1/jobs/echo", json={"initial_data": {}}) for _ in range(30))
    )
    assert await statuses(list(responses)) == [202] * 5 + [429] * 25
    accepted = [await r.json() for r in responses if r.status == 202]
    for response in responses:
        if response.status == 429:
            body: dict[str, Any] = await response.json()
            assert "CLIENT_MAX_JOBS_IN_FLIGHT" in body["error"]
            assert "5 jobs in flight" in body["error"]
    cancelled = await http.post(f"/api/v1/jobs/{accepted[0]['job_id']}/cancel")
    assert cancelled.status == 200, await cancelled.text()
    await create_job(http, "jobs/echo")
    assert (await http.post("/api/v1/jobs/echo", json={})).status == 429


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_both_transports_refuse_over_either_bound(
    start_orchestrator: StartOrchestrator, connect_api: ConnectApi, transport: str
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], client_max_jobs_in_flight=3, client_max_stored_bytes=50_000
    )
    api = connect_api(transport, orchestrator)
    await api.create("jobs/echo", KB20)
    await api.create("jobs/echo", KB20)
    with pytest.raises(ApiError) as too_big:
        await api.create("jobs/echo", KB20)
    assert too_big.value.kind == "resource_exhausted"
    assert "CLIENT_MAX_STORED_BYTES" in too_big.value.message
    await api.create("jobs/echo", {})
    with pytest.raises(ApiError) as too_many:
        await api.create("jobs/echo", {})
    assert too_many.value.kind == "resource_exhausted"
    assert "CLIENT_MAX_JOBS_IN_FLIGHT" in too_many.value.message


async def test_concurrent_creations_at_the_stored_bytes_bound_are_413(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """Finding 9: 10 creations of 20 kB at once against 50 kB: two fit, the
    others are 413 JSON; what the client stores stays within the bound."""
    orchestrator = await start_orchestrator([echo_blueprint()], client_max_stored_bytes=50_000)
    http = http_client(orchestrator)
    responses = await asyncio.gather(
        *(http.post("/api/v1/jobs/echo", json={"initial_data": KB20}) for _ in range(10))
    )
    assert await statuses(list(responses)) == [202] * 2 + [413] * 8
    refusal = next(r for r in responses if r.status == 413)
    assert refusal.content_type == "application/json"
    assert "50000 bytes" in (await refusal.json())["error"]
    usage = await orchestrator.engine.storage.client_usage("default")
    assert 40_000 < usage.stored_bytes <= 50_000
    assert usage.jobs_in_flight == 2


async def test_a_clients_own_bounds_in_clients_toml_win_over_the_defaults(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[acme]\ntoken = "{ACME}"\nmax_jobs_in_flight = 1\nmax_stored_bytes = 0\n')
    orchestrator = await start_orchestrator(
        [echo_blueprint()], clients_config_path=path, client_max_jobs_in_flight=3
    )
    acme, default = http_client(orchestrator, token=ACME), http_client(orchestrator)
    await create_job(acme, "jobs/echo", KB20)
    refused = await acme.post("/api/v1/jobs/echo", json={})
    assert refused.status == 429
    assert "acme" in (await refused.json())["error"]
    for _ in range(3):  # the default client keeps its own count
        await create_job(default, "jobs/echo")
    assert (await default.post("/api/v1/jobs/echo", json={})).status == 429


@pytest.mark.parametrize("value", ["-1", '"many"', "true", "1.5"])
async def test_a_bad_bound_in_clients_toml_stops_start_up(
    start_orchestrator: StartOrchestrator, tmp_path: Path, value: str
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[acme]\ntoken = "{ACME}"\nmax_stored_bytes = {value}\n')
    with pytest.raises(ConfigError, match="'max_stored_bytes' must be an integer >= 0"):
        await start_orchestrator([echo_blueprint()], clients_config_path=path)


async def test_negative_default_bounds_stop_start_up(start_orchestrator: StartOrchestrator) -> None:
    with pytest.raises(ConfigError, match="CLIENT_MAX_JOBS_IN_FLIGHT must be >= 0"):
        await start_orchestrator([], client_max_jobs_in_flight=-1)
