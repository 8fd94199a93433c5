"""The composition root: engine, REST and gRPC in one process and one event
loop. This is the only module that imports every layer.

Shutdown order matters: first stop intake (gRPC streams end and give their
leased tasks back; the HTTP server stops), then the engine, then storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable
from types import TracebackType

import grpc
from aiohttp import web

from avtomatika.auth import Authenticator
from avtomatika.blueprint import StateMachineBlueprint
from avtomatika.config import Settings
from avtomatika.engine import OrchestratorEngine
from avtomatika.errors import ConfigError
from avtomatika.grpc.server import start_grpc_server
from avtomatika.loader import load_blueprints
from avtomatika.rest import build_app
from avtomatika.storage.base import Storage

__all__ = ["Orchestrator", "serve"]

log = logging.getLogger(__name__)


class Orchestrator:
    """A running orchestrator: ``async with Orchestrator(settings) as o: ...``.

    Ports set to 0 are chosen by the OS; :attr:`rest_port` and
    :attr:`grpc_port` tell which.
    """

    def __init__(
        self,
        settings: Settings,
        blueprints: Iterable[StateMachineBlueprint] = (),
        storage: Storage | None = None,
    ) -> None:
        self.settings = settings
        self.engine = OrchestratorEngine(storage, settings)
        self.auth = Authenticator(settings)
        for client in self.auth.clients:
            self.engine.add_client(client)
        for blueprint in blueprints:
            self.engine.register_blueprint(blueprint)
        if settings.blueprints_dir is not None:
            for blueprint in load_blueprints(settings.blueprints_dir):
                self.engine.register_blueprint(blueprint)
        self.rest_port = 0
        self.grpc_port = 0
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Start the engine, then the gRPC and HTTP servers."""
        await self.engine.start()
        try:
            self._grpc, self.grpc_port = await start_grpc_server(
                self.engine, self.auth, self.settings.grpc_host, self.settings.grpc_port
            )
            self._runner = web.AppRunner(
                build_app(self.engine, self.auth), handle_signals=False, access_log=None
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.settings.api_host, self.settings.api_port)
            await site.start()
            self.rest_port = _bound_port(self._runner)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop intake, then the engine. Idempotent."""
        grace = self.settings.shutdown_grace_seconds
        server, self._grpc = self._grpc, None
        if server is not None:
            await server.stop(grace)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.engine.stop()

    async def __aenter__(self) -> Orchestrator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise ConfigError("the HTTP server did not bind a TCP port")


async def serve(settings: Settings, blueprints: Iterable[StateMachineBlueprint] = ()) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Orchestrator(settings, blueprints) as orchestrator:
            log.info(
                "avtomatika serving: REST on %s:%d, gRPC on %s:%d, blueprints: %s",
                settings.api_host,
                orchestrator.rest_port,
                settings.grpc_host,
                orchestrator.grpc_port,
                ", ".join(sorted(orchestrator.engine.blueprints)) or "none",
            )
            await stop.wait()
            log.info("shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
