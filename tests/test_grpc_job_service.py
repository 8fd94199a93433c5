"""``JobService`` over a real grpc.aio server, through the stubs generated
from ``proto/``, as a polyglot team would call it: the same rules as REST
(tokens, ownership, validation, limits), answered as gRPC statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable
from pathlib import Path
from typing import Any, cast

import aiohttp
import grpc
import pytest

from avtomatika import OrchestratorEngine
from avtomatika.payload import to_payload
from avtomatika.v1 import job_pb2, job_service_pb2_grpc
from avtomatika.v1.job_service_pb2 import (
    CancelJobRequest,
    CreateJobRequest,
    DownloadFileRequest,
    GetBlueprintGraphRequest,
    GetDashboardRequest,
    GetJobHistoryRequest,
    GetJobRequest,
    GetUploadUrlRequest,
    ListWorkersRequest,
    StreamJobEventsRequest,
    UploadFileRequest,
    UploadFileStreamRequest,
)
from avtomatika.v1.payload_pb2 import Payload
from tests.support import CLIENT_TOKEN, RawWorker
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, StartOrchestrator
from tests.support.s3 import S3Emulator, unique_bucket

pytestmark = pytest.mark.both_stores

ACME, GLOBEX = "acme-token-0123456789", "globex-token-0123456789"


def stub_for(channel: grpc.aio.Channel) -> job_service_pb2_grpc.JobServiceAsyncStub:
    return job_service_pb2_grpc.JobServiceStub(channel)


def auth(token: str = CLIENT_TOKEN) -> tuple[tuple[str, str], ...]:
    return (("x-client-token", token),)


def echo_request(**fields: Any) -> CreateJobRequest:
    values: dict[str, Any] = {"api_version": "v1", "endpoint": "jobs/echo"}
    return CreateJobRequest(initial_data=to_payload({"n": 7}), **(values | fields))


async def status_of(error: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> tuple[Any, str, str]:
    """The status, details and machine-readable code of a failed call."""
    code = trailers(error.value).get("avtomatika-error-code")
    return error.value.code(), error.value.details() or "", str(code)


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    # grpc's stubs type metadata items as objects; at run time they are pairs.
    items = cast(Iterable[tuple[str, object]], error.trailing_metadata() or ())
    return {key: str(value) for key, value in items}


async def test_a_job_created_followed_and_finished_over_grpc(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    channel = grpc_channel(orchestrator)
    jobs = stub_for(channel)
    created = await jobs.CreateJob(echo_request(), metadata=auth())
    assert created.status == "accepted"

    call = jobs.StreamJobEvents(StreamJobEventsRequest(job_id=created.job_id), metadata=auth())
    events = aiter(call)
    first = await anext(events)
    assert first.job_id == created.job_id  # the current state comes first

    worker = RawWorker(channel, "w-1")
    await worker.hello(["echo"])
    task = await worker.next_task()
    await worker.succeed(task, {"echoed": 7})
    seen = [first.status]
    seen += [event.status async for event in events]
    assert seen[-1] == job_pb2.JOB_STATUS_FINISHED  # and the stream ended after it
    await worker.close()

    job = (await jobs.GetJob(GetJobRequest(job_id=created.job_id), metadata=auth())).job
    assert job.status == job_pb2.JOB_STATUS_FINISHED
    history = await jobs.GetJobHistory(GetJobHistoryRequest(job_id=job.id), metadata=auth())
    assert history.events  # written asynchronously, but the job's creation is long past


async def test_get_job_with_wait_answers_when_the_job_changes(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], job_wait_max_seconds=30)
    channel = grpc_channel(orchestrator)
    jobs = stub_for(channel)
    job_id = (await jobs.CreateJob(echo_request(), metadata=auth())).job_id
    waiting = jobs.GetJob(GetJobRequest(job_id=job_id, wait=20), metadata=auth())
    worker = RawWorker(channel, "w-1")
    await worker.hello(["echo"])
    await worker.succeed(await worker.next_task(), {"echoed": 7})
    # Whether the wait began before the result or after, it ends with the job.
    assert (await waiting).job.status == job_pb2.JOB_STATUS_FINISHED
    await worker.close()


async def test_cancel_over_grpc_and_a_second_cancel_is_a_failed_precondition(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    jobs = stub_for(grpc_channel(orchestrator))
    job_id = (await jobs.CreateJob(echo_request(), metadata=auth())).job_id
    cancelled = await jobs.CancelJob(CancelJobRequest(job_id=job_id), metadata=auth())
    assert cancelled.status == "cancellation_request_accepted"  # no worker held it
    job = (await jobs.GetJob(GetJobRequest(job_id=job_id), metadata=auth())).job
    assert job.status == job_pb2.JOB_STATUS_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await jobs.CancelJob(CancelJobRequest(job_id=job_id), metadata=auth())
    assert (await status_of(again))[::2] == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "failed_precondition",
    )


async def test_workers_graph_and_dashboard_over_grpc(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    channel = grpc_channel(orchestrator)
    jobs = stub_for(channel)
    worker = RawWorker(channel, "w-listed")
    await worker.hello(["echo"])
    listed = await jobs.ListWorkers(ListWorkersRequest(), metadata=auth())
    assert [w.registration.worker_id for w in listed.workers] == ["w-listed"]
    graph = await jobs.GetBlueprintGraph(
        GetBlueprintGraphRequest(blueprint_name="echo"), metadata=auth()
    )
    assert graph.body.content_type == "text/vnd.graphviz"
    assert graph.body.data.startswith(b"digraph")
    await jobs.CreateJob(echo_request(), metadata=auth())
    dashboard = await jobs.GetDashboard(GetDashboardRequest(), metadata=auth())
    assert dashboard.workers_by_transport["grpc"] == 1
    assert sum(dashboard.jobs_by_status.values()) == 1
    await worker.close()


async def test_tokens_are_checked_and_another_clients_job_is_not_found(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, tmp_path: Path
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[acme]\ntoken = "{ACME}"\n[globex]\ntoken = "{GLOBEX}"\n')
    orchestrator = await start_orchestrator([echo_blueprint()], clients_config_path=path)
    jobs = stub_for(grpc_channel(orchestrator))
    for metadata in ((), auth("not-a-token")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await jobs.CreateJob(echo_request(), metadata=metadata)
        code, details, machine = await status_of(refused)
        assert (code, machine) == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
        assert "x-client-token" in details

    job_id = (await jobs.CreateJob(echo_request(), metadata=auth(ACME))).job_id
    for call in (
        jobs.GetJob(GetJobRequest(job_id=job_id), metadata=auth(GLOBEX)),
        jobs.CancelJob(CancelJobRequest(job_id=job_id), metadata=auth(GLOBEX)),
        jobs.GetJobHistory(GetJobHistoryRequest(job_id=job_id), metadata=auth(GLOBEX)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await call
        assert (await status_of(hidden))[0] == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await (
            stub_for(grpc_channel(orchestrator))
            .StreamJobEvents(StreamJobEventsRequest(job_id=job_id), metadata=auth(GLOBEX))
            .read()
        )
    assert (await status_of(hidden))[0] == grpc.StatusCode.NOT_FOUND
    # The owner still sees it, untouched.
    job = (await jobs.GetJob(GetJobRequest(job_id=job_id), metadata=auth(ACME))).job
    assert job.status != job_pb2.JOB_STATUS_CANCELLED


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            CreateJobRequest(
                api_version="v1",
                endpoint="jobs/echo",
                initial_data=Payload(encoding="json", data=b"{not json"),
            ),
            "initial_data",
        ),
        (
            CreateJobRequest(
                api_version="v1",
                endpoint="jobs/echo",
                initial_data=Payload(encoding="json", data=b"[1, 2]"),
            ),
            "initial_data",
        ),
        (echo_request(dispatch_timeout=-1), "dispatch_timeout"),
        (echo_request(result_timeout=10.0**12), "result_timeout"),
        (echo_request(webhook_url="ftp://example.com/hook"), "webhook_url"),
        (echo_request(webhook_url="http://127.0.0.1/hook"), "webhook_url"),
    ],
)
async def test_bad_create_requests_are_invalid_argument_naming_the_field(
    start_orchestrator: StartOrchestrator,
    grpc_channel: GrpcChannel,
    request_: CreateJobRequest,
    field: str,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    jobs = stub_for(grpc_channel(orchestrator))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await jobs.CreateJob(request_, metadata=auth())
    code, details, machine = await status_of(refused)
    assert (code, machine) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")
    assert field in details
    assert await orchestrator.engine.storage.count_jobs() == {}  # nothing half-written


async def test_unknown_routes_jobs_and_blueprints_are_not_found_and_a_bad_wait_is_invalid(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    jobs = stub_for(grpc_channel(orchestrator))
    calls: list[Awaitable[object]] = [
        jobs.CreateJob(echo_request(endpoint="jobs/nothing-here"), metadata=auth()),
        jobs.GetJob(GetJobRequest(job_id="no-such-job"), metadata=auth()),
        jobs.GetBlueprintGraph(GetBlueprintGraphRequest(blueprint_name="nope"), metadata=auth()),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call
        assert (await status_of(missing))[0] == grpc.StatusCode.NOT_FOUND
    job_id = (await jobs.CreateJob(echo_request(), metadata=auth())).job_id
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await jobs.GetJob(GetJobRequest(job_id=job_id, wait=-1), metadata=auth())
    code, details, _ = await status_of(bad)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "wait" in details


async def test_rate_limited_calls_are_resource_exhausted_with_the_retry_delay(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, tmp_path: Path
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[acme]\ntoken = "{ACME}"\n')
    orchestrator = await start_orchestrator(
        [echo_blueprint()],
        clients_config_path=path,
        rate_limiting_enabled=True,
        rate_limit_limit=2,
        rate_limit_period=60.0,
    )
    jobs = stub_for(grpc_channel(orchestrator))
    for _ in range(2):
        await jobs.ListWorkers(ListWorkersRequest(), metadata=auth(ACME))
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await jobs.ListWorkers(ListWorkersRequest(), metadata=auth(ACME))
    code, _, machine = await status_of(limited)
    assert (code, machine) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
    assert int(trailers(limited.value)["retry-after"]) >= 1


async def test_files_over_grpc_without_s3_are_unimplemented(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    jobs = stub_for(grpc_channel(orchestrator))
    job_id = (await jobs.CreateJob(echo_request(), metadata=auth())).job_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await jobs.GetUploadUrl(
            GetUploadUrlRequest(job_id=job_id, filename="a.txt"), metadata=auth()
        )
    assert (await status_of(refused))[0] == grpc.StatusCode.UNIMPLEMENTED


async def test_files_over_grpc_against_the_s3_emulator(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, s3_emulator: S3Emulator
) -> None:
    bucket = unique_bucket()
    orchestrator: OrchestratorEngine = await start_orchestrator(
        [echo_blueprint()], **s3_emulator.settings(bucket)
    )
    jobs = stub_for(grpc_channel(orchestrator))
    job_id = (await jobs.CreateJob(echo_request(), metadata=auth())).job_id

    upload = await jobs.GetUploadUrl(
        GetUploadUrlRequest(job_id=job_id, filename="in.bin", expires_in=120), metadata=auth()
    )
    assert (upload.expires_in, upload.method) == (120, "PUT")
    async with aiohttp.ClientSession() as http, http.put(upload.url, data=b"straight to s3") as put:
        assert put.status == 200

    request = UploadFileRequest(job_id=job_id, filename="proxied.txt")
    request.content.content_type = "text/plain"
    request.content.data = b"through the orchestrator"
    uploaded = await jobs.UploadFile(request, metadata=auth())
    assert uploaded.s3_uri == f"s3://{bucket}/jobs/{job_id}/proxied.txt"

    for name, content in (
        ("in.bin", b"straight to s3"),
        ("proxied.txt", b"through the orchestrator"),
    ):
        url = (
            await jobs.DownloadFile(
                DownloadFileRequest(job_id=job_id, filename=name), metadata=auth()
            )
        ).url
        async with aiohttp.ClientSession() as http, http.get(url) as got:
            assert await got.read() == content
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await jobs.DownloadFile(
            DownloadFileRequest(job_id=job_id, filename="none"), metadata=auth()
        )
    assert (await status_of(missing))[0] == grpc.StatusCode.NOT_FOUND


async def test_a_streamed_upload_goes_to_s3_in_parts(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, s3_emulator: S3Emulator
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], **s3_emulator.settings(unique_bucket())
    )
    jobs = stub_for(grpc_channel(orchestrator))
    job_id = (await jobs.CreateJob(echo_request(), metadata=auth())).job_id
    chunk = bytes(range(256)) * 256  # 64 KiB
    count = 100  # 6.25 MiB: more than one multipart part

    async def stream() -> AsyncIterator[UploadFileStreamRequest]:
        yield UploadFileStreamRequest(job_id=job_id, filename="big.bin", chunk=chunk)
        for _ in range(count - 1):
            yield UploadFileStreamRequest(chunk=chunk)

    uploaded = await jobs.UploadFileStream(stream(), metadata=auth())
    assert (uploaded.status, uploaded.size) == ("uploaded", len(chunk) * count)
    url = (
        await jobs.DownloadFile(
            DownloadFileRequest(job_id=job_id, filename="big.bin"), metadata=auth()
        )
    ).url
    async with aiohttp.ClientSession() as http, http.get(url) as got:
        assert await got.read() == chunk * count

    async def nothing() -> AsyncIterator[UploadFileStreamRequest]:
        return
        yield  # an empty stream

    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await jobs.UploadFileStream(nothing(), metadata=auth())
    assert (await status_of(empty))[0] == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_unexpected_error_is_internal_and_tells_nothing_of_it(
    start_orchestrator: StartOrchestrator,
    grpc_channel: GrpcChannel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    jobs = stub_for(grpc_channel(orchestrator))
    job_id = (await jobs.CreateJob(echo_request(), metadata=auth())).job_id

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("secret-internal-detail")

    monkeypatch.setattr(orchestrator.engine, "get_job", broken)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await jobs.GetJob(GetJobRequest(job_id=job_id), metadata=auth())
    code, details, machine = await status_of(failed)
    assert (code, details, machine) == (grpc.StatusCode.INTERNAL, "internal error", "internal")
    assert "secret-internal-detail" in caplog.text  # logged for the operator


async def test_stopping_ends_a_followed_stream_cleanly(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], shutdown_grace_seconds=30)
    jobs = stub_for(grpc_channel(orchestrator))
    job_id = (await jobs.CreateJob(echo_request(), metadata=auth())).job_id
    events = aiter(jobs.StreamJobEvents(StreamJobEventsRequest(job_id=job_id), metadata=auth()))
    assert (await anext(events)).job_id == job_id
    await orchestrator.stop()  # would wait out the 30 s grace for the stream before
    assert [event async for event in events] == []  # ended, not UNAVAILABLE
