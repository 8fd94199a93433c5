"""Builds the grpc.aio server for an engine: the worker stream and the
client API (``JobService``, ``PublicService``).

With ``TLS_CERT_PATH`` and ``TLS_KEY_PATH`` set the port serves TLS only
(server authentication; workers keep authenticating with their token).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from avtomatika.access.authenticator import Authenticator
from avtomatika.config import Settings
from avtomatika.engine.core import Engine
from avtomatika.grpc.job_service import JobServicer
from avtomatika.grpc.public_service import PublicServicer
from avtomatika.grpc.worker_stream import WorkerStreamService
from avtomatika.services.client_api import ClientApi
from avtomatika.services.public_api import PublicApi
from avtomatika.v1 import job_service_pb2_grpc, public_service_pb2_grpc, worker_service_pb2_grpc

__all__ = ["GrpcServer", "server_credentials", "start_grpc_server"]

log = logging.getLogger(__name__)

# How long stopping waits, past the grace period, for the streams' clean-up.
_CLEANUP_SECONDS = 5.0


class GrpcServer:
    """The running grpc.aio server and the worker streams it serves."""

    def __init__(self, server: grpc.aio.Server, streams: WorkerStreamService) -> None:
        self._server = server
        self._streams = streams

    async def stop(self, grace: float | None) -> None:
        """Stop serving (streams get ``grace`` seconds to end), then wait
        until every stream has cleaned up after itself: grpc returns from
        ``stop`` before the generators it cancelled have run their
        ``finally``."""
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
) -> tuple[GrpcServer, int]:
    """Start serving on ``host:port`` (0 picks a free port); returns the
    server and the bound port. TLS when the engine's settings name a
    certificate and key."""
    server = grpc.aio.server()
    streams = WorkerStreamService(engine, auth)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(streams, server)
    job_service_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(client_api), server)
    public_service_pb2_grpc.add_PublicServiceServicer_to_server(PublicServicer(public_api), server)
    address = f"{host}:{port}"
    credentials = server_credentials(engine.config)
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {address}")
    await server.start()
    return GrpcServer(server, streams), bound


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from ``TLS_CERT_PATH``/``TLS_KEY_PATH`` (PEM), or None."""
    if settings.tls_cert_path is None or settings.tls_key_path is None:
        return None
    key = settings.tls_key_path.read_bytes()
    chain = settings.tls_cert_path.read_bytes()
    return grpc.ssl_server_credentials([(key, chain)])
