"""A job's history over REST (``GET /api/v1/jobs/{job_id}/history``), which
is written asynchronously: read it, and wait until it shows something."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from tests.support.waiting import wait_until

Events = list[dict[str, Any]]
"""A job's history as JSON, oldest first."""


async def history(http: aiohttp.ClientSession, job_id: str) -> Events:
    """The job's history now (asserts the 200)."""
    response = await http.get(f"/api/v1/jobs/{job_id}/history")
    body = await response.json()
    assert response.status == 200, body
    assert isinstance(body, list)
    return body


async def history_until(
    http: aiohttp.ClientSession, job_id: str, done: Callable[[Events], bool]
) -> Events:
    """History is written asynchronously: poll until ``done`` holds."""

    async def read() -> Events | None:
        events = await history(http, job_id)
        return events if done(events) else None

    return await wait_until(read, message=f"the history of job {job_id}: {done}")


def ended(events: Events) -> bool:
    """Whether the history ends with the job's end."""
    return bool(events) and events[-1]["type"] == "job_ended"
