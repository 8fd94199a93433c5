"""Rate limits and monthly quotas in Redis: two orchestrator instances on one
Redis share one limit, over real HTTP; the counters expire; a Redis outage
is a 503, not a free pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from avtomatika import OrchestratorEngine
from avtomatika.clock import now_ms, utc_month
from avtomatika.limits.redis import RedisLimits
from avtomatika.storage.redis import Keys
from tests.support import create_job
from tests.support.blueprints import echo_blueprint
from tests.support.limits import ACME, ms, refused
from tests.support.orchestrator import HttpClient, StartOrchestrator, make_settings
from tests.support.redis import RedisServer

PERIOD_SECONDS = 60.0  # long: nothing in these tests waits for the window to slide


@pytest.fixture
async def limits(redis_url: str) -> AsyncIterator[RedisLimits]:
    opened = await RedisLimits.open(
        make_settings(redis_url=redis_url, rate_limit_limit=2, rate_limit_period=PERIOD_SECONDS)
    )
    yield opened
    await opened.close()


def clients_file(tmp_path: Path, quota: int | None = None) -> Path:
    path = tmp_path / "clients.toml"
    extra = f"monthly_attempts = {quota}\n" if quota is not None else ""
    path.write_text(f'[acme]\ntoken = "{ACME}"\n{extra}')
    return path


async def two_instances(
    start_orchestrator: StartOrchestrator, redis_url: str, tmp_path: Path, **settings: object
) -> tuple[OrchestratorEngine, OrchestratorEngine]:
    path = clients_file(tmp_path, settings.pop("quota", None))  # type: ignore[arg-type]
    started = [
        await start_orchestrator(
            [echo_blueprint()], redis_url=redis_url, clients_config_path=path, **settings
        )
        for _ in range(2)
    ]
    return started[0], started[1]


async def test_two_instances_share_one_rate_limit(
    redis_url: str, start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    a, b = await two_instances(
        start_orchestrator,
        redis_url,
        tmp_path,
        rate_limiting_enabled=True,
        rate_limit_limit=4,
        rate_limit_period=PERIOD_SECONDS,
    )
    on_a, on_b = http_client(a, token=ACME), http_client(b, token=ACME)
    for http in (on_a, on_b, on_a, on_b):
        assert (await http.get("/api/v1/workers")).status == 200

    retry_after = await refused(await on_a.get("/api/v1/workers"))
    await refused(await on_b.get("/api/v1/workers"))

    assert 1 <= retry_after <= PERIOD_SECONDS
    # Another client has its own window, on either instance.
    assert (await http_client(b).get("/api/v1/workers")).status == 200


async def test_two_instances_share_one_monthly_quota(
    redis_url: str,
    raw: aioredis.Redis,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    tmp_path: Path,
) -> None:
    a, b = await two_instances(start_orchestrator, redis_url, tmp_path, quota=3)
    on_a, on_b = http_client(a, token=ACME), http_client(b, token=ACME)
    # Failed creations give their attempt back, on either instance.
    assert (await on_a.post("/api/v1/jobs/echo", json={"initial_data": 3})).status == 400
    assert (await on_b.post("/api/v1/jobs/nope", json={})).status == 404
    await create_job(on_a, "jobs/echo")
    await create_job(on_b, "jobs/echo")
    await create_job(on_a, "jobs/echo")

    await refused(await on_b.post("/api/v1/jobs/echo", json={}))
    await refused(await on_a.post("/api/v1/jobs/echo", json={}))

    key = Keys().quota("acme", utc_month(now_ms()))
    assert int(await raw.get(key) or 0) == 3
    assert await raw.pttl(key) > 0  # the counter goes once its month is over


async def test_refused_requests_are_not_recorded_and_the_window_expires(
    limits: RedisLimits, raw: aioredis.Redis
) -> None:
    assert await limits.acquire("acme") == 0.0
    assert await limits.acquire("acme") == 0.0
    for _ in range(5):
        wait = await limits.acquire("acme")
        assert 0 < wait <= PERIOD_SECONDS
    key = Keys().rate("acme")
    assert await raw.zcard(key) == 2
    assert 0 < await raw.pttl(key) <= (PERIOD_SECONDS + 1) * 1000
    assert await limits.acquire("globex") == 0.0


async def test_the_quota_counts_per_month_and_never_below_zero(
    limits: RedisLimits, raw: aioredis.Redis
) -> None:
    # Months to come: a counter of a month already over would expire at once.
    january, february = ms(2040, 1, 31, 23), ms(2040, 2, 1)
    assert await limits.take("acme", 1, january)
    assert not await limits.take("acme", 1, january)
    assert await limits.take("acme", 1, february)  # a new month, a new count
    await limits.give_back("acme", january)
    await limits.give_back("acme", january)  # one more than was taken
    assert int(await raw.get(Keys().quota("acme", "2040-01")) or 0) == 0
    assert await limits.take("acme", 1, january)


async def test_a_redis_outage_is_503_then_limits_apply_again(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    server = RedisServer()
    server.start()
    try:
        orchestrator = await start_orchestrator(
            [echo_blueprint()],
            redis_url=server.url,
            clients_config_path=clients_file(tmp_path, quota=5),
            rate_limiting_enabled=True,
            rate_limit_limit=100,
        )
        http = http_client(orchestrator, token=ACME)
        server.stop()

        response = await http.get("/api/v1/workers")

        assert response.status == 503
        assert "Redis" in (await response.json())["error"]
        server.start()
        await create_job(http, "jobs/echo")
    finally:
        server.close()
