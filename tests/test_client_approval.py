"""A job waiting for a person, seen and decided by its owner: the job JSON's
``approval`` (what the wait asks), ``POST /api/v1/jobs/{id}/approve`` and
``JobService.ApproveJob`` with the client token, who decided in the history's
``approval_received``, and the listing's counts per status."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from avtomatika import OrchestratorEngine
from tests.support import create_job, wait_for_status
from tests.support.blueprints import approval_blueprint, echo_blueprint
from tests.support.client_api import TRANSPORTS, Api, ApiError, ConnectApi, reaches
from tests.support.orchestrator import (
    OTHER_CLIENT_TOKEN,
    HttpClient,
    StartOrchestrator,
    with_other_client,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.both_stores


RACE_ROUNDS = 10


async def start(start_orchestrator: StartOrchestrator, tmp_path: Path) -> OrchestratorEngine:
    return await start_orchestrator(
        [approval_blueprint("sign_off", approved="shipped", rejected="dropped"), echo_blueprint()],
        **with_other_client(tmp_path),
    )


async def refused(api: Api, job_id: str, decision: str, kind: str) -> str:
    with pytest.raises(ApiError) as error:
        await api.decide(job_id, decision)
    assert error.value.kind == kind, error.value
    return error.value.message


async def approvals_received(http: aiohttp.ClientSession, job_id: str) -> list[dict[str, Any]]:
    """The details of the job's ``approval_received`` events, once there is one."""

    async def recorded() -> list[dict[str, Any]] | None:
        events = await (await http.get(f"/api/v1/jobs/{job_id}/history")).json()
        found = [e["details"] for e in events if e["type"] == "approval_received"]
        return found or None

    return await wait_until(recorded, message=f"job {job_id} has its decision in its history")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_owner_sees_what_the_wait_asks_and_decides(
    transport: str,
    start_orchestrator: StartOrchestrator,
    connect_api: ConnectApi,
    http_client: HttpClient,
    tmp_path: Path,
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    api = connect_api(transport, orchestrator)
    job_id = await api.create("jobs/sign_off")
    waiting = await reaches(api, job_id, "waiting_for_human")
    assert waiting["approval"] == {
        "integration": "console",
        "message": "ship it?",
        "decisions": ["approved", "rejected"],
        "expires_at_ms": None,
    }

    assert "'approved', 'rejected'" in await refused(api, job_id, "maybe", "invalid_argument")
    await refused(api, job_id, "", "invalid_argument")
    await refused(api, "no-such-job", "approved", "not_found")
    await refused(api.as_client(OTHER_CLIENT_TOKEN), job_id, "approved", "not_found")
    assert (await api.get(job_id))["status"] == "waiting_for_human"  # none of them decided

    decided = await api.decide(job_id, "rejected")
    assert decided["id"] == job_id
    assert decided["approval"] is None
    assert decided["approval_token"] is None
    job = await reaches(api, job_id, "finished")
    assert (job["current_state"], job["approval"]) == ("dropped", None)
    # Decided: there is nothing left to decide.
    assert "not waiting" in await refused(api, job_id, "approved", "failed_precondition")
    http = http_client(orchestrator)
    assert await approvals_received(http, job_id) == [
        {"decision": "rejected", "decided_by": "client:default"}
    ]


async def test_the_public_webhook_still_decides_and_is_recorded_as_such(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/sign_off")
    await wait_for_status(http, job_id, "waiting_for_human")
    public = http_client(orchestrator, None)
    response = await public.post(
        f"/_public/webhooks/approval/{job_id}", json={"decision": "approved"}
    )
    assert response.status == 200, await response.text()
    assert (await wait_for_status(http, job_id, "finished"))["current_state"] == "shipped"
    assert await approvals_received(http, job_id) == [
        {"decision": "approved", "decided_by": "approval_webhook"}
    ]


async def test_bad_approve_bodies_are_refused(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/sign_off")
    await wait_for_status(http, job_id, "waiting_for_human")
    for body in (b"", b"[]", b"{", b'{"decision": 3}', b'{"decision": "timeout"}'):
        response = await http.post(f"/api/v1/jobs/{job_id}/approve", data=body)
        answer = await response.json()
        assert (response.status, list(answer)) == (400, ["error"]), (body, answer)
    other = http_client(orchestrator, OTHER_CLIENT_TOKEN)
    response = await other.post(f"/api/v1/jobs/{job_id}/approve", json={"decision": "approved"})
    assert response.status == 404
    running = await create_job(http, "jobs/echo")
    response = await http.post(f"/api/v1/jobs/{running}/approve", json={"decision": "approved"})
    assert (response.status, (await response.json())["error"]) == (
        409,
        f"job {running!r} is waiting_for_worker, not waiting for a human decision",
    )


async def test_of_two_decisions_racing_exactly_one_is_taken(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    http = http_client(orchestrator)
    public = http_client(orchestrator, None)
    for _ in range(RACE_ROUNDS):
        job_id = await create_job(http, "jobs/sign_off")
        await wait_for_status(http, job_id, "waiting_for_human")
        owner, webhook = await asyncio.gather(
            http.post(f"/api/v1/jobs/{job_id}/approve", json={"decision": "approved"}),
            public.post(f"/_public/webhooks/approval/{job_id}", json={"decision": "rejected"}),
        )
        assert sorted((owner.status, webhook.status)) == [200, 409]
        job = await wait_for_status(http, job_id, "finished")
        assert job["current_state"] == ("shipped" if owner.status == 200 else "dropped")
        [received] = await approvals_received(http, job_id)
        winner = "client:default" if owner.status == 200 else "approval_webhook"
        assert received["decided_by"] == winner


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_listing_counts_the_callers_jobs_per_status(
    transport: str,
    start_orchestrator: StartOrchestrator,
    connect_api: ConnectApi,
    tmp_path: Path,
) -> None:
    orchestrator = await start(start_orchestrator, tmp_path)
    api, other = (
        connect_api(transport, orchestrator),
        connect_api(transport, orchestrator, OTHER_CLIENT_TOKEN),
    )
    empty = await api.counts()
    assert set(empty) == {
        "pending", "running", "waiting_for_worker", "waiting_for_human",
        "waiting_for_parallel_tasks", "waiting_for_sub_job", "finished", "failed",
        "cancelled", "error", "quarantined",
    }  # fmt: skip
    assert set(empty.values()) == {0}

    asking = [await api.create("jobs/sign_off") for _ in range(3)]
    queued = await api.create("jobs/echo")
    await other.create("jobs/echo")  # another client's: never counted here
    for job_id in asking:
        await reaches(api, job_id, "waiting_for_human")
    await reaches(api, queued, "waiting_for_worker")
    await api.decide(asking[0], "approved")
    await reaches(api, asking[0], "finished")
    await api.cancel(queued)

    counts = await api.counts()
    assert {name: n for name, n in counts.items() if n} == {
        "waiting_for_human": 2,
        "finished": 1,
        "cancelled": 1,
    }
    # Whatever the filters: they select the page, the counts are the client's.
    ids, _ = await api.list_jobs(statuses=["finished"])
    assert ids == [asking[0]]
    assert (await other.counts())["waiting_for_worker"] == 1
