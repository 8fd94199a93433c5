"""The approval webhook's stricter mode: with APPROVAL_TOKEN_REQUIRED the call
must carry the token issued for that wait, which only the job's owner sees
in the job JSON, and only while the job waits."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from avtomatika import ActionFactory, OrchestratorEngine, StateMachineBlueprint
from tests.support import create_job, get_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator


def review() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("review", api_endpoint="jobs/review", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.await_human_approval(
            "email", "publish?", {"approved": "published", "rejected": "dropped"}
        )

    @bp.handler_for("published", is_end=True, outcome="finished")
    @bp.handler_for("dropped", is_end=True, outcome="finished")
    async def end() -> None:
        return None

    return bp


async def approve(
    orchestrator: OrchestratorEngine,
    job_id: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """The public webhook, called without any client token."""
    async with aiohttp.ClientSession(f"http://127.0.0.1:{orchestrator.rest_port}") as public:
        url = f"/_public/webhooks/approval/{job_id}"
        response = await public.post(url, json=body, headers=headers)
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def waiting_job(orchestrator: OrchestratorEngine, http: aiohttp.ClientSession) -> str:
    job_id = await create_job(http, "jobs/review")
    await wait_for_status(http, job_id, "waiting_for_human")
    return job_id


async def test_the_owner_sees_the_token_only_while_the_job_waits(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([review()])
    http = http_client(orchestrator)
    first, second = [await waiting_job(orchestrator, http) for _ in range(2)]
    tokens = [(await get_job(http, job_id))["approval_token"] for job_id in (first, second)]
    assert all(isinstance(token, str) and len(token) >= 24 for token in tokens)
    assert tokens[0] != tokens[1]
    # Not required by default: the documented call works as before.
    assert await approve(orchestrator, first, {"decision": "approved"}) == (
        200,
        {"status": "approval_received", "job_id": first},
    )
    job = await wait_for_status(http, first, "finished")
    assert "approval_token" not in job
    assert job["current_state"] == "published"


async def test_required_mode_refuses_a_missing_or_wrong_token(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([review()], approval_token_required=True)
    http = http_client(orchestrator)
    job_id = await waiting_job(orchestrator, http)
    other_job = await waiting_job(orchestrator, http)
    others_token = (await get_job(http, other_job))["approval_token"]
    for body, headers in [
        ({"decision": "approved"}, None),
        ({"decision": "approved", "token": ""}, None),
        ({"decision": "approved", "token": others_token}, None),
        ({"decision": "approved"}, {"X-Approval-Token": others_token}),
    ]:
        status, reply = await approve(orchestrator, job_id, body, headers)
        assert status == 401
        assert "approval token" in reply["error"]
    status, reply = await approve(orchestrator, job_id, {"decision": "approved", "token": 7})
    assert status == 400
    assert (await get_job(http, job_id))["status"] == "waiting_for_human"


@pytest.mark.parametrize("carrier", ["header", "body"])
async def test_required_mode_accepts_the_token_of_the_wait(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, carrier: str
) -> None:
    orchestrator = await start_orchestrator([review()], approval_token_required=True)
    http = http_client(orchestrator)
    job_id = await waiting_job(orchestrator, http)
    token = (await get_job(http, job_id))["approval_token"]
    body: dict[str, Any] = {"decision": "maybe"}
    headers = {"X-Approval-Token": token} if carrier == "header" else None
    if carrier == "body":
        body["token"] = token
    status, _ = await approve(orchestrator, job_id, body, headers)
    assert status == 400  # a valid token does not make any decision valid
    body["decision"] = "rejected"
    assert (await approve(orchestrator, job_id, body, headers))[0] == 200
    job = await wait_for_status(http, job_id, "finished")
    assert job["current_state"] == "dropped"
    # The token was for that wait only: the job no longer waits, so 409.
    assert (await approve(orchestrator, job_id, body, headers))[0] == 409
    assert (await approve(orchestrator, "no-such-job", body, headers))[0] == 404
