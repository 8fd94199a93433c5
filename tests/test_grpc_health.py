"""Standard gRPC health checking and server reflection, through the stubs
that ship with grpcio (as grpcurl and Kubernetes probes use them): health
follows the store, NOT_SERVING while Redis is stopped and SERVING again once
it is back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, StartOrchestrator
from tests.support.redis import RedisServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OURS = ("avtomatika.v1.WorkerService", "avtomatika.v1.JobService", "avtomatika.v1.PublicService")


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone: the test stops and restarts it."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


async def test_every_service_is_serving_and_unknown_ones_are_not_found(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    health = health_pb2_grpc.HealthStub(grpc_channel(orchestrator))
    for service in ("", *OURS):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_our_services_health_and_itself(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    reflection = reflection_pb2_grpc.ServerReflectionStub(grpc_channel(orchestrator))
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    answer = await anext(aiter(call))
    listed = {service.name for service in answer.list_services_response.service}
    assert listed == {
        *OURS,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    # A stub generator can fetch our contract by name, as grpcurl does.
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=OURS[1])])
    )
    files = (await anext(aiter(call))).file_descriptor_response.file_descriptor_proto
    assert files  # job_service.proto and what it imports


async def test_health_turns_not_serving_while_redis_is_stopped_and_back_after(
    start_orchestrator: StartOrchestrator,
    grpc_channel: GrpcChannel,
    private_redis: RedisServer,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], redis_url=private_redis.url)
    health = health_pb2_grpc.HealthStub(grpc_channel(orchestrator))
    watch = aiter(health.Watch(health_pb2.HealthCheckRequest(service="avtomatika.v1.JobService")))
    assert (await anext(watch)).status == SERVING
    private_redis.stop()
    assert (await anext(watch)).status == NOT_SERVING
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == NOT_SERVING
    private_redis.start()
    assert (await anext(watch)).status == SERVING
