"""Following a job as a client does: Server-Sent Events read off the
response, and waiting until the orchestrator counts its followers."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from avtomatika import OrchestratorEngine
from tests.support.waiting import wait_until


class EventStream:
    """Reads ``event:``/``data:`` pairs from a text/event-stream response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> tuple[str, dict[str, Any]] | None:
        """The next event, skipping comments; None at the end of the stream."""
        kind, data = "", ""
        async for raw in self.response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
            elif line == "" and kind:
                return kind, json.loads(data)
        return None


async def followers_reach(orchestrator: OrchestratorEngine, count: int) -> None:
    """Until ``count`` requests follow jobs."""
    await wait_until(lambda: len(orchestrator.followers) >= count, message=f"{count} followers")
