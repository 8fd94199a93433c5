"""A worker of the legacy REST protocol (``/_worker``), as SDK
``avtomatika-worker`` 1.0b7 speaks it, driven request by request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from ssl import SSLContext
from typing import Any

import aiohttp
import pytest

from avtomatika import OrchestratorEngine
from tests.support.orchestrator import rest_url
from tests.support.tokens import WORKER_TOKEN

HEADERS = {"X-Worker-Token": WORKER_TOKEN, "X-RXON-Version": "1.0b3"}
"""What SDK 1.0b7 sends with every request."""


def registration(worker_id: str = "w-1", skills: list[str] | None = None) -> dict[str, Any]:
    """What SDK 1.0b7 sends to register."""
    return {
        "worker_id": worker_id,
        "worker_type": "gpu-box",
        "supported_skills": ["echo"] if skills is None else skills,
        "resources": {
            "max_concurrent_tasks": 2,
            "cpu_cores": 4,
            "gpu_info": {"model": "RTX 4090", "vram_gb": 24},
        },
        "installed_software": {"python": "3.11"},
        "installed_models": [{"name": "llama", "version": "3"}],
        "capabilities": {
            "hostname": "vm",
            "ip_address": "127.0.0.1",
            "cost_per_skill": {"echo": 0.5},
            "s3_config_hash": None,
            "extra": {"websockets": True, "region": "eu"},
        },
    }


def heartbeat(worker_id: str = "w-1", **fields: Any) -> dict[str, Any]:
    """What SDK 1.0b7 sends as a heartbeat; ``fields`` override it."""
    body = {"worker_id": worker_id, "status": "idle", "load": 0.0, "current_tasks": [],
            "supported_skills": ["echo"], "hot_cache": [], "skill_dependencies": None,
            "hot_skills": None}  # fmt: skip
    body.update(fields)
    return body


RestWorkers = Callable[..., "RestWorker"]
"""``rest_worker(orchestrator, worker_id="w-1", ssl=None)``."""


class RestWorker:
    """A REST worker driven request by request."""

    def __init__(
        self,
        orchestrator: OrchestratorEngine,
        worker_id: str = "w-1",
        ssl: SSLContext | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.http = aiohttp.ClientSession(
            rest_url(orchestrator, tls=ssl is not None),
            headers=HEADERS,
            connector=aiohttp.TCPConnector(ssl=ssl if ssl is not None else True),
        )

    async def register(self, skills: list[str] | None = None) -> dict[str, Any]:
        """``POST /_worker/workers/register`` with :func:`registration` (asserts the 200)."""
        response = await self.http.post(
            "/_worker/workers/register", json=registration(self.worker_id, skills)
        )
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    async def beat(self, **fields: Any) -> dict[str, Any]:
        """A heartbeat (see :func:`heartbeat`); the reply (asserts the 200)."""
        response = await self.http.patch(
            f"/_worker/workers/{self.worker_id}", json=heartbeat(self.worker_id, **fields)
        )
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    async def poll(self) -> dict[str, Any] | None:
        """One long poll for a task; None when none came (204)."""
        response = await self.http.get(f"/_worker/workers/{self.worker_id}/tasks/next")
        if response.status == 204:
            return None
        assert response.status == 200, await response.text()
        task: dict[str, Any] = await response.json()
        return task

    async def next_task(self) -> dict[str, Any]:
        """Poll until a task comes."""
        while (task := await self.poll()) is None:
            pass
        return task

    async def report(self, task: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """A success result for ``task`` (``fields`` override it); the reply."""
        body = {"job_id": task["job_id"], "task_id": task["task_id"],
                "worker_id": self.worker_id, "status": "success", "data": None,
                "error": None, "data_metadata": None}  # fmt: skip
        body.update(fields)
        response = await self.http.post("/_worker/tasks/result", json=body)
        assert response.status == 200, await response.text()
        reply: dict[str, Any] = await response.json()
        return reply


@pytest.fixture
async def rest_worker() -> AsyncIterator[RestWorkers]:
    """Factory: ``rest_worker(orchestrator, worker_id, ssl=None)`` (HTTPS with
    ``ssl``); sessions closed after."""
    made: list[RestWorker] = []

    def make(
        orchestrator: OrchestratorEngine, worker_id: str = "w-1", ssl: SSLContext | None = None
    ) -> RestWorker:
        made.append(RestWorker(orchestrator, worker_id, ssl))
        return made[-1]

    yield make
    for worker in made:
        await worker.http.close()
