"""``PublicService`` over a real grpc.aio server: status, metrics, docs, the
OpenAPI document, human decisions and the development flush, with the same
rules as their REST twins under ``/_public``."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from avtomatika.v1 import job_pb2, job_service_pb2_grpc, public_service_pb2_grpc
from avtomatika.v1.job_service_pb2 import CreateJobRequest, GetJobRequest
from avtomatika.v1.public_service_pb2 import (
    FlushDbRequest,
    GetDocsRequest,
    GetMetricsRequest,
    GetOpenApiRequest,
    GetStatusRequest,
    SubmitApprovalRequest,
)
from tests.support import CLIENT_TOKEN
from tests.support.blueprints import approval_blueprint, echo_blueprint
from tests.support.orchestrator import GrpcChannel, StartOrchestrator

pytestmark = pytest.mark.both_stores

AUTH = (("x-client-token", CLIENT_TOKEN),)


async def public(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, **settings: Any
) -> tuple[
    public_service_pb2_grpc.PublicServiceAsyncStub, job_service_pb2_grpc.JobServiceAsyncStub
]:
    orchestrator = await start_orchestrator([echo_blueprint(), approval_blueprint()], **settings)
    channel = grpc_channel(orchestrator)
    return (
        public_service_pb2_grpc.PublicServiceStub(channel),
        job_service_pb2_grpc.JobServiceStub(channel),
    )


async def test_status_metrics_docs_and_openapi(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    stub, _ = await public(start_orchestrator, grpc_channel)
    assert (await stub.GetStatus(GetStatusRequest())).status == "ok"
    metrics = (await stub.GetMetrics(GetMetricsRequest())).body
    assert metrics.content_type.startswith("text/plain")
    assert b"# TYPE" in metrics.data
    docs = (await stub.GetDocs(GetDocsRequest())).body
    assert docs.content_type.startswith("text/html")
    assert b"<html" in docs.data.lower()
    document = json.loads((await stub.GetOpenApi(GetOpenApiRequest())).body.data)
    assert document["openapi"].startswith("3.")
    assert "/api/v1/jobs/review" in document["paths"]  # the blueprints' create routes too


async def test_a_human_decision_over_grpc_moves_the_job_and_a_bad_one_is_refused(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    stub, jobs = await public(start_orchestrator, grpc_channel)
    job_id = (
        await jobs.CreateJob(
            CreateJobRequest(api_version="v1", endpoint="jobs/review"), metadata=AUTH
        )
    ).job_id
    waiting = await jobs.GetJob(GetJobRequest(job_id=job_id, wait=10), metadata=AUTH)
    if waiting.job.status != job_pb2.JOB_STATUS_WAITING_FOR_HUMAN:
        waiting = await jobs.GetJob(GetJobRequest(job_id=job_id, wait=10), metadata=AUTH)
    assert waiting.job.status == job_pb2.JOB_STATUS_WAITING_FOR_HUMAN

    for decision, code in (
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("maybe", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitApproval(SubmitApprovalRequest(job_id=job_id, decision=decision))
        assert refused.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.SubmitApproval(SubmitApprovalRequest(job_id="no-such-job", decision="approved"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    answer = await stub.SubmitApproval(SubmitApprovalRequest(job_id=job_id, decision="approved"))
    assert (answer.status, answer.job_id) == ("approval_received", job_id)
    job = (await jobs.GetJob(GetJobRequest(job_id=job_id, wait=10), metadata=AUTH)).job
    assert job.status == job_pb2.JOB_STATUS_FINISHED
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.SubmitApproval(SubmitApprovalRequest(job_id=job_id, decision="approved"))
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_flush_is_not_found_unless_enabled(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    stub, jobs = await public(start_orchestrator, grpc_channel)
    job_id = (
        await jobs.CreateJob(
            CreateJobRequest(api_version="v1", endpoint="jobs/echo"), metadata=AUTH
        )
    ).job_id
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.FlushDb(FlushDbRequest())
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await jobs.GetJob(GetJobRequest(job_id=job_id), metadata=AUTH)).job.id == job_id


async def test_flush_when_enabled_empties_the_store(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    stub, jobs = await public(start_orchestrator, grpc_channel, debug_flush_enabled=True)
    job_id = (
        await jobs.CreateJob(
            CreateJobRequest(api_version="v1", endpoint="jobs/echo"), metadata=AUTH
        )
    ).job_id
    assert (await stub.FlushDb(FlushDbRequest())).status == "db_flushed"
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await jobs.GetJob(GetJobRequest(job_id=job_id), metadata=AUTH)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
