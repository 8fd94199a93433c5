"""Rate limits per client (a sliding window) and monthly job quotas: 429 JSON
with Retry-After over real HTTP, and the counters' arithmetic with a fake
clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from avtomatika import OrchestratorEngine
from avtomatika.clock import now_ms
from avtomatika.errors import RateLimited
from avtomatika.limits.client_limits import MonthlyQuota, RateLimiter, seconds_until_next_month
from tests.support import create_job
from tests.support.blueprints import echo_blueprint
from tests.support.limits import ACME, ms, refused
from tests.support.orchestrator import HttpClient, StartOrchestrator

GLOBEX = "globex-token-9876543210"


@pytest.fixture
async def limited(start_orchestrator: StartOrchestrator, tmp_path: Path) -> OrchestratorEngine:
    path = tmp_path / "clients.toml"
    path.write_text(f'[acme]\ntoken = "{ACME}"\n[globex]\ntoken = "{GLOBEX}"\n')
    return await start_orchestrator(
        [echo_blueprint()],
        clients_config_path=path,
        rate_limiting_enabled=True,
        rate_limit_limit=3,
        rate_limit_period=1.0,
    )


async def test_over_the_rate_limit_is_429_until_the_window_slides(
    limited: OrchestratorEngine, http_client: HttpClient
) -> None:
    acme = http_client(limited, token=ACME)
    for _ in range(3):
        assert (await acme.get("/api/v1/workers")).status == 200
    retry_after = await refused(await acme.get("/api/v1/workers"))
    assert retry_after == 1  # the window is one second long
    # Refused requests are not counted: the client that waits as told is served.
    await asyncio.sleep(retry_after)
    assert (await acme.get("/api/v1/workers")).status == 200


async def test_each_client_token_has_its_own_window(
    limited: OrchestratorEngine, http_client: HttpClient
) -> None:
    acme, globex = http_client(limited, token=ACME), http_client(limited, token=GLOBEX)
    for _ in range(3):
        assert (await acme.get("/api/v1/workers")).status == 200
    await refused(await acme.post("/api/v1/jobs/echo", json={}))
    assert (await globex.get("/api/v1/workers")).status == 200


async def test_public_and_unauthenticated_requests_are_not_counted(
    limited: OrchestratorEngine, http_client: HttpClient
) -> None:
    public = http_client(limited, token=None)
    for _ in range(5):
        assert (await public.get("/_public/status")).status == 200
        assert (await public.get("/api/v1/workers")).status == 401
    assert (await http_client(limited, token=ACME).get("/api/v1/workers")).status == 200


async def test_without_rate_limiting_nothing_is_refused(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], rate_limit_limit=1)
    http = http_client(orchestrator)
    for _ in range(5):
        assert (await http.get("/api/v1/workers")).status == 200


async def test_the_monthly_quota_counts_job_creations_only(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[acme]\ntoken = "{ACME}"\nmonthly_attempts = 2\n')
    orchestrator = await start_orchestrator([echo_blueprint()], clients_config_path=path)
    acme = http_client(orchestrator, token=ACME)
    # A creation that fails (bad body, unknown blueprint) gives its attempt back.
    assert (await acme.post("/api/v1/jobs/echo", json={"initial_data": 3})).status == 400
    assert (await acme.post("/api/v1/jobs/nope", json={})).status == 404
    first = await create_job(acme, "jobs/echo")
    await create_job(acme, "jobs/echo")
    before = seconds_until_next_month(now_ms())
    retry_after = await refused(await acme.post("/api/v1/jobs/echo", json={}))
    after = seconds_until_next_month(now_ms())
    assert after <= retry_after <= before
    # Reading does not consume the quota, and other clients are not affected.
    for _ in range(3):
        assert (await acme.get(f"/api/v1/jobs/{first}")).status == 200
    await create_job(http_client(orchestrator), "jobs/echo")  # CLIENT_TOKEN: no quota


def test_the_rate_window_slides() -> None:
    now = [100.0]
    limiter = RateLimiter(limit=2, period=10.0, clock=lambda: now[0])
    assert limiter.acquire("a") == 0.0
    now[0] = 104.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(6.0)  # until the first leaves
    assert limiter.acquire("b") == 0.0
    now[0] = 110.0
    assert limiter.acquire("a") == 0.0  # the first left; the second is still in
    assert limiter.acquire("a") == pytest.approx(4.0)


def test_retry_after_for_the_quota_is_the_start_of_next_month_utc() -> None:
    assert seconds_until_next_month(ms(2025, 12, 31, 23, 59, 30)) == 30
    assert seconds_until_next_month(ms(2025, 2, 1)) == 28 * 86400
    assert seconds_until_next_month(ms(2024, 2, 29, 23, 59, 59) + 999) == 1


def test_the_quota_renews_each_month_and_gives_back_failed_attempts() -> None:
    now = [ms(2025, 1, 31, 12)]
    quota = MonthlyQuota({"acme": 1}, clock=lambda: now[0])
    give_back = quota.take("acme")
    with pytest.raises(RateLimited) as caught:
        quota.take("acme")
    assert caught.value.retry_after_seconds == 12 * 3600
    give_back()
    quota.take("acme")
    now[0] = ms(2025, 2, 1)
    assert quota.used("acme") == 0
    quota.take("acme")
    quota.take("unlimited")
    quota.take("unlimited")
