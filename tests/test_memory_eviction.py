"""The embedded store forgets ended jobs by size as well as by age (issue
17, finding 9): past ``JOB_RETENTION_MAX_BYTES`` of ended job records, the
oldest ended jobs go first (404 afterwards), the client's stored bytes
shrink with them, and ``avtomatika_jobs_evicted_total{reason="size"}``
counts them. Jobs not yet ended are never evicted."""

from __future__ import annotations

import re

from tests.support import create_job, get_job, wait_for_status
from tests.support.blueprints import echo_blueprint, instant_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator

KB10 = {"blob": "x" * 10_000}


async def test_ended_jobs_over_the_byte_budget_are_evicted_oldest_first(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator(
        [instant_blueprint(), echo_blueprint()], job_retention_max_bytes=35_000
    )
    http = http_client(orchestrator)
    waiting = await create_job(http, "jobs/echo", KB10)  # no worker: never ends
    ended = []
    for _ in range(10):
        job_id = await create_job(http, "jobs/instant", KB10)
        await wait_for_status(http, job_id, "finished")
        ended.append(job_id)

    assert (await http.get(f"/api/v1/jobs/{ended[0]}")).status == 404
    await get_job(http, ended[-1])
    kept = [j for j in ended if (await http.get(f"/api/v1/jobs/{j}")).status == 200]
    assert kept == ended[-len(kept) :]  # the newest stay
    assert 2 <= len(kept) <= 4  # 35 kB of ~10 kB records
    assert (await get_job(http, waiting))["status"] == "waiting_for_worker"

    usage = await orchestrator.engine.storage.client_usage("default")
    assert usage.stored_bytes < (len(kept) + 1) * 11_000
    metrics = await (await http.get("/_public/metrics")).text()
    found = re.search(r'^avtomatika_jobs_evicted_total\{reason="size"\} (\S+)$', metrics, re.M)
    assert found is not None, metrics
    assert float(found.group(1)) == len(ended) - len(kept)


async def test_without_a_byte_budget_ended_jobs_stay_until_their_age(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([instant_blueprint()], job_retention_max_bytes=0)
    http = http_client(orchestrator)
    ended = [await create_job(http, "jobs/instant", KB10) for _ in range(5)]
    for job_id in ended:
        await wait_for_status(http, job_id, "finished")
    metrics = await (await http.get("/_public/metrics")).text()
    assert 'avtomatika_jobs_evicted_total{reason="size"} 0.0' in metrics
