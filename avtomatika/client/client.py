"""The client: every use case of ``JobService`` and the approval of
``PublicService``, over one gRPC channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from avtomatika.channel_tls import TlsFiles
from avtomatika.client import _wire
from avtomatika.client.errors import DeadlineExceeded, error_from
from avtomatika.client.views import (
    BlueprintView,
    Dashboard,
    HistoryEvent,
    JobEvent,
    JobView,
    UploadedFile,
    WorkerView,
)
from avtomatika.payload import message_limit, to_payload
from avtomatika.v1 import job_service_pb2_grpc, public_service_pb2_grpc
from avtomatika.v1.job_service_pb2 import (
    ApproveJobRequest,
    CancelJobRequest,
    CreateJobRequest,
    DownloadFileRequest,
    GetBlueprintGraphRequest,
    GetDashboardRequest,
    GetJobHistoryRequest,
    GetJobRequest,
    GetUploadUrlRequest,
    ListBlueprintsRequest,
    ListJobsRequest,
    ListWorkersRequest,
    RetryJobRequest,
    StreamJobEventsRequest,
    UploadFileStreamRequest,
)
from avtomatika.v1.public_service_pb2 import SubmitApprovalRequest

__all__ = ["CLIENT_TOKEN_KEY", "Client"]

CLIENT_TOKEN_KEY = "x-client-token"
"""The metadata key of the client's token."""

_APPROVAL_TOKEN_KEY = "x-approval-token"
# gRPC refuses messages over 4 MiB by default; 64 KiB chunks keep an upload
# well under it and its memory small on both ends.
_CHUNK_SIZE = 64 * 1024
# One GetJob long-poll of wait() holds at most this long; the server caps
# its waits (JOB_WAIT_MAX_SECONDS, 60 by default) and answers earlier then.
_WAIT_SLICE_SECONDS = 60.0

T = TypeVar("T")


class Client:
    """An Avtomatika client over gRPC::

        async with Client("orchestrator:50051", token) as client:
            job_id = await client.create_job("jobs/echo", {"text": "hi"})
            job = await client.wait(job_id)

    ``tls`` is the channel's TLS: :class:`~avtomatika.client.TlsFiles` (the
    server's CA bundle, and for mutual TLS a client certificate and key),
    or credentials built by hand (``grpc.ssl_channel_credentials()``); None
    takes the files from ``AVTOMATIKA_TLS_CA``, ``AVTOMATIKA_TLS_CERT`` and
    ``AVTOMATIKA_TLS_KEY``, and with none of them set connects in plaintext.
    ``timeout`` is the deadline, in seconds, of each
    unary call (None for none); streams (:meth:`follow`, :meth:`upload`)
    have none, and a :meth:`wait` long-poll gets its wait on top.
    ``max_message_bytes`` bounds each message both ways: by default the
    server's default ``MAX_PAYLOAD_BYTES`` with its envelope, so a job the
    server accepts can be read back whole (raise both together).

    Every failed call raises a :class:`~avtomatika.client.ClientError`.
    """

    def __init__(
        self,
        address: str,
        token: str,
        *,
        tls: TlsFiles | grpc.ChannelCredentials | None = None,
        timeout: float | None = 30.0,
        max_message_bytes: int = message_limit(),
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls is None:
            tls = TlsFiles.from_env()
        credentials = tls.credentials() if isinstance(tls, TlsFiles) else tls
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        self._jobs = job_service_pb2_grpc.JobServiceStub(self._channel)
        self._public = public_service_pb2_grpc.PublicServiceStub(self._channel)
        self._metadata = ((CLIENT_TOKEN_KEY, token),)
        self._timeout = timeout

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls still running end as cancelled."""
        await self._channel.close(grace=None)

    async def create_job(
        self,
        route: str,
        initial_data: dict[str, Any] | None = None,
        *,
        api_version: str | None = None,
        webhook_url: str | None = None,
        dispatch_timeout: float | None = None,
        result_timeout: float | None = None,
    ) -> str:
        """Start a job of the blueprint served at ``route``; its id.

        ``route`` is the blueprint's endpoint (``"jobs/echo"``, of API
        version ``"v1"`` unless ``api_version`` says otherwise), or the
        endpoint behind its version (``"v1/jobs/echo"``), or the route a
        :class:`BlueprintView` shows (``"/api/v1/jobs/echo"``).
        ``dispatch_timeout`` is how long a task may wait for a worker and
        ``result_timeout`` the deadline for results, both in seconds;
        ``webhook_url`` is notified when the job ends."""
        version, endpoint = _wire.split_route(route, api_version)
        request = CreateJobRequest(
            api_version=version,
            endpoint=endpoint,
            webhook_url=webhook_url or "",
            dispatch_timeout=dispatch_timeout or 0.0,
            result_timeout=result_timeout or 0.0,
        )
        if initial_data is not None:
            request.initial_data.CopyFrom(to_payload(initial_data))
        response = await self._unary(
            self._jobs.CreateJob(request, metadata=self._metadata, timeout=self._timeout)
        )
        return response.job_id

    async def get_job(self, job_id: str) -> JobView:
        """The job as it is now."""
        return await self._get_job(job_id, 0.0)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """The job once it has ended (its status is terminal), holding
        long-polls on the server rather than polling; after ``timeout``
        seconds without an end, :class:`DeadlineExceeded`."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = _WAIT_SLICE_SECONDS if deadline is None else deadline - loop.time()
            job = await self._get_job(job_id, max(0.0, min(remaining, _WAIT_SLICE_SECONDS)))
            if job.terminal:
                return job
            if deadline is not None and loop.time() >= deadline:
                raise DeadlineExceeded(
                    f"job {job_id} is still {job.status} after {timeout} seconds"
                )

    async def _get_job(self, job_id: str, wait: float) -> JobView:
        # The call's deadline runs from its start: give it the wait on top.
        deadline = None if self._timeout is None else self._timeout + wait
        response = await self._unary(
            self._jobs.GetJob(
                GetJobRequest(job_id=job_id, wait=wait),
                metadata=self._metadata,
                timeout=deadline,
            )
        )
        return _wire.job_view(response.job)

    async def follow(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's changes as they happen: its current state first, then
        one event per change of status, state or progress, ending after a
        terminal status. Leaving the loop early ends the stream once the
        generator is closed: at once with ``contextlib.aclosing``, else when
        it is garbage collected."""
        call = self._jobs.StreamJobEvents(
            StreamJobEventsRequest(job_id=job_id), metadata=self._metadata
        )
        try:
            async for event in call:
                yield _wire.job_event(event)
        except grpc.aio.AioRpcError as exc:
            raise error_from(exc) from exc
        finally:
            call.cancel()  # no effect once the stream has ended

    async def cancel(self, job_id: str) -> bool:
        """Cancel the job; whether the cancel was pushed to a worker running
        its task in real time (False: no connected worker held it).
        :class:`Conflict` if the job has already ended."""
        response = await self._unary(
            self._jobs.CancelJob(
                CancelJobRequest(job_id=job_id), metadata=self._metadata, timeout=self._timeout
            )
        )
        return response.status == "cancellation_request_sent"

    async def list_jobs(
        self,
        *,
        statuses: Iterable[str] = (),
        blueprint: str | None = None,
        current_state: str | None = None,
        created_after: datetime | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[JobView]:
        """Every job of this client matching the filters, newest first,
        fetched ``page_size`` at a time (the server's default: 50) as the
        loop goes on. ``statuses`` are lowercase names (``"finished"``);
        ValueError for a name no status has."""
        request = ListJobsRequest(
            statuses=[_wire.job_status_value(name) for name in statuses],
            blueprint=blueprint or "",
            current_state=current_state or "",
            created_after_ms=_wire.ms_of(created_after) if created_after is not None else 0,
            page_size=page_size or 0,
        )
        while True:
            page = await self._unary(
                self._jobs.ListJobs(request, metadata=self._metadata, timeout=self._timeout)
            )
            for job in page.jobs:
                yield _wire.job_view(job)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def job_counts(self) -> dict[str, int]:
        """How many of this client's jobs are in each status (every status,
        zeros included)."""
        page = await self._unary(
            self._jobs.ListJobs(
                ListJobsRequest(page_size=1), metadata=self._metadata, timeout=self._timeout
            )
        )
        return dict(page.counts)

    async def retry(self, job_id: str) -> JobView:
        """Run a failed, error or quarantined job again from the state where
        it stopped, as a new attempt; the job, running. :class:`Conflict`
        for any other status."""
        response = await self._unary(
            self._jobs.RetryJob(
                RetryJobRequest(job_id=job_id), metadata=self._metadata, timeout=self._timeout
            )
        )
        return _wire.job_view(response.job)

    async def decide(self, job_id: str, decision: str) -> JobView:
        """This client's decision (one of :attr:`JobView.approval`'s
        ``decisions``) on its job waiting for a human; the job after it.
        :class:`Conflict` when the job is not waiting, :class:`InvalidArgument`
        for a decision the wait does not offer."""
        response = await self._unary(
            self._jobs.ApproveJob(
                ApproveJobRequest(job_id=job_id, decision=decision),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )
        return _wire.job_view(response.job)

    async def history(self, job_id: str) -> list[HistoryEvent]:
        """Every lifecycle event of the job, oldest first."""
        response = await self._unary(
            self._jobs.GetJobHistory(
                GetJobHistoryRequest(job_id=job_id),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )
        return [_wire.history_event(event) for event in response.events]

    async def upload(
        self,
        job_id: str,
        filename: str,
        data: bytes | AsyncIterable[bytes],
        *,
        content_type: str | None = None,
    ) -> UploadedFile:
        """Store a file in the job's folder through the orchestrator, streamed
        in constant memory: ``data`` is the content or an async iterable of
        its chunks (a file of any size)."""
        head = UploadFileStreamRequest(
            job_id=job_id, filename=filename, content_type=content_type or ""
        )

        async def messages() -> AsyncIterator[UploadFileStreamRequest]:
            yield head
            async for chunk in _chunks(data):
                yield UploadFileStreamRequest(chunk=chunk)

        response = await self._unary(
            self._jobs.UploadFileStream(messages(), metadata=self._metadata)
        )
        return UploadedFile(s3_uri=response.s3_uri, size=response.size)

    async def upload_url(self, job_id: str, filename: str, expires_in: int = 3600) -> str:
        """A presigned URL to PUT the job's file straight to S3, valid for
        ``expires_in`` seconds."""
        response = await self._unary(
            self._jobs.GetUploadUrl(
                GetUploadUrlRequest(job_id=job_id, filename=filename, expires_in=expires_in),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )
        return response.url

    async def download_url(self, job_id: str, filename: str) -> str:
        """A fresh presigned URL to GET the job's file from S3."""
        response = await self._unary(
            self._jobs.DownloadFile(
                DownloadFileRequest(job_id=job_id, filename=filename),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )
        return response.url

    async def workers(self) -> list[WorkerView]:
        """The workers connected now."""
        response = await self._unary(
            self._jobs.ListWorkers(
                ListWorkersRequest(), metadata=self._metadata, timeout=self._timeout
            )
        )
        return [_wire.worker_view(worker) for worker in response.workers]

    async def blueprints(self) -> list[BlueprintView]:
        """The registered blueprints, by name."""
        response = await self._unary(
            self._jobs.ListBlueprints(
                ListBlueprintsRequest(), metadata=self._metadata, timeout=self._timeout
            )
        )
        return [_wire.blueprint_view(blueprint) for blueprint in response.blueprints]

    async def blueprint_graph(self, name: str, format: str = "dot") -> str:
        """The blueprint as a Graphviz DOT document, or with ``format="svg"``
        as an SVG image (each state a ``<g class="state" data-state>``)."""
        response = await self._unary(
            self._jobs.GetBlueprintGraph(
                GetBlueprintGraphRequest(blueprint_name=name, format=format),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )
        # google.api's HttpBody comes untyped; its data is bytes.
        dot: bytes = response.body.data
        return dot.decode()

    async def dashboard(self) -> Dashboard:
        """Aggregate statistics: jobs, queues and workers."""
        response = await self._unary(
            self._jobs.GetDashboard(
                GetDashboardRequest(), metadata=self._metadata, timeout=self._timeout
            )
        )
        return _wire.dashboard(response)

    async def approve(
        self, job_id: str, decision: str, *, approval_token: str | None = None
    ) -> None:
        """Deliver a human decision (one of the blueprint's transitions, e.g.
        ``"approved"``) to a job waiting for one. When the server requires
        approval tokens, pass the job's :attr:`JobView.approval_token`."""
        metadata = ((_APPROVAL_TOKEN_KEY, approval_token),) if approval_token else ()
        await self._unary(
            self._public.SubmitApproval(
                SubmitApprovalRequest(job_id=job_id, decision=decision),
                metadata=metadata,
                timeout=self._timeout,
            )
        )

    @staticmethod
    async def _unary(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise error_from(exc) from exc


async def _chunks(data: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The content in messages of at most :data:`_CHUNK_SIZE` bytes."""
    pieces = _one(data) if isinstance(data, bytes) else data
    async for piece in pieces:
        view = memoryview(piece)
        for start in range(0, len(view), _CHUNK_SIZE):
            yield bytes(view[start : start + _CHUNK_SIZE])


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
