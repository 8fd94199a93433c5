"""Three ``avtomatika serve`` processes on one real ``redis-server``, with
workers of both transports in their own processes: the system as it is
deployed behind a load balancer.

- 2,000 jobs created round-robin across the instances each end exactly once,
  with their own result, read back through another instance;
- ``kill -9`` of one instance mid-load loses no job and ends none twice (the
  steps it was running are re-run elsewhere once their lease lapses);
- an approval and a cancel reach a job through an instance other than the
  one it was created on (the cancel reaching a worker on a third one);
- Redis stopped mid-run: requests get 503 JSON; restarted, every job ends.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import CLIENT_TOKEN, TERMINAL_STATUSES
from tests.support.redis import RedisServer
from tests.support.serve import Served, serve_env, served
from tests.support.waiting import wait_until

BLUEPRINTS = Path(__file__).parent / "cluster_blueprints"
ROOT = Path(__file__).parent.parent

# A small step lease so a dead instance's steps move within seconds. Workers
# see a killed instance's streams break at once (the kernel resets them), so
# heartbeats stay slow enough that a loaded machine is not taken for silence.
CLUSTER_SETTINGS = {
    "STEP_LEASE_SECONDS": "1",
    "WORKER_HEARTBEAT_INTERVAL_SECONDS": "2",
    "WORKER_HEALTH_CHECK_INTERVAL_SECONDS": "1",
    "WORKER_RECONNECT_GRACE_SECONDS": "1",
    "SHUTDOWN_GRACE_SECONDS": "0.5",
    "RETRY_BACKOFF_BASE_SECONDS": "0.01",
    "RETRY_BACKOFF_MAX_SECONDS": "0.05",
    "JOB_WAIT_MAX_SECONDS": "5",
}
CREATE_CONCURRENCY = 32
# Not a timing assertion: a wait this long means a hang, reported with context.
HANG_SECONDS = 30


class WorkerProcess:
    """A worker of ``tests/support/cluster_workers.py`` in its own process; what it
    announces is collected as it comes."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.lines: list[list[str]] = []
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, transport: str, worker_id: str, addresses: list[str], concurrency: int
    ) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.cluster_workers",
            transport, worker_id, ",".join(addresses), str(concurrency),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process, worker_id)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode().split())
            self._new_line.set()

    async def announced(self, predicate: Callable[[list[str]], bool]) -> list[str]:
        """The first line that satisfies ``predicate``, waiting for it (a
        generous bound only turns a hang into a failure that shows the lines)."""
        seen = 0
        try:
            async with asyncio.timeout(HANG_SECONDS):
                while True:
                    for words in self.lines[seen:]:
                        if predicate(words):
                            return words
                    seen = len(self.lines)
                    self._new_line.clear()
                    await self._new_line.wait()
        except TimeoutError:
            pytest.fail(f"worker never announced what was awaited; it said {self.lines}")

    def ran(self) -> list[str]:
        """Job ids of the echo tasks it ran (a job twice if it ran twice)."""
        return [words[1] for words in self.lines if words[0] == "ran"]

    def started(self) -> list[str]:
        """Job ids of the echo tasks it started (a job twice if it started twice)."""
        return [words[1] for words in self.lines if words[0] == "started"]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await self._reader


class Cluster:
    """Redis, the instances and the workers of one test."""

    def __init__(self, redis: RedisServer, stack: AsyncExitStack) -> None:
        self.redis = redis
        self.instances: list[Served] = []
        self.workers: list[WorkerProcess] = []
        self._stack = stack
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    async def start_instance(self, n: int) -> Served:
        env = serve_env(REDIS_URL=self.redis.url, INSTANCE_ID=f"instance-{n}", **CLUSTER_SETTINGS)
        return await self._stack.enter_async_context(
            served("--blueprints-dir", str(BLUEPRINTS), env=env)
        )

    async def start_worker(
        self, transport: str, worker_id: str, instances: list[Served], concurrency: int = 16
    ) -> WorkerProcess:
        if transport == "grpc":
            addresses = [f"127.0.0.1:{i.grpc_port}" for i in instances]
        else:
            addresses = [f"http://127.0.0.1:{i.rest_port}" for i in instances]
        worker = await WorkerProcess.start(transport, worker_id, addresses, concurrency)
        self.workers.append(worker)
        return worker

    def http(self, instance: Served) -> aiohttp.ClientSession:
        """A client session on ``instance``'s REST port."""
        if instance.rest_port not in self._sessions:
            self._sessions[instance.rest_port] = aiohttp.ClientSession(
                f"http://127.0.0.1:{instance.rest_port}",
                headers={"X-Client-Token": CLIENT_TOKEN},
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._sessions[instance.rest_port]

    def alive(self) -> list[Served]:
        return [i for i in self.instances if i.process.returncode is None]

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        for worker in self.workers:
            await worker.stop()

    def ran(self) -> Counter[str]:
        """How many times each job's echo task ran, over every worker."""
        return Counter(job_id for worker in self.workers for job_id in worker.ran())

    def started(self) -> Counter[str]:
        """How many times each job's echo task started, over every worker."""
        return Counter(job_id for worker in self.workers for job_id in worker.started())


@asynccontextmanager
async def cluster(
    redis: RedisServer | None = None, *, instances: int = 3
) -> AsyncIterator[Cluster]:
    """A Redis server (``redis`` if given, else a fresh one) and ``instances``
    orchestrators on it; workers are added by the test."""
    async with AsyncExitStack() as stack:
        if redis is None:
            redis = RedisServer()
            redis.start()
            stack.callback(redis.close)
        running = Cluster(redis, stack)
        # Started side by side: each spends seconds importing.
        started = await asyncio.gather(*(running.start_instance(n) for n in range(instances)))
        running.instances = list(started)
        # Workers go first, then the instances (SIGTERM), then Redis.
        stack.push_async_callback(running.close)
        yield running


async def create(http: aiohttp.ClientSession, endpoint: str, initial_data: dict[str, Any]) -> str:
    async with http.post(f"/api/v1/{endpoint}", json={"initial_data": initial_data}) as response:
        body = await response.json()
        assert response.status == 202, body
        job_id = body["job_id"]
        assert isinstance(job_id, str)
        return job_id


async def ended(http: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
    """The job once it is terminal, followed with ``?wait=``."""
    return await ended_or(http, job_id, "")


async def polled(
    http: aiohttp.ClientSession, path: str, settled: Callable[[Any], bool], pause: float = 0.0
) -> tuple[bool, Any]:
    """GET ``path`` until ``settled`` holds for its body, within
    ``HANG_SECONDS``: (True, that body), or (False, the last body seen)."""
    body: Any = None
    try:
        async with asyncio.timeout(HANG_SECONDS):
            while True:
                async with http.get(path) as response:
                    body = await response.json()
                    assert response.status == 200, body
                if settled(body):
                    return True, body
                await asyncio.sleep(pause)
    except TimeoutError:
        return False, body


async def ended_or(http: aiohttp.ClientSession, job_id: str, status: str) -> dict[str, Any]:
    """The job once its status is ``status`` or terminal, followed with ``?wait=``."""
    done, job = await polled(
        http,
        f"/api/v1/jobs/{job_id}?wait=5",
        lambda job: job["status"] == status or job["status"] in TERMINAL_STATUSES,
    )
    if done:
        assert isinstance(job, dict)
        return job
    async with http.get(f"/api/v1/jobs/{job_id}/history") as response:
        history = [
            (e["timestamp"][11:], e["type"], e["worker_id"], e["task_id"], e["message"])
            for e in await response.json()
        ]
    pytest.fail(f"job {job_id} never ended; last seen as {job}; its history: {history}")


async def job_ended_events(http: aiohttp.ClientSession, job_id: str) -> int:
    """How many ``job_ended`` events the job's history holds, once it holds one
    (history is written asynchronously)."""
    done, events = await polled(
        http,
        f"/api/v1/jobs/{job_id}/history",
        lambda events: any(event["type"] == "job_ended" for event in events),
        pause=0.05,
    )
    if not done:
        pytest.fail(f"job {job_id} has no job_ended event; its history: {events}")
    return sum(1 for event in events if event["type"] == "job_ended")


async def bounded(count: int, make: Callable[[int], Any]) -> list[Any]:
    """``make(n)`` for n in range(count), at most CREATE_CONCURRENCY at once."""
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(n: int) -> Any:
        async with gate:
            return await make(n)

    return await asyncio.gather(*(one(n) for n in range(count)))


async def start_workers(running: Cluster) -> None:
    """Two SDK workers over gRPC (each preferring another instance, failing
    over to the rest) and two REST workers behind the 'load balancer'."""
    instances = running.instances
    for n in range(2):
        preferred = instances[n:] + instances[:n]
        await running.start_worker("grpc", f"grpc-{n}", preferred)
    for n in range(2):
        worker = await running.start_worker("rest", f"rest-{n}", instances)
        await worker.announced(lambda words: words[0] == "registered")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_jobs_created_round_robin_each_end_once_with_their_own_result() -> None:
    async with cluster() as running:
        await start_workers(running)
        instances = running.instances
        jobs = 2000

        async def create_on(n: int) -> tuple[int, str]:
            return n, await create(running.http(instances[n % 3]), "jobs/echo", {"n": n})

        created = await bounded(jobs, create_on)

        async def check(n: int) -> dict[str, Any]:
            # Read through an instance other than the one that created it.
            number, job_id = created[n]
            job = await ended(running.http(instances[(number + 1) % 3]), job_id)
            assert job["status"] == "finished", job
            assert job["state_history"]["n"] == number, job
            events = await job_ended_events(running.http(instances[(number + 2) % 3]), job_id)
            assert events == 1, f"job {job_id} has {events} job_ended events"
            return job

        finished = await bounded(jobs, check)
        by_worker = Counter(job["state_history"]["worker_id"] for job in finished)
        assert {w.split("-")[0] for w in by_worker} == {"grpc", "rest"}, by_worker
        ran = running.ran()
        unknown = set(ran) - {job_id for _, job_id in created}
        assert not unknown, [
            (worker.name, [w for w in worker.lines if w[1] in unknown])
            for worker in running.workers
        ]
        assert len(ran) == jobs
        assert [job_id for job_id, times in ran.items() if times != 1] == []


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_killed_instance_loses_no_job_and_ends_none_twice() -> None:
    async with cluster() as running:
        await start_workers(running)
        instances = running.instances
        doomed = instances[0]
        jobs = 900
        killed = asyncio.Event()
        unanswered: list[int] = []

        async def create_on(n: int) -> tuple[int, str]:
            if n == jobs // 3 and not killed.is_set():
                doomed.process.send_signal(signal.SIGKILL)
                await doomed.process.wait()
                killed.set()
            while True:
                alive = running.alive()
                instance = alive[n % len(alive)]
                try:
                    return n, await create(running.http(instance), "jobs/echo", {"n": n})
                except aiohttp.ClientConnectionError:
                    # In flight to the instance as it died: a client tries
                    # another. The job may exist all the same (created, the
                    # answer lost); it runs too, uncounted.
                    unanswered.append(n)
                    await killed.wait()

        created = await bounded(jobs, create_on)
        assert killed.is_set()
        survivors = running.alive()
        assert doomed not in survivors

        async def check(n: int) -> dict[str, Any]:
            number, job_id = created[n]
            job = await ended(running.http(survivors[n % 2]), job_id)
            assert job["status"] == "finished", job
            assert job["state_history"]["n"] == number, job
            return job

        await bounded(jobs, check)
        # A step re-run after the lease may run its task again; the job still
        # ends once. History is written asynchronously, so the dead instance
        # may have taken the last events of the jobs it ended with it: jobs
        # created well after the kill (only survivors ran them) have exactly
        # one job_ended event, the others at most one.
        after_kill = jobs // 3 + CREATE_CONCURRENCY

        async def ended_once(n: int) -> None:
            number, job_id = created[n]
            http = running.http(survivors[n % 2])
            if number > after_kill:
                events = await job_ended_events(http, job_id)
            else:
                async with http.get(f"/api/v1/jobs/{job_id}/history") as response:
                    events = sum(1 for e in await response.json() if e["type"] == "job_ended")
            assert events <= 1 if number <= after_kill else events == 1, (job_id, events)

        await bounded(jobs, ended_once)
        ran = set(running.ran())
        known = {job_id for _, job_id in created}
        assert known <= ran
        assert len(ran - known) <= len(unanswered)


async def public_post(instance: Served, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(f"http://127.0.0.1:{instance.rest_port}") as public,
        public.post(path, json=body) as response,
    ):
        return response.status, await response.json()


@pytest.mark.slow
async def test_an_approval_sent_to_another_instance_moves_the_job_on() -> None:
    async with cluster() as running:
        a, b, c = running.instances
        job_id = await create(running.http(a), "jobs/approval", {})
        job = await ended_or(running.http(a), job_id, "waiting_for_human")
        assert job["status"] == "waiting_for_human", job

        status, body = await public_post(
            b, f"/_public/webhooks/approval/{job_id}", {"decision": "approved"}
        )
        assert (status, body) == (200, {"status": "approval_received", "job_id": job_id})
        job = await ended(running.http(c), job_id)
        assert (job["status"], job["current_state"]) == ("finished", "approved"), job
        # The decision is spent: a second one, through yet another instance, is refused.
        status, body = await public_post(
            c, f"/_public/webhooks/approval/{job_id}", {"decision": "rejected"}
        )
        assert status == 409, body


@pytest.mark.slow
async def test_a_cancel_sent_to_one_instance_reaches_workers_on_the_others() -> None:
    async with cluster() as running:
        a, b, c = running.instances
        on_b = await running.start_worker("grpc", "holder-grpc", [b], concurrency=1)
        on_c = await running.start_worker("rest", "holder-rest", [c], concurrency=1)
        await on_c.announced(lambda words: words[0] == "registered")
        jobs = [await create(running.http(a), "jobs/hold", {}) for _ in range(2)]
        holding = await asyncio.gather(
            *(w.announced(lambda words: words[0] == "holding") for w in (on_b, on_c))
        )
        assert sorted(words[1] for words in holding) == sorted(jobs)

        for job_id in jobs:
            async with running.http(a).post(f"/api/v1/jobs/{job_id}/cancel") as response:
                assert response.status == 200, await response.text()
        for worker in (on_b, on_c):
            await worker.announced(lambda words: words[0] == "cancelled")
        for job_id in jobs:
            job = await ended(running.http(b), job_id)
            assert job["status"] == "cancelled", job


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_jobs_in_flight_through_a_redis_outage_all_end_once() -> None:
    redis = RedisServer(persistent=True)
    redis.start()
    try:
        async with cluster(redis) as running:
            await start_workers(running)
            instances = running.instances
            jobs = 90

            async def create_on(n: int) -> str:
                # Each task takes a second, so the outage finds them running.
                data = {"n": n, "sleep": 1}
                return await create(running.http(instances[n % 3]), "jobs/echo", data)

            created = await bounded(jobs, create_on)
            redis.stop()
            running_then = running.started()
            for instance in instances:
                http = running.http(instance)
                async with http.get(f"/api/v1/jobs/{created[0]}") as response:
                    assert response.status == 503, await response.text()
                    assert "error" in await response.json()
                async with http.post("/api/v1/jobs/echo", json={"initial_data": {}}) as response:
                    assert response.status == 503, await response.text()
                    assert "error" in await response.json()
            # Until the tasks running when Redis went away have ended, their
            # results still to be reported.
            await wait_until(lambda: not running_then - running.ran())
            redis.start()

            async def check(n: int) -> None:
                job = await ended(running.http(instances[(n + 1) % 3]), created[n])
                assert job["status"] == "finished", job
                assert job["state_history"]["n"] == n, job
                events = await job_ended_events(running.http(instances[n % 3]), created[n])
                assert events == 1, (created[n], events)

            await bounded(jobs, check)
    finally:
        redis.close()
