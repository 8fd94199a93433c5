"""Running SDK workers against a test orchestrator: ``serving(orchestrator,
{"skill": handler, ...})`` connects one :class:`~avtomatika.worker.Worker` for
the duration of an ``async with`` block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from avtomatika import OrchestratorEngine
from avtomatika.worker import ConnectionSettings, SkillHandler, TlsFiles, Worker
from tests.support.tokens import WORKER_TOKEN

Params = dict[str, Any]

_FAST_RECONNECT = ConnectionSettings(reconnect_initial_delay=0.01, reconnect_max_delay=0.05)


@asynccontextmanager
async def serving(
    orchestrator: OrchestratorEngine,
    skills: Mapping[str, SkillHandler],
    *,
    worker_id: str = "sdk-1",
    max_concurrency: int = 1,
    token: str = WORKER_TOKEN,
    tls: TlsFiles | None = None,
    max_message_bytes: int | None = None,
) -> AsyncIterator[Worker]:
    """An SDK worker with ``skills``, running until the block ends; over TLS
    with ``tls`` (``max_message_bytes``: its channel's limit, when not the
    default)."""
    settings = _FAST_RECONNECT
    if tls is not None:
        settings = replace(settings, tls=tls)
    if max_message_bytes is not None:
        settings = replace(settings, max_message_bytes=max_message_bytes)
    worker = Worker(
        worker_id=worker_id,
        addresses=[f"127.0.0.1:{orchestrator.grpc_port}"],
        token=token,
        max_concurrency=max_concurrency,
        settings=settings,
    )
    for name, handler in skills.items():
        worker.add_skill(name, handler)
    run = asyncio.create_task(worker.run(), name=f"test-worker-{worker_id}")
    try:
        yield worker
    finally:
        await worker.stop(grace_seconds=0)
        await run
