"""Standard gRPC health checking (``grpc.health.v1.Health``) and server
reflection, so ``grpcurl`` and orchestrators' probes work without our stubs.

Health follows readiness (:mod:`avtomatika.services.readiness`, the same
answer as ``GET /_public/ready``): every served service (and the server as a
whole, the empty name) is SERVING while the store answers a ping and
NOT_SERVING while it does not, checked every :data:`PROBE_SECONDS`. A ping
that hangs (a Redis stopped, not dead) counts as down after the readiness
deadline. When the server stops, every service turns NOT_SERVING first, so a
load balancer stops sending before the port closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from avtomatika.errors import Unavailable

__all__ = ["PROBE_SECONDS", "HealthReporter", "add_health_and_reflection"]

log = logging.getLogger(__name__)

PROBE_SECONDS = 1.0

# grpcio-health-checking's asyncio servicer; its type stubs predate it.
_AioHealthServicer: Any = health.aio.HealthServicer  # type: ignore[attr-defined]

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    """Keeps the health service's answers in step with the store."""

    def __init__(
        self,
        servicer: Any,
        services: Sequence[str],
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        """``ready()`` returns when ready and raises (saying why) when not."""
        self._servicer = servicer
        self._names = ["", *services]
        self._ready = ready
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Probe once (the first answer is the truth, not a guess), then
        keep probing in the background."""
        await self._probe()
        self._task = asyncio.create_task(self._run(), name="avtomatika-health")

    async def stop(self) -> None:
        """Stop probing and report NOT_SERVING for good."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._servicer.enter_graceful_shutdown()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            await self._probe()

    async def _probe(self) -> None:
        try:
            await self._ready()
            serving = True
        except Unavailable as exc:
            serving = False
            if self._serving is not False:
                log.warning("gRPC health: NOT_SERVING (%s)", exc)
        if serving == self._serving:
            return
        if serving and self._serving is False:
            log.info("gRPC health: SERVING again, the store answers")
        self._serving = serving
        for name in self._names:
            await self._servicer.set(name, _SERVING if serving else _NOT_SERVING)


def add_health_and_reflection(
    server: grpc.aio.Server, services: Sequence[str], ready: Callable[[], Awaitable[None]]
) -> HealthReporter:
    """Add ``grpc.health.v1.Health`` (reporting ``services`` as ``ready()``
    says) and server reflection (listing them, and itself) to ``server``."""
    servicer = _AioHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    names = [*services, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    return HealthReporter(servicer, services, ready)
