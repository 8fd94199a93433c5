"""``JobService``: the client API over gRPC, for teams that generate stubs
from ``proto/``.

Each RPC reads the ``x-client-token`` metadata, calls the same
:class:`~avtomatika.services.client_api.ClientApi` method as its REST twin
and renders the result as the response message; errors leave with the gRPC
status of their code (:mod:`avtomatika.grpc.status`). Another client's job
is NOT_FOUND, exactly as over REST.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from avtomatika.blueprint.context import ClientInfo
from avtomatika.errors import InvalidArgument
from avtomatika.grpc.status import rpc_errors
from avtomatika.payload import from_payload, to_payload
from avtomatika.services.client_api import ClientApi, JobFilter, owner_view
from avtomatika.services.requests import JobRequest
from avtomatika.v1 import job_service_pb2_grpc
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.job_service_pb2 import (
    ApproveJobRequest,
    ApproveJobResponse,
    BlueprintSummary,
    CancelJobRequest,
    CancelJobResponse,
    CreateJobRequest,
    CreateJobResponse,
    DownloadFileRequest,
    DownloadFileResponse,
    GetBlueprintGraphRequest,
    GetBlueprintGraphResponse,
    GetDashboardRequest,
    GetDashboardResponse,
    GetJobHistoryRequest,
    GetJobHistoryResponse,
    GetJobRequest,
    GetJobResponse,
    GetUploadUrlRequest,
    GetUploadUrlResponse,
    ListBlueprintsRequest,
    ListBlueprintsResponse,
    ListJobsRequest,
    ListJobsResponse,
    ListWorkersRequest,
    ListWorkersResponse,
    RetryJobRequest,
    RetryJobResponse,
    StreamJobEventsRequest,
    StreamJobEventsResponse,
    UploadFileRequest,
    UploadFileResponse,
    UploadFileStreamRequest,
    UploadFileStreamResponse,
)
from avtomatika.v1.payload_pb2 import Payload

__all__ = ["CLIENT_TOKEN_KEY", "JobServicer"]

CLIENT_TOKEN_KEY = "x-client-token"
"""The metadata key of the client's token."""

# How long a followed job may stay quiet before its record is read again
# (notices a job that vanished without an event, as the SSE keep-alive does).
_RECHECK_SECONDS = 15.0

_Context = grpc.aio.ServicerContext[object, object]


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    """Translates ``JobService`` RPCs to :class:`ClientApi` calls."""

    def __init__(self, api: ClientApi) -> None:
        self._api = api

    async def _caller(self, context: _Context) -> ClientInfo:
        token = dict(context.invocation_metadata() or ()).get(CLIENT_TOKEN_KEY)
        return await self._api.caller(
            token if isinstance(token, str) else None, credential=CLIENT_TOKEN_KEY
        )

    async def CreateJob(self, request: CreateJobRequest, context: _Context) -> CreateJobResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            job = JobRequest.check(
                _json_object("initial_data", request.initial_data),
                request.webhook_url,
                # proto3 doubles default to 0, which means "not given".
                request.dispatch_timeout or None,
                request.result_timeout or None,
                allow_private_webhooks=self._api.engine.config.webhook_allow_private,
            )
            route = f"{request.api_version}/{request.endpoint.lstrip('/')}"
            job_id = await self._api.create_job(client, route, job)
            return CreateJobResponse(status="accepted", job_id=job_id)

    async def GetJob(self, request: GetJobRequest, context: _Context) -> GetJobResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            # 0 (proto3's default) is "do not wait", as a missing ?wait= is.
            wait = request.wait if request.wait != 0 else None
            job = await self._api.get_job(client, request.job_id, wait)
            return GetJobResponse(job=owner_view(job))

    async def ListJobs(self, request: ListJobsRequest, context: _Context) -> ListJobsResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            where = JobFilter(
                statuses=frozenset(request.statuses),
                blueprint=request.blueprint,
                current_state=request.current_state,
                created_after_ms=request.created_after_ms,
            )
            jobs, token = await self._api.list_jobs(
                client, where, request.page_size, request.page_token
            )
            counts = await self._api.job_counts(client)
            return ListJobsResponse(jobs=jobs, next_page_token=token, counts=counts)

    async def ListBlueprints(
        self, request: ListBlueprintsRequest, context: _Context
    ) -> ListBlueprintsResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            return ListBlueprintsResponse(
                blueprints=[
                    BlueprintSummary(
                        name=bp.name,
                        route=bp.route,
                        states=bp.states,
                        start_state=bp.start_state,
                        end_states=bp.end_states,
                        input_schema=(
                            to_payload(bp.input_schema) if bp.input_schema is not None else None
                        ),
                    )
                    for bp in self._api.list_blueprints(client)
                ]
            )

    async def StreamJobEvents(
        self, request: StreamJobEventsRequest, context: _Context
    ) -> AsyncIterator[StreamJobEventsResponse]:
        async with rpc_errors(context):
            client = await self._caller(context)
            changes = self._api.follow_job(client, request.job_id, _RECHECK_SECONDS)
            try:
                async for job in changes:
                    if job is not None:
                        yield _event(job)
            finally:
                await changes.aclose()

    async def CancelJob(self, request: CancelJobRequest, context: _Context) -> CancelJobResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            pushed = await self._api.cancel_job(client, request.job_id)
            status = "cancellation_request_sent" if pushed else "cancellation_request_accepted"
            return CancelJobResponse(status=status)

    async def RetryJob(self, request: RetryJobRequest, context: _Context) -> RetryJobResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            return RetryJobResponse(job=await self._api.retry_job(client, request.job_id))

    async def ApproveJob(self, request: ApproveJobRequest, context: _Context) -> ApproveJobResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            job = await self._api.approve_job(client, request.job_id, request.decision)
            return ApproveJobResponse(job=job)

    async def GetJobHistory(
        self, request: GetJobHistoryRequest, context: _Context
    ) -> GetJobHistoryResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            events = await self._api.job_history(client, request.job_id)
            return GetJobHistoryResponse(events=events)

    async def GetUploadUrl(
        self, request: GetUploadUrlRequest, context: _Context
    ) -> GetUploadUrlResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            url, expires_in = await self._api.upload_url(
                client, request.job_id, request.filename, request.expires_in
            )
            return GetUploadUrlResponse(url=url, expires_in=expires_in, method="PUT")

    async def UploadFile(self, request: UploadFileRequest, context: _Context) -> UploadFileResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            s3_uri = await self._api.upload(
                client,
                request.job_id,
                request.filename,
                _Bytes(request.content.data),
                request.content.content_type or None,
            )
            return UploadFileResponse(status="uploaded", s3_uri=s3_uri)

    async def UploadFileStream(
        self, request_iterator: AsyncIterator[UploadFileStreamRequest], context: _Context
    ) -> UploadFileStreamResponse:
        """The first message names the job and the file; each message's chunk
        goes on to S3 as it arrives, in constant memory."""
        async with rpc_errors(context):
            client = await self._caller(context)
            messages = aiter(request_iterator)
            first = await anext(messages, None)
            if first is None:
                raise InvalidArgument("the upload stream carried no message")
            body = _Chunks(first.chunk, messages)
            s3_uri = await self._api.upload(
                client, first.job_id, first.filename, body, first.content_type or None
            )
            return UploadFileStreamResponse(status="uploaded", s3_uri=s3_uri, size=body.size)

    async def DownloadFile(
        self, request: DownloadFileRequest, context: _Context
    ) -> DownloadFileResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            url = await self._api.download_url(client, request.job_id, request.filename)
            return DownloadFileResponse(url=url)

    async def GetBlueprintGraph(
        self, request: GetBlueprintGraphRequest, context: _Context
    ) -> GetBlueprintGraphResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            drawing = self._api.blueprint_graph(client, request.blueprint_name, request.format)
            response = GetBlueprintGraphResponse()
            response.body.content_type = drawing.content_type
            response.body.data = drawing.text.encode()
            return response

    async def ListWorkers(
        self, request: ListWorkersRequest, context: _Context
    ) -> ListWorkersResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            return ListWorkersResponse(workers=await self._api.list_workers(client))

    async def GetDashboard(
        self, request: GetDashboardRequest, context: _Context
    ) -> GetDashboardResponse:
        async with rpc_errors(context):
            client = await self._caller(context)
            return GetDashboardResponse(**await self._api.dashboard(client))


def _json_object(name: str, payload: Payload) -> object:
    """A Payload field as JSON (empty is "not given"); a payload that is not
    JSON is INVALID_ARGUMENT naming the field."""
    if not payload.data:
        return None
    try:
        return from_payload(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{name} is not valid JSON: {exc}") from None


def _event(job: Job) -> StreamJobEventsResponse:
    return StreamJobEventsResponse(
        job_id=job.id,
        status=job.status,
        current_state=job.current_state,
        progress=job.progress,
        progress_message=job.progress_message,
        error=job.error,
        updated_at_ms=job.updated_at_ms,
    )


class _Bytes:
    """A message's bytes as the reader an upload streams from."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    async def read(self, n: int = -1) -> bytes:
        size = len(self._data) if n < 0 else n
        piece, self._data = self._data[:size], self._data[size:]
        return bytes(piece)


class _Chunks:
    """A client stream's chunks as the reader an upload streams from; the
    next message is read only when the upload wants more."""

    __slots__ = ("_buffer", "_messages", "size")

    def __init__(self, first: bytes, messages: AsyncIterator[UploadFileStreamRequest]) -> None:
        self._buffer = bytearray(first)
        self._messages: AsyncIterator[UploadFileStreamRequest] | None = messages
        self.size = 0

    async def read(self, n: int = -1) -> bytes:
        while self._messages is not None and (n < 0 or len(self._buffer) < n):
            message = await anext(self._messages, None)
            if message is None:
                self._messages = None
            else:
                self._buffer += message.chunk
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        piece = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.size += len(piece)
        return piece
