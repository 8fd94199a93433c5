"""Builds the grpc.aio server for an engine: the worker stream and the
client API (``JobService``, ``PublicService``), health and reflection.

With ``TLS_CERT_PATH`` and ``TLS_KEY_PATH`` set the port serves TLS only
(server authentication; workers keep authenticating with their token); with
``TLS_CA_PATH`` and ``TLS_REQUIRE_CLIENT_CERT`` too, every caller must
present a client certificate that CA bundle verifies (mutual TLS), or its
handshake fails. The REST port serves the same (:mod:`avtomatika.tls`).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from avtomatika.access.authenticator import Authenticator
from avtomatika.config import Settings
from avtomatika.engine.core import Engine
from avtomatika.grpc.access_log import AccessLogInterceptor
from avtomatika.grpc.health import HealthReporter, add_health_and_reflection
from avtomatika.grpc.job_service import JobServicer
from avtomatika.grpc.public_service import PublicServicer
from avtomatika.grpc.worker_stream import WorkerStreamService
from avtomatika.payload import message_limit
from avtomatika.services.client_api import ClientApi
from avtomatika.services.polling_workers import PollingWorkers
from avtomatika.services.public_api import PublicApi
from avtomatika.services.worker_api import WorkerApi
from avtomatika.v1 import (
    job_service_pb2,
    job_service_pb2_grpc,
    public_service_pb2,
    public_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

__all__ = [
    "SERVICE_NAMES",
    "GrpcServer",
    "server_credentials",
    "server_options",
    "start_grpc_server",
]

log = logging.getLogger(__name__)

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (worker_service_pb2, "WorkerService"),
        (job_service_pb2, "JobService"),
        (public_service_pb2, "PublicService"),
    )
)
"""The full names of the services we serve (for health and reflection)."""

# How long stopping waits, past the grace period, for the streams' clean-up.
_CLEANUP_SECONDS = 5.0


class GrpcServer:
    """The running grpc.aio server, the worker streams it serves and its
    health reports."""

    def __init__(
        self, server: grpc.aio.Server, streams: WorkerStreamService, health: HealthReporter
    ) -> None:
        self._server = server
        self._streams = streams
        self._health = health

    async def stop(self, grace: float | None) -> None:
        """Stop serving (streams get ``grace`` seconds to end), then wait
        until every stream has cleaned up after itself: grpc returns from
        ``stop`` before the generators it cancelled have run their
        ``finally``. Health turns NOT_SERVING first, so probes and load
        balancers stop sending before the port closes."""
        await self._health.stop()
        await self._server.stop(grace)
        try:
            async with asyncio.timeout(_CLEANUP_SECONDS):
                await self._streams.streams_closed()
        except TimeoutError:
            log.warning("worker streams still cleaning up %.0f s after the stop", _CLEANUP_SECONDS)


async def start_grpc_server(
    engine: Engine,
    auth: Authenticator,
    host: str,
    port: int,
    client_api: ClientApi,
    public_api: PublicApi,
    polling_workers: PollingWorkers,
) -> tuple[GrpcServer, int]:
    """Start serving on ``host:port`` (0 picks a free port); returns the
    server and the bound port. TLS when the engine's settings name a
    certificate and key."""
    server = grpc.aio.server(
        interceptors=[AccessLogInterceptor()], options=server_options(engine.config)
    )
    polling = WorkerApi(auth, polling_workers, credential="x-worker-token")
    streams = WorkerStreamService(engine, auth, polling)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(streams, server)
    job_service_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(client_api), server)
    public_service_pb2_grpc.add_PublicServiceServicer_to_server(PublicServicer(public_api), server)
    health = add_health_and_reflection(server, SERVICE_NAMES, public_api.ready)
    address = f"{host}:{port}"
    credentials = server_credentials(engine.config)
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:  # what grpc raises for a port it cannot bind
        bound = 0
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {address}")
    await server.start()
    await health.start()
    return GrpcServer(server, streams, health), bound


# Keepalive pings the server sends on every connection, and how long it waits
# for the answer: a peer that vanished without closing (host down, NAT entry
# dropped) frees its descriptor and its worker stream within about 80 s, not
# after TCP's two hours.
_KEEPALIVE_PING_MS = 60_000
_KEEPALIVE_PING_TIMEOUT_MS = 20_000
# The shortest interval at which a client may ping. grpc's default (5 min)
# sends GOAWAY to SDKs configured with a 30 s keepalive; faster than this, a
# client is a ping flood, and after two such pings its connection is closed.
_CLIENT_PING_MIN_INTERVAL_MS = 10_000
_CLIENT_PING_STRIKES = 2
# Calls at once on one connection. A worker needs one stream and a few unary
# calls; a client following many jobs over one channel queues past this on its
# side, while one connection can no longer hold unbounded server state.
_MAX_STREAMS_PER_CONNECTION = 1000
# Request metadata (headers) per call, as REST bounds a header field.
_MAX_METADATA_BYTES = 16 * 1024


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The grpc channel arguments bounding what one connection may hold.

    There is deliberately no ``grpc.max_connection_age_ms`` (nor its grace):
    worker streams are meant to last, and recycling their connections would
    hand leased tasks back and forth; a dead connection is found by the
    keepalive pings instead."""
    return [
        # One limit both ways, from MAX_PAYLOAD_BYTES: what REST accepts fits
        # here, and the worker SDK and the client accept as much by default.
        ("grpc.max_receive_message_length", message_limit(settings.max_payload_bytes)),
        ("grpc.max_send_message_length", message_limit(settings.max_payload_bytes)),
        ("grpc.max_metadata_size", _MAX_METADATA_BYTES),
        # The REST header timeout's twin: a connection that has not finished its
        # TLS and HTTP/2 handshake in time is closed (grpc's default is 120 s).
        ("grpc.server_handshake_timeout_ms", int(settings.header_timeout_seconds * 1000)),
        # A connection with no call open that long is sent GOAWAY; a client
        # reconnects on its next call. Worker streams keep their connection busy.
        ("grpc.max_connection_idle_ms", int(settings.keepalive_timeout_seconds * 1000)),
        # Past the cap grpc closes a new connection as soon as it is accepted,
        # so descriptors stay for what is already connected.
        ("grpc.max_allowed_incoming_connections", settings.connection_cap),
        ("grpc.max_concurrent_streams", _MAX_STREAMS_PER_CONNECTION),
        ("grpc.keepalive_time_ms", _KEEPALIVE_PING_MS),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_PING_TIMEOUT_MS),
        ("grpc.http2.min_ping_interval_without_data_ms", _CLIENT_PING_MIN_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", _CLIENT_PING_STRIKES),
        # grpc binds with SO_REUSEPORT on Linux unless told otherwise, so a
        # second server on a taken port would silently share it; only the
        # processes of one instance (REUSE_PORT, --processes) mean to.
        ("grpc.so_reuseport", int(settings.reuse_port)),
    ]


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from ``TLS_CERT_PATH``/``TLS_KEY_PATH`` (PEM), or
    None; with ``TLS_CA_PATH``, requiring client certificates it verifies
    (the settings allow a CA only with ``TLS_REQUIRE_CLIENT_CERT``)."""
    if settings.tls_cert_path is None or settings.tls_key_path is None:
        return None
    key = settings.tls_key_path.read_bytes()
    chain = settings.tls_cert_path.read_bytes()
    if settings.tls_ca_path is None:
        return grpc.ssl_server_credentials([(key, chain)])
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=settings.tls_ca_path.read_bytes(),
        require_client_auth=settings.tls_require_client_cert,
    )
