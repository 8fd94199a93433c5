"""The composition root: the engine, REST and gRPC in one process and one
event loop. This is the only module that imports every layer.

:class:`Orchestrator` is the public embedding API; 1.0b13 called it
:class:`OrchestratorEngine`, and that name stays an alias of it::

    engine = OrchestratorEngine(MemoryStorage(), config)
    engine.register_blueprint(bp)
    await engine.start()          # serves REST and gRPC
    job_id = await engine.create_background_job("video", {"url": ...})
    await engine.stop()

Shutdown order matters: first stop intake (gRPC streams are drained, then
end and give their leased tasks back; the HTTP server stops), then the engine, then storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from avtomatika.access.authenticator import Authenticator
from avtomatika.blueprint.context import ClientInfo
from avtomatika.blueprint.loader import load_blueprints
from avtomatika.blueprint.state_machine import StateMachineBlueprint
from avtomatika.config import Config, Settings
from avtomatika.engine.core import BACKGROUND_CLIENT, Engine
from avtomatika.engine.followers import JobFollowers
from avtomatika.errors import ConfigError
from avtomatika.grpc.server import GrpcServer, start_grpc_server
from avtomatika.history import HistoryWriter
from avtomatika.limits.client_limits import ClientLimits
from avtomatika.logs.access import ACCESS_LOG
from avtomatika.logs.lifecycle import LifecycleLog
from avtomatika.monitoring.dashboard import Dashboard
from avtomatika.monitoring.metrics import Metrics
from avtomatika.rest import build_app
from avtomatika.rest.access_log import AccessLogger
from avtomatika.rest.connections import GuardedAppRunner
from avtomatika.rest.metrics_api import METRICS
from avtomatika.rest.render import job_json
from avtomatika.rest.worker_api.handlers import WORKER_API
from avtomatika.schedules.scheduler import Scheduler
from avtomatika.services.client_api import ClientApi
from avtomatika.services.polling_workers import PollingWorkers
from avtomatika.services.public_api import PublicApi
from avtomatika.services.worker_api import WorkerApi
from avtomatika.storage.base import Storage
from avtomatika.tls import server_context
from avtomatika.webhooks import WebhookSender

if TYPE_CHECKING:
    from avtomatika.files import S3Files

__all__ = ["Orchestrator", "OrchestratorEngine", "Service", "console_url", "serve"]

log = logging.getLogger(__name__)


class Service(Protocol):
    """A feature with a lifecycle (history writer, webhook sender, ...).

    Services start before the engine and stop after it, so nothing the engine
    publishes while shutting down is lost.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Orchestrator:
    """A whole orchestrator: ``async with Orchestrator(storage, config): ...``.

    Ports set to 0 are chosen by the OS; :attr:`rest_port` and
    :attr:`grpc_port` tell which once started. Blueprints from
    ``BLUEPRINTS_DIR`` are loaded at :meth:`start`, after those registered by
    hand.
    """

    def __init__(
        self,
        storage: Storage | None = None,
        config: Settings | Config | None = None,
        *,
        blueprints: Iterable[StateMachineBlueprint] = (),
    ) -> None:
        settings = config.to_settings() if isinstance(config, Config) else config
        self.settings = settings if settings is not None else Settings()
        files = _s3_files(self.settings)
        if storage is None and self.settings.redis_url:
            from avtomatika.storage.redis import RedisStorage

            storage = RedisStorage(self.settings)
        self.engine = Engine(storage, self.settings, task_files=files.for_job if files else None)
        self.auth = Authenticator(self.settings)
        for client in self.auth.clients:
            self.engine.add_client(client)
        for blueprint in blueprints:
            self.engine.register_blueprint(blueprint)
        # Features, each a Service; the REST handlers reach them by AppKey.
        self.services: list[Service] = []
        self.app_state: dict[web.AppKey[Any], Any] = {}
        # First in, last out: it records what the other services publish while stopping.
        self.history = HistoryWriter(self.engine.events, self.settings)
        self.webhooks = WebhookSender(self.engine.events, self.settings)
        self.services += [self.history, self.webhooks]
        # Job and worker lifecycle lines (LOG_FORMAT decides how they look).
        self.services.append(LifecycleLog(self.engine))
        self.metrics = Metrics(self.engine)
        self.metrics.track_history_drops(lambda: self.history.dropped)
        self.services.append(self.metrics)
        self.app_state[METRICS] = self.metrics
        # Client API: job followers (?wait=, SSE), the dashboard, rate limits and quotas.
        self.followers = JobFollowers(self.engine.events)
        self.dashboard = Dashboard(self.engine)
        self.services += [self.followers, self.dashboard]
        # Several instances on one Redis: where workers are, cancels to them
        # and job events for followers cross instances (imported only then).
        if self.settings.redis_url:
            from avtomatika.cluster import Cluster
            from avtomatika.storage.redis import RedisStorage

            storage = self.engine.storage
            if isinstance(storage, RedisStorage):
                cluster = Cluster(self.settings, storage.instance_id, self.engine, self.followers)
                self.services.append(cluster)
        self.limits = ClientLimits(
            self.settings, self.auth.monthly_quotas, self.auth.client_bounds, self.engine.storage
        )
        self.services.append(self.limits)
        # The client use cases, once for both transports.
        self.client_api = ClientApi(
            self.engine, self.auth, self.followers, self.limits, self.history, self.dashboard, files
        )
        self.public_api = PublicApi(self.engine, self.followers, self.metrics)
        # Legacy REST workers: their books and the TTL reaper.
        self.polling_workers = PollingWorkers(self.engine)
        self.services.append(self.polling_workers)
        self.app_state[WORKER_API] = WorkerApi(
            self.auth,
            self.polling_workers,
            task_signing_secret=self.settings.worker_task_signing_secret,
            signatures_required=self.settings.worker_signatures_required,
        )
        # Job files (S3): before FileCleanup, which uses them until it stops.
        if files is not None:
            self.services.append(files)
            if self.settings.s3_auto_cleanup:
                from avtomatika.files import FileCleanup  # loaded by _s3_files already

                grace = self.settings.shutdown_grace_seconds
                self.services.append(FileCleanup(files, self.engine.events, grace))
        self.rest_port = 0
        self.grpc_port = 0
        self._runner: GuardedAppRunner | None = None
        self._grpc: GrpcServer | None = None
        self._loaded = False
        # Scheduled jobs: an intake, like the servers (started after the
        # engine, stopped before it, so it never creates a job into a closed store).
        self.scheduler: Scheduler | None = None
        if self.settings.schedules_config_path is not None:
            self.scheduler = Scheduler(
                self.engine, self.settings, self.settings.schedules_config_path
            )

    @property
    def blueprints(self) -> Mapping[str, StateMachineBlueprint]:
        """Registered blueprints by name."""
        return self.engine.blueprints

    def register_blueprint(self, blueprint: StateMachineBlueprint) -> None:
        """Add a blueprint (raises :class:`~avtomatika.errors.BlueprintError`
        if it is invalid or its name or route is taken)."""
        self.engine.register_blueprint(blueprint)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        """A job as ``GET /api/v1/jobs/{job_id}`` renders it, whoever owns it
        (in-process access, e.g. to follow a background job)."""
        return job_json(await self.engine.get_job(job_id))

    async def create_background_job(
        self,
        blueprint_name: str,
        initial_data: Mapping[str, Any] | None = None,
        source: str = "internal",
        tracing_context: Mapping[str, str] | None = None,
        data_metadata: Any = None,
        dispatch_timeout: float | None = None,
        result_timeout: float | None = None,
    ) -> str:
        """Create a job from inside the process (no client token involved);
        handlers see ``client.plan == "system"`` and ``client.params["source"]``.
        ``data_metadata`` is accepted for compatibility and not used."""
        client = ClientInfo(id=BACKGROUND_CLIENT.id, plan="system", params={"source": source})
        return await self.engine.create_job(
            blueprint_name,
            initial_data,
            client=client,
            dispatch_timeout=dispatch_timeout,
            result_timeout=result_timeout,
            tracing_context=tracing_context,
        )

    async def start(self) -> None:
        """Load ``BLUEPRINTS_DIR``, start the engine, then gRPC and HTTP."""
        if not self._loaded and self.settings.blueprints_dir is not None:
            load_blueprints(self.settings.blueprints_dir, self.engine.register_blueprint)
        self._loaded = True
        await self.engine.storage.open()  # a store that cannot be reached stops start-up here
        started: list[Service] = []
        try:
            for service in self.services:
                await service.start()
                started.append(service)
        except BaseException:
            for service in reversed(started):
                await service.stop()
            raise
        await self.engine.start()
        try:
            if self.scheduler is not None:
                await self.scheduler.start()  # checks that its blueprints are registered
            # The REST app first: it gives the public API its documents,
            # which gRPC's GetDocs serves too.
            app = build_app(self.engine, self.auth, self.client_api, self.public_api)
            self._grpc, self.grpc_port = await start_grpc_server(
                self.engine,
                self.auth,
                self.settings.grpc_host,
                self.settings.grpc_port,
                self.client_api,
                self.public_api,
                self.polling_workers,
            )
            for key, value in self.app_state.items():
                app[key] = value
            self._runner = GuardedAppRunner(
                app,
                self.settings,
                handle_signals=False,
                access_log_class=AccessLogger,
                access_log=ACCESS_LOG,
            )
            await self._runner.setup()
            guarded = self._runner.http_server
            self.metrics.track_connections(
                lambda: guarded.open_connections, lambda: guarded.closed_early
            )
            site = web.TCPSite(
                self._runner,
                self.settings.api_host,
                self.settings.api_port,
                ssl_context=_rest_tls(self.settings),
                reuse_port=self.settings.reuse_port or None,
            )
            await site.start()
            self.rest_port = _bound_port(self._runner)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop intake, then the engine. Idempotent."""
        grace = self.settings.shutdown_grace_seconds
        if self.scheduler is not None:
            await self.scheduler.stop()
        server, self._grpc = self._grpc, None
        if server is not None:
            # Workers first hear Drain (stop taking tasks, finish what runs);
            # from here on a stream that ends gives its leases back at once,
            # since no reconnect grace can be honoured by a stopping process.
            self.engine.workers.drain_all("the orchestrator is shutting down")
            # Calls that wait (gRPC GetJob with wait, StreamJobEvents,
            # NextTask; their REST twins) end now, not after the grace.
            self.followers.close()
            self.polling_workers.close()
            await self.engine.workers.close()
            await server.stop(grace)
            # Again: the streams that just ended re-queue through the
            # registry, which must finish while storage is still open.
            await self.engine.workers.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.engine.stop()
        for service in reversed(self.services):
            await service.stop()

    def run(self) -> None:
        """Blocking: serve until SIGTERM or SIGINT."""
        asyncio.run(_serve_until_signalled(self))

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


def _s3_files(settings: Settings) -> S3Files | None:
    """Job files in S3 when ``S3_ENDPOINT_URL`` is set. aioboto3 is imported
    only then: it roughly doubles the import time of the package."""
    if not settings.s3_endpoint_url:
        return None
    from avtomatika.files import S3Files

    return S3Files(settings)


def _rest_tls(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS with the certificate gRPC serves (and its client certificate
    check), or None for plain HTTP when no certificate is set."""
    if settings.tls_cert_path is None or settings.tls_key_path is None:
        return None
    return server_context(settings.tls_cert_path, settings.tls_key_path, settings.tls_ca_path)


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise ConfigError("the HTTP server did not bind a TCP port")


OrchestratorEngine = Orchestrator
"""1.0b13's name for :class:`Orchestrator`, kept for the code written against it."""


def console_url(host: str, port: int, *, https: bool = False) -> str:
    """Where a browser on this machine finds the web console of a server
    bound to ``host`` (every address: ``localhost``)."""
    if host in ("", "0.0.0.0", "::"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return f"{'https' if https else 'http'}://{host}:{port}/console"


async def serve(settings: Settings, *, ready: Callable[[], None] | None = None) -> None:
    """Run an orchestrator for ``settings`` until SIGTERM or SIGINT;
    ``ready`` is called once it serves."""
    await _serve_until_signalled(Orchestrator(config=settings), ready)


async def _serve_until_signalled(
    orchestrator: Orchestrator, ready: Callable[[], None] | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with orchestrator:
            settings = orchestrator.settings
            log.info(
                "avtomatika serving: REST on %s:%d, gRPC on %s:%d, blueprints: %s",
                settings.api_host,
                orchestrator.rest_port,
                settings.grpc_host,
                orchestrator.grpc_port,
                ", ".join(sorted(orchestrator.blueprints)) or "none",
            )
            if settings.tls_cert_path is not None:
                log.info(
                    "TLS on both ports (HTTPS and gRPC)%s%s",
                    ", client certificates required" if settings.tls_require_client_cert else "",
                    ", worker ids bound to them" if settings.tls_bind_worker_identity else "",
                )
            log.info(
                "web console: %s (sign in with a client token)",
                console_url(
                    settings.api_host,
                    orchestrator.rest_port,
                    https=settings.tls_cert_path is not None,
                ),
            )
            if ready is not None:
                ready()
            await stop.wait()
            log.info("shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
