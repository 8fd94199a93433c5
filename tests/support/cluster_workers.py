"""Worker processes for the cluster tests, one transport each, announcing on
stdout what they do so the test can count executions:

- ``started <job_id> <attempt>``: an ``echo`` task started;
- ``ran <job_id> <attempt>``: an ``echo`` task is about to return its result;
- ``holding <job_id>``: a ``hold`` task started (it runs until cancelled);
- ``cancelled <job_id>``: the cancel of a ``hold`` task reached its handler.

``echo`` answers ``{"n": <its params' n>, "worker_id": ...}``, so every job's
result is its own, after sleeping ``params["sleep"]`` seconds if given (to
keep tasks in flight while a test breaks something).

    python -m tests.support.cluster_workers grpc WORKER_ID HOST:PORT[,HOST:PORT...] CONCURRENCY
    python -m tests.support.cluster_workers rest WORKER_ID URL[,URL...] CONCURRENCY

The gRPC worker is the Python SDK: it keeps one stream, to the first address
that answers, and moves to the next when that stream breaks. The REST worker
speaks the legacy protocol (``/work/shared/reference/worker_rest_protocol.md``)
as if behind a load balancer: each request goes to the next URL in turn, and
a URL that refuses connections is skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from typing import Any

import aiohttp

from avtomatika.worker import ConnectionSettings, TaskContext, Worker
from tests.support.tokens import WORKER_TOKEN

_FAST_RECONNECT = ConnectionSettings(
    reconnect_initial_delay=0.05, reconnect_max_delay=0.5, connect_timeout=2.0
)


def say(*words: object) -> None:
    print(*words, flush=True)


async def echo(params: dict[str, Any], job_id: str, attempt: int, worker_id: str) -> dict[str, Any]:
    say("started", job_id, attempt)
    await asyncio.sleep(float(params.get("sleep", 0)))
    say("ran", job_id, attempt)
    return {"n": params.get("n"), "worker_id": worker_id}


async def hold(job_id: str) -> None:
    say("holding", job_id)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        say("cancelled", job_id)
        raise


async def run_grpc(worker_id: str, addresses: list[str], concurrency: int) -> None:
    worker = Worker(
        worker_id=worker_id,
        addresses=addresses,
        token=WORKER_TOKEN,
        max_concurrency=concurrency,
        settings=_FAST_RECONNECT,
    )

    @worker.skill("echo")
    async def echo_skill(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        return await echo(params, task.job_id, task.attempt, worker_id)

    @worker.skill("hold")
    async def hold_skill(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        await hold(task.job_id)
        return {}

    await worker.run()


class RestWorker:
    """The legacy REST protocol, each request to the next live URL."""

    def __init__(self, worker_id: str, urls: list[str], concurrency: int) -> None:
        self.worker_id = worker_id
        self.concurrency = concurrency
        self._urls = itertools.cycle(urls)
        self._url_count = len(urls)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._http = aiohttp.ClientSession(
            headers={"X-Worker-Token": WORKER_TOKEN, "X-RXON-Version": "1.0b3"},
            timeout=aiohttp.ClientTimeout(total=40),
        )

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send to the next URL; a refused connection moves on to the one after
        (a load balancer's health check), so only a whole cluster down waits."""
        while True:
            for _ in range(self._url_count):
                url = next(self._urls)
                try:
                    async with self._http.request(method, url + path, json=body) as response:
                        if response.status == 503:
                            continue  # that instance cannot reach Redis right now
                        payload = await response.json() if response.status != 204 else None
                        return response.status, payload
                except (TimeoutError, aiohttp.ClientConnectionError):
                    continue
            await asyncio.sleep(0.1)

    def registration(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "worker_type": "test",
            "supported_skills": ["echo", "hold"],
            "resources": {"max_concurrent_tasks": self.concurrency, "cpu_cores": 1},
            "installed_software": {},
            "installed_models": [],
            "capabilities": {"extra": {"websockets": False}},
        }

    async def run(self) -> None:
        status, body = await self.request("POST", "/_worker/workers/register", self.registration())
        if status != 200:
            raise SystemExit(f"register answered {status}: {body}")
        say("registered", self.worker_id)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.heartbeats())
            for _ in range(self.concurrency):
                group.create_task(self.poll())

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(0.3)
            running = sorted(self._running)
            body = {
                "worker_id": self.worker_id,
                "status": "busy" if running else "idle",
                "load": len(running) / self.concurrency,
                "current_tasks": running,
                "supported_skills": ["echo", "hold"],
                "hot_cache": [],
            }
            _, reply = await self.request("PATCH", f"/_worker/workers/{self.worker_id}", body)
            for task_id in (reply or {}).get("cancel_task_ids", []):
                if task_id in self._running:
                    self._running[task_id].cancel()

    async def poll(self) -> None:
        while True:
            status, task = await self.request(
                "GET", f"/_worker/workers/{self.worker_id}/tasks/next"
            )
            if status == 200:
                running = asyncio.create_task(self.execute(task))
                self._running[task["task_id"]] = running
                try:
                    await asyncio.shield(running)
                except asyncio.CancelledError:
                    if not running.cancelled():
                        raise
                finally:
                    self._running.pop(task["task_id"], None)
            elif status != 204:
                await asyncio.sleep(0.1)  # not registered here (yet): the heartbeat restores it

    async def execute(self, task: dict[str, Any]) -> None:
        result: dict[str, Any] = {
            "job_id": task["job_id"],
            "task_id": task["task_id"],
            "worker_id": self.worker_id,
        }
        try:
            if task["type"] == "hold":
                await hold(task["job_id"])
            data = await echo(
                task["params"], task["job_id"], task.get("attempt", 1), self.worker_id
            )
            result.update(status="success", data=data)
        except asyncio.CancelledError:
            result.update(status="cancelled", data=None)
        await self.request("POST", "/_worker/tasks/result", result)


async def orphaned() -> None:
    """Return once the test that started this process is gone (a test killed
    by a timeout cannot stop its workers), so no worker outlives it."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 (no event tells a process its parent died)
        await asyncio.sleep(0.5)


async def main(transport: str, worker_id: str, addresses: str, concurrency: int) -> None:
    if transport == "grpc":
        work = run_grpc(worker_id, addresses.split(","), concurrency)
    else:
        work = RestWorker(worker_id, addresses.split(","), concurrency).run()
    running = asyncio.ensure_future(work)
    watchdog = asyncio.ensure_future(orphaned())
    await asyncio.wait([running, watchdog], return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        running.result()
    else:
        os._exit(1)


if __name__ == "__main__":
    transport, worker_id, addresses, concurrency = sys.argv[1:5]
    asyncio.run(main(transport, worker_id, addresses, int(concurrency)))
