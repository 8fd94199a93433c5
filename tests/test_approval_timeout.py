"""A wait for a person with a timeout (``await_human_approval(...,
timeout=seconds)``): the ``timeout`` transition is taken when nobody decides
in time, recorded as decided by ``timeout``; a decision arriving at the same
moment races it and exactly one wins; the deadline is stored, so a restarted
orchestrator on Redis still takes it. A blueprint that waits with a timeout
but has no ``timeout`` transition is refused when it is defined. When a job
starts waiting, a ``job_waiting_for_human`` webhook says what it asks."""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.clock import now_ms
from avtomatika.errors import BlueprintError
from tests.support import create_job, get_job, wait_for_status
from tests.support.blueprints import approval_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.waiting import wait_until
from tests.support.webhooks import FAST_RETRIES, Receiver, create_job_with_webhook

RACE_ROUNDS = 12


async def decisions_recorded(http: aiohttp.ClientSession, job_id: str) -> list[dict[str, Any]]:
    """The details of the job's ``approval_received`` events, once it has one."""

    async def recorded() -> list[dict[str, Any]] | None:
        events = await (await http.get(f"/api/v1/jobs/{job_id}/history")).json()
        found = [e["details"] for e in events if e["type"] == "approval_received"]
        return found or None

    return await wait_until(recorded, message=f"job {job_id} has a decision in its history")


def expires_at_ms(job: dict[str, Any]) -> int:
    return round(datetime.fromisoformat(job["approval"]["expires_at"]).timestamp() * 1000)


@pytest.mark.both_stores
async def test_nobody_deciding_in_time_takes_the_timeout_transition(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([approval_blueprint(timeout=0.3)])
    http = http_client(orchestrator)
    before = now_ms()
    job_id = await create_job(http, "jobs/review")
    waiting = await wait_for_status(http, job_id, "waiting_for_human")
    assert waiting["approval"]["decisions"] == ["approved", "rejected"]
    assert before + 300 <= expires_at_ms(waiting) <= now_ms() + 300
    # "timeout" is the blueprint's to take, nobody's decision.
    response = await http.post(f"/api/v1/jobs/{job_id}/approve", json={"decision": "timeout"})
    assert response.status == 400

    job = await wait_for_status(http, job_id, "failed")
    assert (job["current_state"], job["error"]) == ("expired", None)
    assert await decisions_recorded(http, job_id) == [
        {"decision": "timeout", "decided_by": "timeout"}
    ]


@pytest.mark.both_stores
async def test_a_decision_racing_the_timeout_leaves_exactly_one_outcome(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([approval_blueprint(timeout=0.2)])
    http = http_client(orchestrator)
    winners = set()
    for round_ in range(RACE_ROUNDS):
        job_id = await create_job(http, "jobs/review")
        waiting = await wait_for_status(http, job_id, "waiting_for_human")
        # Aim the decision at the deadline, a little before or after it.
        aim = expires_at_ms(waiting) + (round_ % 5 - 2) * 2
        await asyncio.sleep(max(aim - now_ms(), 0) / 1000)
        response = await http.post(f"/api/v1/jobs/{job_id}/approve", json={"decision": "approved"})
        assert response.status in (200, 409), await response.text()
        job = await wait_until(functools.partial(_ended, http, job_id), message="it ends")
        [decided] = await decisions_recorded(http, job_id)
        if response.status == 200:
            assert (job["status"], job["current_state"]) == ("finished", "finished")
            assert decided == {"decision": "approved", "decided_by": "client:default"}
        else:
            assert (job["status"], job["current_state"]) == ("failed", "expired")
            assert decided == {"decision": "timeout", "decided_by": "timeout"}
        winners.add(decided["decided_by"])
    assert winners <= {"client:default", "timeout"}


async def _ended(http: aiohttp.ClientSession, job_id: str) -> dict[str, Any] | None:
    job = await get_job(http, job_id)
    return job if job["status"] in ("finished", "failed") else None


async def test_a_stored_deadline_expires_after_the_orchestrator_restarts(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, redis_url: str
) -> None:
    first = await start_orchestrator([approval_blueprint(timeout=3.0)], redis_url=redis_url)
    http = http_client(first)
    job_id = await create_job(http, "jobs/review")
    waiting = await wait_for_status(http, job_id, "waiting_for_human")
    await first.stop()  # its timers die with it
    assert expires_at_ms(waiting) > now_ms()  # stopped before its deadline

    second = await start_orchestrator([approval_blueprint(timeout=3.0)], redis_url=redis_url)
    http = http_client(second)
    assert (await get_job(http, job_id))["status"] == "waiting_for_human"
    job = await wait_for_status(http, job_id, "failed")
    assert job["current_state"] == "expired"
    assert await decisions_recorded(http, job_id) == [
        {"decision": "timeout", "decided_by": "timeout"}
    ]


async def test_a_decision_made_in_time_leaves_no_deadline_behind(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    redis_url: str,
    raw: aioredis.Redis,
) -> None:
    # On a shared store, the deadline of a wait that was decided is gone: it
    # never fires on this or any instance.
    orchestrator = await start_orchestrator([approval_blueprint(timeout=0.5)], redis_url=redis_url)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/review")
    await wait_for_status(http, job_id, "waiting_for_human")
    armed = f"approval:{job_id}".encode()
    assert await raw.zscore("{avtomatika}:timers", armed) is not None
    response = await http.post(f"/api/v1/jobs/{job_id}/approve", json={"decision": "rejected"})
    assert response.status == 200
    assert await raw.zscore("{avtomatika}:timers", armed) is None
    assert (await wait_for_status(http, job_id, "finished"))["current_state"] == "rejected"


@pytest.mark.parametrize(
    "transitions",
    [{"approved": "done"}, {"approved": "done", "late": "done"}],
    ids=["one decision", "two decisions"],
)
async def test_a_timeout_without_a_timeout_transition_is_refused_at_definition(
    start_orchestrator: StartOrchestrator, transitions: dict[str, str]
) -> None:
    bp = StateMachineBlueprint("hasty", api_endpoint="jobs/hasty", api_version="v1")

    @bp.handler_for("ask", is_start=True)
    async def ask(actions: ActionFactory) -> None:
        actions.await_human_approval("slack", "ok?", {"approved": "done"}, timeout=60)

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([])
    with pytest.raises(BlueprintError) as refused:
        orchestrator.register_blueprint(bp)
    assert refused.value.message == (
        "blueprint 'hasty': state 'ask' waits for a human with a timeout but has no "
        "'timeout' transition to take when it passes"
    )
    # Called anyway (transitions the reading cannot see), the action says so.
    with pytest.raises(BlueprintError, match="needs a 'timeout' transition"):
        ActionFactory().await_human_approval("slack", "ok?", transitions, timeout=60)
    for bad in (0, -1, float("inf"), "60", True):
        with pytest.raises(BlueprintError, match="timeout must be"):
            ActionFactory().await_human_approval("slack", "ok?", {"timeout": "done"}, timeout=bad)  # type: ignore[arg-type]


@pytest.mark.both_stores
async def test_a_job_that_starts_waiting_sends_job_waiting_for_human(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, receiver: Receiver
) -> None:
    orchestrator = await start_orchestrator(
        [approval_blueprint("sign_off", timeout=60)], **FAST_RETRIES
    )
    http = http_client(orchestrator)
    job_id = await create_job_with_webhook(http, "jobs/sign_off", receiver.url, {"n": 1})
    request = await receiver.next()
    assert request.headers["X-Avtomatika-Event"] == "job_waiting_for_human"
    body = request.json()
    waiting = await get_job(http, job_id)
    assert body == {
        "event": "job_waiting_for_human",
        "job_id": job_id,
        "status": "waiting_for_human",
        "result": {},
        "error": None,
        "approval": waiting["approval"],
    }
    assert body["approval"]["message"] == "ship it?"
    assert body["approval"]["decisions"] == ["approved", "rejected"]
    assert body["approval"]["expires_at"] is not None

    response = await http.post(f"/api/v1/jobs/{job_id}/approve", json={"decision": "approved"})
    assert response.status == 200
    finished = await receiver.next()
    assert finished.json()["event"] == "job_finished"
    assert "approval" not in finished.json()
