"""Client limits over REST: a client's token, a 429 answer, and epoch
milliseconds of a UTC date (for the arithmetic of monthly quotas)."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

ACME = "acme-token-0123456789"
"""A client's token in the clients file of the limits tests."""


async def refused(response: aiohttp.ClientResponse) -> int:
    """Assert a 429 JSON answer; its Retry-After in seconds."""
    assert response.status == 429, await response.text()
    assert response.content_type == "application/json"
    assert "error" in await response.json()
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Epoch milliseconds of a UTC date and time."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return int(moment.timestamp() * 1000)
