"""The storage contract driven directly, without an engine: claiming a
task for a worker, a job whose task was claimed and done, and for Redis,
storages opened as separate instances, a job and a queued task in them, and a
proxy that loses a script's reply (a network cut at the worst moment)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from avtomatika.config import Settings
from avtomatika.dispatch import WorkerProfile
from avtomatika.engine.tasks import new_id
from avtomatika.storage import Storage
from avtomatika.storage.base import CommitOutcome
from avtomatika.storage.redis.storage import RedisStorage
from avtomatika.v1 import job_pb2, task_pb2
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.task_pb2 import Task, TaskState
from tests.support.redis import RedisServer
from tests.support.waiting import wait_until


async def claim_one(storage: Storage, worker: WorkerProfile, timeout: float | None) -> Task | None:
    """One task claimed for ``worker`` (None if none came in ``timeout``)."""
    tasks = await storage.claim_tasks(worker, timeout)
    return tasks[0] if tasks else None


async def parked(
    storage: Storage,
    worker_id: str,
    skills: tuple[str, ...] = ("x",),
    timeout: float = 10,
    **profile: Any,
) -> asyncio.Task[Task | None]:
    """A claim of ``worker_id`` (for up to ``timeout`` seconds) once it waits
    for a task (or once it is over: its first look may find one), as the
    store counts its waiting workers."""

    async def waiting() -> int:
        return (await storage.waiting_workers()).get(skills[0], 0)

    before = await waiting()
    worker = WorkerProfile(worker_id, skills, **profile)
    claim = asyncio.create_task(claim_one(storage, worker, timeout))

    async def waits_or_is_over() -> bool:
        return claim.done() or await waiting() > before

    await wait_until(waits_or_is_over)
    return claim


async def finish_claimed(storage: Storage, job_id: str) -> None:
    """Worker w claims the queued ``x`` task of ``job_id``; then the job ends
    finished, with that task done."""
    claimed = await claim_one(storage, WorkerProfile("w", ("x",)), 1)
    assert claimed is not None
    current = await storage.get_job(job_id)
    assert current is not None
    current.status = JobStatus.JOB_STATUS_FINISHED
    claimed.state = TaskState.TASK_STATE_DONE
    await storage.commit(current, expected_version=current.version, tasks=[claimed])


OpenStorage = Callable[..., Coroutine[Any, Any, RedisStorage]]


@pytest.fixture
async def open_storage(redis_url: str) -> AsyncIterator[OpenStorage]:
    """Factory: a RedisStorage on the test's Redis (one per "instance")."""
    opened: list[RedisStorage] = []

    async def open_one(url: str = redis_url, **settings: Any) -> RedisStorage:
        storage = RedisStorage(Settings(redis_url=url, **settings))
        await storage.open()
        opened.append(storage)
        return storage

    yield open_one
    for storage in opened:
        await storage.close()


async def new_job(storage: RedisStorage) -> Job:
    """A pending job created in ``storage`` whose first step is over."""
    job = Job(id=new_id(), blueprint_name="bp", status=job_pb2.JOB_STATUS_PENDING)
    await storage.create_job(job)
    assert await storage.next_ready_job() == job.id
    await storage.step_done(job.id)
    stored = await storage.get_job(job.id)
    assert stored is not None
    return stored


def queued(job: Job, skill: str = "x", **fields: Any) -> Task:
    """A queued first attempt of a ``skill`` task of ``job`` (not stored)."""
    return Task(
        task_id=new_id(),
        job_id=job.id,
        type=skill,
        attempt=1,
        state=task_pb2.TASK_STATE_QUEUED,
        **fields,
    )


async def commit_status(
    storage: RedisStorage, job_id: str, status: job_pb2.JobStatus.ValueType, **options: Any
) -> CommitOutcome:
    """Read the job on ``storage``, set its status and commit it at the
    version read."""
    stored = await storage.get_job(job_id)
    assert stored is not None
    stored.status = status
    return await storage.commit(stored, expected_version=stored.version, **options)


class ReplyDropper:
    """A TCP proxy in front of Redis that, when armed, swallows the reply to
    the next script call and drops the connection: the script ran, the
    client never heard (a network cut at the worst moment). ``meanwhile``,
    if set, runs after a reply is swallowed and before the cut: what other
    clients do before the retry."""

    def __init__(self, redis_port: int) -> None:
        self._redis_port = redis_port
        self.armed = False
        self.dropped = 0
        self.port = 0
        self.meanwhile: Callable[[], Awaitable[object]] | None = None
        self.skip = 0
        """Script replies to let through, once armed, before the one dropped."""

    async def start(self) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        redis_in, redis_out = await asyncio.open_connection("127.0.0.1", self._redis_port)
        last_was_script = False

        async def upstream() -> None:
            nonlocal last_was_script
            while data := await client_in.read(65536):
                last_was_script = b"EVALSHA" in data.upper()
                redis_out.write(data)
                await redis_out.drain()

        async def downstream() -> None:
            try:
                while data := await redis_in.read(65536):
                    if self.armed and last_was_script and self.skip:
                        self.skip -= 1
                    elif self.armed and last_was_script:
                        self.armed = False
                        self.dropped += 1
                        if self.meanwhile is not None:
                            await self.meanwhile()
                        return
                    client_out.write(data)
                    await client_out.drain()
            finally:
                client_out.close()
                redis_out.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(upstream(), downstream())


@dataclass
class Dropping:
    """Instance ``a``, whose connections pass ``proxy``, and instance ``b``."""

    proxy: ReplyDropper
    a: RedisStorage
    b: RedisStorage


@pytest.fixture
async def dropping(redis_server: RedisServer, open_storage: OpenStorage) -> AsyncIterator[Dropping]:
    """Two instances, the first behind a :class:`ReplyDropper`."""
    redis_server.flush()
    proxy = ReplyDropper(redis_server.port)
    await proxy.start()
    try:
        a = await open_storage(f"redis://127.0.0.1:{proxy.port}/0")
        yield Dropping(proxy, a, await open_storage())
    finally:
        await proxy.stop()
