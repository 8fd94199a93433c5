"""Errors over gRPC (:mod:`avtomatika.grpc.status`): one status per canonical
code, and calls refused with our code in the trailing metadata, seen by a
real client of a real server on port 0."""

from __future__ import annotations

import grpc
import pytest

from avtomatika.errors import Code
from avtomatika.grpc.status import ERROR_CODE_KEY, GRPC_STATUS
from avtomatika.v1 import worker_service_pb2_grpc
from avtomatika.v1.worker_pb2 import WorkerRegistration
from avtomatika.v1.worker_service_pb2 import ConnectRequest, Hello, RegisterWorkerRequest
from tests.support import RawWorker
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, StartOrchestrator


def test_every_code_has_the_grpc_status_of_its_name() -> None:
    assert {code: GRPC_STATUS[code] for code in Code} == {
        code: grpc.StatusCode[code.name] for code in Code
    }


async def test_a_refused_stream_says_our_code_in_its_trailers(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = RawWorker(grpc_channel(orchestrator), "bad id!")
    registration = WorkerRegistration(worker_id="bad id!", skills=["echo"])
    await worker.send(ConnectRequest(hello=Hello(registration=registration, initial_credits=1)))

    assert await worker.call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (ERROR_CODE_KEY, "invalid_argument") in tuple(await worker.call.trailing_metadata())


@pytest.mark.parametrize("token", ["wrong-token", None])
async def test_a_bad_token_is_unauthenticated_in_its_trailers_too(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, token: str | None
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = RawWorker(grpc_channel(orchestrator), "w-1", token=token)

    assert await worker.call.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (ERROR_CODE_KEY, "unauthenticated") in tuple(await worker.call.trailing_metadata())


async def test_a_refused_unary_worker_rpc_carries_its_code_in_the_trailers(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    stub = worker_service_pb2_grpc.WorkerServiceStub(grpc_channel(orchestrator))
    registration = WorkerRegistration(worker_id="w-1", skills=["echo"])
    call = stub.RegisterWorker(
        RegisterWorkerRequest(registration=registration),
        metadata=(("x-worker-token", "not-the-token"),),
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-worker-token" in (refused.value.details() or "")
    assert (ERROR_CODE_KEY, "unauthenticated") in tuple(await call.trailing_metadata())
