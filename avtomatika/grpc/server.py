"""Builds the grpc.aio server for an engine."""

from __future__ import annotations

import grpc

from avtomatika.auth import Authenticator
from avtomatika.engine import Engine
from avtomatika.grpc.worker_stream import WorkerStreamService
from avtomatika.v1 import worker_service_pb2_grpc

__all__ = ["start_grpc_server"]


async def start_grpc_server(
    engine: Engine, auth: Authenticator, host: str, port: int
) -> tuple[grpc.aio.Server, int]:
    """Start serving on ``host:port`` (0 picks a free port); returns the
    server and the bound port."""
    server = grpc.aio.server()
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
        WorkerStreamService(engine, auth), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {host}:{port}")
    await server.start()
    return server, bound
