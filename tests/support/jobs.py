"""A job over the REST client API: create it, read it, and wait until it
reaches a status (bounded by the deadline of
:func:`~tests.support.waiting.wait_until`, never by a guess at how long the
engine needs)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.support.waiting import wait_until

TERMINAL_STATUSES = frozenset({"finished", "failed", "cancelled", "error", "quarantined"})
"""Job statuses (as rendered over REST) that a job never leaves."""


async def create_job(
    http: aiohttp.ClientSession, endpoint: str, initial_data: dict[str, Any] | None = None
) -> str:
    """``POST /api/v1/{endpoint}``; the new job's id (asserts the 202)."""
    response = await http.post(f"/api/v1/{endpoint}", json={"initial_data": initial_data or {}})
    body = await response.json()
    assert response.status == 202, body
    assert body["status"] == "accepted"
    job_id = body["job_id"]
    assert isinstance(job_id, str)
    return job_id


async def post_big_job(
    http: aiohttp.ClientSession, endpoint: str, initial_data: Any
) -> aiohttp.ClientResponse:
    """``POST /api/v1/{endpoint}`` with a body of megabytes, streamed (aiohttp
    warns about big bodies sent from bytes); the response, unread."""
    body = io.BytesIO(json.dumps({"initial_data": initial_data}).encode())
    return await http.post(
        f"/api/v1/{endpoint}", data=body, headers={"Content-Type": "application/json"}
    )


async def create_big_job(http: aiohttp.ClientSession, endpoint: str, initial_data: Any) -> str:
    """:func:`post_big_job`; the new job's id (asserts the 202)."""
    response = await post_big_job(http, endpoint, initial_data)
    body = await response.json()
    assert response.status == 202, body
    job_id: str = body["job_id"]
    return job_id


async def get_job(http: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
    """``GET /api/v1/jobs/{job_id}`` as JSON (asserts the 200)."""
    response = await http.get(f"/api/v1/jobs/{job_id}")
    job = await response.json()
    assert response.status == 200, job
    assert isinstance(job, dict)
    return job


async def wait_for_status(http: aiohttp.ClientSession, job_id: str, status: str) -> dict[str, Any]:
    """Poll the job until it reaches ``status`` and return its JSON.

    Fails at once if the job ends in another terminal status."""

    async def reached() -> dict[str, Any] | None:
        job = await get_job(http, job_id)
        if job["status"] == status:
            return job
        assert job["status"] not in TERMINAL_STATUSES, (
            f"job {job_id} ended {job['status']!r} while waiting for {status!r}: {job}"
        )
        return None

    return await wait_until(reached, message=f"job {job_id} is {status!r}")


async def wait_for(
    http: aiohttp.ClientSession, job_id: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the job until ``predicate`` holds for its JSON and return it."""

    async def holds() -> dict[str, Any] | None:
        job = await get_job(http, job_id)
        return job if predicate(job) else None

    return await wait_until(holds, message=f"job {job_id}: {predicate}")


async def wait_for_terminal(http: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
    """Poll the job until it reaches any terminal status and return its JSON."""
    return await wait_for(http, job_id, lambda job: job["status"] in TERMINAL_STATUSES)
