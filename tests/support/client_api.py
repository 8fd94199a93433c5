"""The client API seen through one interface, whichever transport carries it.

:class:`Api` is what a client does (create, read, follow, cancel, list jobs,
read their history, move files, decide an approval, look at blueprints,
workers and the dashboard), with plain Python results; :class:`RestApi` does
it over aiohttp with ``X-Client-Token``, :class:`GrpcApi` through the stubs
generated from ``proto/`` with ``x-client-token`` metadata. Both refuse with
one :class:`ApiError` whose ``kind`` is the canonical code's name, read from
the HTTP status or the gRPC status: the same scenario run over each must
see the same results, since one service layer answers both.

The ``connect_api`` fixture opens an adapter on an orchestrator and closes
what it opened at the end of the test.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from datetime import datetime
from typing import Any, Protocol, cast
from urllib.parse import quote

import aiohttp
import grpc
import pytest

from avtomatika import OrchestratorEngine
from avtomatika.payload import from_payload, to_payload
from avtomatika.status import TERMINAL
from avtomatika.v1 import job_service_pb2_grpc, public_service_pb2_grpc
from avtomatika.v1.history_pb2 import HistoryEventType
from avtomatika.v1.job_pb2 import Job, JobStatus
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
    UploadFileRequest,
)
from avtomatika.v1.public_service_pb2 import SubmitApprovalRequest
from avtomatika.v1.worker_pb2 import WorkerInfo, WorkerStatus, WorkerTransport
from tests.support.follow import EventStream
from tests.support.tokens import CLIENT_TOKEN
from tests.support.waiting import wait_until

__all__ = [
    "TRANSPORTS",
    "Api",
    "ApiError",
    "ConnectApi",
    "GrpcApi",
    "RestApi",
    "connect_api",
    "fetch",
    "put",
    "reaches",
]

TRANSPORTS = ("rest", "grpc")
"""The transports a client can use, as ``connect_api`` names them."""

# The documented HTTP status of each canonical code, written out here rather
# than read from avtomatika.errors: the adapters check the server against the
# contract, not against itself.
_KIND_OF_HTTP_STATUS = {
    400: "invalid_argument",
    401: "unauthenticated",
    404: "not_found",
    409: "failed_precondition",
    413: "resource_exhausted",
    429: "resource_exhausted",
    501: "unimplemented",
    503: "unavailable",
    500: "internal",
}

_ERROR_CODE_KEY = "avtomatika-error-code"
_RETRY_AFTER_KEY = "retry-after"
# GetBlueprintGraph's format -> the content type it answers.
_GRAPH_CONTENT_TYPES = {"": "text/vnd.graphviz", "dot": "text/vnd.graphviz", "svg": "image/svg+xml"}


class ApiError(Exception):
    """A refusal, as either transport gives it.

    ``kind`` is the canonical code (``not_found``, ``unauthenticated``,
    ``invalid_argument``, ``failed_precondition``, ``resource_exhausted``,
    ``unimplemented``, ...); ``message`` is the server's explanation;
    ``retry_after`` the seconds a rate-limited client is told to wait."""

    def __init__(self, kind: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


class Api(Protocol):
    """What a client does, with the same results over either transport."""

    transport: str

    def as_client(self, token: str | None) -> Api:
        """The same API with another token (None: no token at all)."""
        ...

    async def create(
        self,
        endpoint: str,
        initial_data: Any = None,
        *,
        webhook_url: str | None = None,
        dispatch_timeout: float | None = None,
        result_timeout: float | None = None,
    ) -> str:
        """Create a job of the blueprint at ``/api/v1/{endpoint}``; its id."""
        ...

    async def get(self, job_id: str, wait: float | None = None) -> dict[str, Any]:
        """The job: ``id``, ``blueprint_name``, ``status`` (documented
        name), ``current_state``, ``initial_data``, ``state_history``,
        ``result`` (the final ``state_history`` once the job is terminal,
        else None: over gRPC, read from the status and ``state_history``,
        which is what the REST ``result`` documents), ``error``,
        ``progress``, ``created_at_ms``, ``approval_token`` (None unless the
        job waits for a human), ``approval`` (None unless it waits:
        ``integration``, ``message``, ``decisions``, ``expires_at_ms``, the
        last None without a timeout)."""
        ...

    async def follow(self, job_id: str) -> list[str]:
        """The statuses of the job's stream of changes, until it ends."""
        ...

    async def cancel(self, job_id: str) -> str:
        """Cancel the job; the answer's status."""
        ...

    async def history(self, job_id: str) -> list[str]:
        """The names of the job's history events (``job_created``, ...)."""
        ...

    async def list_jobs(
        self,
        *,
        statuses: Sequence[str] = (),
        blueprint: str = "",
        current_state: str = "",
        created_after_ms: int = 0,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[str], str]:
        """One page of the client's jobs: their ids and the next page's token."""
        ...

    async def upload_url(
        self, job_id: str, filename: str, expires_in: int | None = None
    ) -> tuple[str, int]:
        """A presigned PUT URL for a file of the job and its validity
        (``expires_in`` None: not given)."""
        ...

    async def upload(
        self, job_id: str, filename: str, data: bytes, content_type: str = "text/plain"
    ) -> str:
        """Upload through the orchestrator; the file's ``s3://`` URI."""
        ...

    async def download(self, job_id: str, filename: str) -> bytes:
        """A file of the job, fetched from the URL the orchestrator gives."""
        ...

    async def approve(self, job_id: str, decision: str, token: str | None = None) -> str:
        """A human decision for the job (no client token), with the wait's
        approval ``token`` if given; the answer's status."""
        ...

    async def decide(self, job_id: str, decision: str) -> dict[str, Any]:
        """The owner's decision on its job waiting for a human (with the
        client token); the job after it, as :meth:`get` shows it."""
        ...

    async def retry(self, job_id: str) -> dict[str, Any]:
        """Retry the job; the job after it, as :meth:`get` shows it."""
        ...

    async def counts(self) -> dict[str, int]:
        """The listing's counts of the client's jobs per status."""
        ...

    async def graph(self, blueprint: str, format: str = "") -> str:
        """The blueprint's state machine as Graphviz DOT, or in ``format``
        (``dot``, ``svg``)."""
        ...

    async def workers(self) -> list[dict[str, Any]]:
        """The connected workers: ``worker_id``, ``skills``, ``status``, ``transport``."""
        ...

    async def blueprints(self) -> dict[str, Any]:
        """Each registered blueprint's ``input_schema`` (None without one), by name."""
        ...

    async def dashboard(self) -> dict[str, Any]:
        """The dashboard's statistics, as the REST JSON shows them (but
        ``oldest_queued_at_by_skill`` as ``oldest_queued_at_ms``, epoch ms)."""
        ...


class RestApi:
    """:class:`Api` over the REST port."""

    transport = "rest"

    def __init__(self, base_url: str, session: aiohttp.ClientSession, token: str | None) -> None:
        self._base = base_url
        self._session = session
        self._headers = {"X-Client-Token": token} if token is not None else {}

    def as_client(self, token: str | None) -> RestApi:
        return RestApi(self._base, self._session, token)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        expect: int = 200,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> aiohttp.ClientResponse:
        response = await self._session.request(
            method,
            self._base + path,
            headers={**self._headers, **(headers or {})},
            allow_redirects=False,
            **kwargs,
        )
        if response.status >= 400:
            body = await response.json()
            retry_after = response.headers.get("Retry-After")
            raise ApiError(
                _KIND_OF_HTTP_STATUS.get(response.status, f"http_{response.status}"),
                body["error"],
                int(retry_after) if retry_after is not None else None,
            )
        assert response.status == expect, (response.status, await response.text())
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with await self._call(method, path, **kwargs) as response:
            return await response.json()

    async def create(
        self,
        endpoint: str,
        initial_data: Any = None,
        *,
        webhook_url: str | None = None,
        dispatch_timeout: float | None = None,
        result_timeout: float | None = None,
    ) -> str:
        body: dict[str, Any] = {"initial_data": {} if initial_data is None else initial_data}
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        if dispatch_timeout is not None:
            body["dispatch_timeout"] = dispatch_timeout
        if result_timeout is not None:
            body["result_timeout"] = result_timeout
        # A file-like body: aiohttp warns about sending large bytes at once.
        answer = await self._json(
            "POST",
            f"/api/v1/{endpoint}",
            data=io.BytesIO(json.dumps(body).encode()),
            headers={"Content-Type": "application/json"},
            expect=202,
        )
        assert answer["status"] == "accepted", answer
        job_id = answer["job_id"]
        assert isinstance(job_id, str)
        return job_id

    async def get(self, job_id: str, wait: float | None = None) -> dict[str, Any]:
        params = {"wait": str(wait)} if wait is not None else {}
        return _rest_view(await self._json("GET", f"/api/v1/jobs/{job_id}", params=params))

    async def decide(self, job_id: str, decision: str) -> dict[str, Any]:
        path = f"/api/v1/jobs/{job_id}/approve"
        return _rest_view(await self._json("POST", path, json={"decision": decision}))

    async def retry(self, job_id: str) -> dict[str, Any]:
        return _rest_view(await self._json("POST", f"/api/v1/jobs/{job_id}/retry"))

    async def counts(self) -> dict[str, int]:
        page = await self._json("GET", "/api/v1/jobs", params={"page_size": "1"})
        counts: dict[str, int] = page["counts"]
        return counts

    async def follow(self, job_id: str) -> list[str]:
        statuses: list[str] = []
        async with await self._call("GET", f"/api/v1/jobs/{job_id}/events") as response:
            assert response.content_type == "text/event-stream"
            stream = EventStream(response)
            while (event := await stream.next()) is not None:
                kind, data = event
                if kind == "error":
                    raise ApiError("not_found", data["error"])
                statuses.append(data["status"])
        return statuses

    async def cancel(self, job_id: str) -> str:
        answer = await self._json("POST", f"/api/v1/jobs/{job_id}/cancel")
        status: str = answer["status"]
        return status

    async def history(self, job_id: str) -> list[str]:
        events = await self._json("GET", f"/api/v1/jobs/{job_id}/history")
        return [event["type"] for event in events]

    async def list_jobs(
        self,
        *,
        statuses: Sequence[str] = (),
        blueprint: str = "",
        current_state: str = "",
        created_after_ms: int = 0,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[str], str]:
        query = {
            "statuses": ",".join(statuses),
            "blueprint": blueprint,
            "current_state": current_state,
            "created_after_ms": str(created_after_ms) if created_after_ms else "",
            "page_size": str(page_size) if page_size else "",
            "page_token": page_token,
        }
        params = {name: value for name, value in query.items() if value}
        page = await self._json("GET", "/api/v1/jobs", params=params)
        return [job["id"] for job in page["jobs"]], page["next_page_token"]

    async def upload_url(
        self, job_id: str, filename: str, expires_in: int | None = None
    ) -> tuple[str, int]:
        params = {"filename": filename}
        if expires_in is not None:
            params["expires_in"] = str(expires_in)
        answer = await self._json("GET", f"/api/v1/jobs/{job_id}/files/upload", params=params)
        assert answer["method"] == "PUT", answer
        return answer["url"], answer["expires_in"]

    async def upload(
        self, job_id: str, filename: str, data: bytes, content_type: str = "text/plain"
    ) -> str:
        answer = await self._json(
            "PUT",
            f"/api/v1/jobs/{job_id}/files/content/{quote(filename, safe='')}",
            data=data,
            headers={"Content-Type": content_type},
        )
        assert answer["status"] == "uploaded", answer
        s3_uri: str = answer["s3_uri"]
        return s3_uri

    async def download(self, job_id: str, filename: str) -> bytes:
        path = f"/api/v1/jobs/{job_id}/files/download/{quote(filename, safe='')}"
        async with await self._call("GET", path, expect=302) as response:
            location = response.headers["Location"]
        return await fetch(location)

    async def approve(self, job_id: str, decision: str, token: str | None = None) -> str:
        # A public endpoint: the decision carries no client token.
        response = await self._session.post(
            f"{self._base}/_public/webhooks/approval/{job_id}",
            json={"decision": decision},
            headers={"X-Approval-Token": token} if token is not None else {},
        )
        async with response:
            answer = await response.json()
            if response.status >= 400:
                raise ApiError(_KIND_OF_HTTP_STATUS[response.status], answer["error"])
        assert answer["job_id"] == job_id, answer
        status: str = answer["status"]
        return status

    async def graph(self, blueprint: str, format: str = "") -> str:
        query = f"?format={quote(format)}" if format else ""
        path = f"/api/v1/blueprints/{blueprint}/graph{query}"
        async with await self._call("GET", path) as response:
            assert response.content_type == _GRAPH_CONTENT_TYPES[format]
            return await response.text()

    async def workers(self) -> list[dict[str, Any]]:
        listed = await self._json("GET", "/api/v1/workers")
        return [
            {
                "worker_id": worker["worker_id"],
                "skills": worker["skills"],
                "status": worker["status"],
                "transport": worker["transport"],
            }
            for worker in listed
        ]

    async def dashboard(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = await self._json("GET", "/api/v1/dashboard")
        oldest = snapshot.pop("oldest_queued_at_by_skill")
        snapshot["oldest_queued_at_ms"] = {k: _ms_from_iso(v) for k, v in oldest.items()}
        return snapshot

    async def blueprints(self) -> dict[str, Any]:
        listed = await self._json("GET", "/api/v1/blueprints")
        return {bp["name"]: bp["input_schema"] for bp in listed["blueprints"]}


class GrpcApi:
    """:class:`Api` over the gRPC port, through the generated stubs."""

    transport = "grpc"

    def __init__(self, channel: grpc.aio.Channel, token: str | None) -> None:
        self._channel = channel
        self._token = token
        self._jobs: job_service_pb2_grpc.JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(
            channel
        )
        self._public: public_service_pb2_grpc.PublicServiceAsyncStub = (
            public_service_pb2_grpc.PublicServiceStub(channel)
        )
        self._metadata = (("x-client-token", token),) if token is not None else ()

    def as_client(self, token: str | None) -> GrpcApi:
        return GrpcApi(self._channel, token)

    async def create(
        self,
        endpoint: str,
        initial_data: Any = None,
        *,
        webhook_url: str | None = None,
        dispatch_timeout: float | None = None,
        result_timeout: float | None = None,
    ) -> str:
        request = CreateJobRequest(api_version="v1", endpoint=endpoint)
        if initial_data is not None:
            request.initial_data.CopyFrom(to_payload(initial_data))
        if webhook_url is not None:
            request.webhook_url = webhook_url
        if dispatch_timeout is not None:
            request.dispatch_timeout = dispatch_timeout
        if result_timeout is not None:
            request.result_timeout = result_timeout
        with _statuses():
            answer = await self._jobs.CreateJob(request, metadata=self._metadata)
        assert answer.status == "accepted", answer
        return answer.job_id

    async def get(self, job_id: str, wait: float | None = None) -> dict[str, Any]:
        request = GetJobRequest(job_id=job_id, wait=wait or 0)
        with _statuses():
            job = (await self._jobs.GetJob(request, metadata=self._metadata)).job
        return _job_view(job)

    async def follow(self, job_id: str) -> list[str]:
        call = self._jobs.StreamJobEvents(
            StreamJobEventsRequest(job_id=job_id), metadata=self._metadata
        )
        with _statuses():
            return [_status_name(event.status) async for event in call]

    async def cancel(self, job_id: str) -> str:
        with _statuses():
            answer = await self._jobs.CancelJob(
                CancelJobRequest(job_id=job_id), metadata=self._metadata
            )
        return answer.status

    async def history(self, job_id: str) -> list[str]:
        with _statuses():
            answer = await self._jobs.GetJobHistory(
                GetJobHistoryRequest(job_id=job_id), metadata=self._metadata
            )
        return [
            HistoryEventType.Name(event.type).removeprefix("HISTORY_EVENT_TYPE_").lower()
            for event in answer.events
        ]

    async def list_jobs(
        self,
        *,
        statuses: Sequence[str] = (),
        blueprint: str = "",
        current_state: str = "",
        created_after_ms: int = 0,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[str], str]:
        request = ListJobsRequest(
            statuses=[JobStatus.Value("JOB_STATUS_" + name.upper()) for name in statuses],
            blueprint=blueprint,
            current_state=current_state,
            created_after_ms=created_after_ms,
            page_size=page_size,
            page_token=page_token,
        )
        with _statuses():
            page = await self._jobs.ListJobs(request, metadata=self._metadata)
        return [job.id for job in page.jobs], page.next_page_token

    async def upload_url(
        self, job_id: str, filename: str, expires_in: int | None = None
    ) -> tuple[str, int]:
        request = GetUploadUrlRequest(job_id=job_id, filename=filename, expires_in=expires_in or 0)
        with _statuses():
            answer = await self._jobs.GetUploadUrl(request, metadata=self._metadata)
        assert answer.method == "PUT", answer
        return answer.url, answer.expires_in

    async def upload(
        self, job_id: str, filename: str, data: bytes, content_type: str = "text/plain"
    ) -> str:
        request = UploadFileRequest(job_id=job_id, filename=filename)
        request.content.content_type = content_type
        request.content.data = data
        with _statuses():
            answer = await self._jobs.UploadFile(request, metadata=self._metadata)
        assert answer.status == "uploaded", answer
        return answer.s3_uri

    async def download(self, job_id: str, filename: str) -> bytes:
        request = DownloadFileRequest(job_id=job_id, filename=filename)
        with _statuses():
            url = (await self._jobs.DownloadFile(request, metadata=self._metadata)).url
        return await fetch(url)

    async def approve(self, job_id: str, decision: str, token: str | None = None) -> str:
        with _statuses():
            answer = await self._public.SubmitApproval(
                SubmitApprovalRequest(job_id=job_id, decision=decision),
                metadata=(("x-approval-token", token),) if token is not None else (),
            )
        assert answer.job_id == job_id, answer
        return answer.status

    async def decide(self, job_id: str, decision: str) -> dict[str, Any]:
        request = ApproveJobRequest(job_id=job_id, decision=decision)
        with _statuses():
            answer = await self._jobs.ApproveJob(request, metadata=self._metadata)
        return _job_view(answer.job)

    async def retry(self, job_id: str) -> dict[str, Any]:
        with _statuses():
            answer = await self._jobs.RetryJob(
                RetryJobRequest(job_id=job_id), metadata=self._metadata
            )
        return _job_view(answer.job)

    async def counts(self) -> dict[str, int]:
        with _statuses():
            page = await self._jobs.ListJobs(ListJobsRequest(page_size=1), metadata=self._metadata)
        return dict(page.counts)

    async def graph(self, blueprint: str, format: str = "") -> str:
        request = GetBlueprintGraphRequest(blueprint_name=blueprint, format=format)
        with _statuses():
            body = (await self._jobs.GetBlueprintGraph(request, metadata=self._metadata)).body
        assert body.content_type == _GRAPH_CONTENT_TYPES[format]
        dot: str = body.data.decode()  # google.api.HttpBody comes without type stubs
        return dot

    async def workers(self) -> list[dict[str, Any]]:
        with _statuses():
            answer = await self._jobs.ListWorkers(ListWorkersRequest(), metadata=self._metadata)
        return [_worker_view(worker) for worker in answer.workers]

    async def dashboard(self) -> dict[str, Any]:
        with _statuses():
            answer = await self._jobs.GetDashboard(GetDashboardRequest(), metadata=self._metadata)
        return {
            "jobs_by_status": dict(answer.jobs_by_status),
            "queue_depth_by_skill": dict(answer.queue_depth_by_skill),
            "workers_by_status": dict(answer.workers_by_status),
            "workers_by_transport": dict(answer.workers_by_transport),
            "jobs_finished_last_minute": answer.jobs_finished_last_minute,
            "jobs_failed_last_minute": answer.jobs_failed_last_minute,
            "oldest_queued_at_ms": dict(answer.oldest_queued_at_by_skill_ms),
        }

    async def blueprints(self) -> dict[str, Any]:
        with _statuses():
            answer = await self._jobs.ListBlueprints(
                ListBlueprintsRequest(), metadata=self._metadata
            )
        return {
            bp.name: from_payload(bp.input_schema) if bp.input_schema.data else None
            for bp in answer.blueprints
        }


@contextmanager
def _statuses() -> Iterator[None]:
    """A failed call as :class:`ApiError`; every refusal of ours must carry
    its code in the trailing metadata, the same as its status."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        kind = error.code().name.lower()
        # grpc's stubs type metadata items as objects; at run time they are pairs.
        items = cast(Iterable[tuple[str, object]], error.trailing_metadata() or ())
        trailers = {key: str(value) for key, value in items}
        assert trailers.get(_ERROR_CODE_KEY) == kind, (kind, trailers)
        retry_after = trailers.get(_RETRY_AFTER_KEY)
        raise ApiError(
            kind, error.details() or "", int(retry_after) if retry_after is not None else None
        ) from error


def _status_name(status: JobStatus.ValueType) -> str:
    return JobStatus.Name(status).removeprefix("JOB_STATUS_").lower()


def _job_view(job: Job) -> dict[str, Any]:
    state_history = from_payload(job.state_history, {})
    return {
        "id": job.id,
        "blueprint_name": job.blueprint_name,
        "status": _status_name(job.status),
        "current_state": job.current_state,
        "initial_data": from_payload(job.initial_data, {}),
        "state_history": state_history,
        "result": state_history if job.status in TERMINAL else None,
        "error": job.error or None,
        "progress": job.progress,
        "created_at_ms": job.created_at_ms,
        "approval_token": job.approval_token or None,
        "approval": _grpc_approval(job),
    }


def _rest_view(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": job["id"],
        "blueprint_name": job["blueprint_name"],
        "status": job["status"],
        "current_state": job["current_state"],
        "initial_data": job["initial_data"],
        "state_history": job["state_history"],
        "result": job["result"],
        "error": job["error"],
        "progress": job["progress"],
        "created_at_ms": _ms_from_iso(job["created_at"]),
        "approval_token": job.get("approval_token"),
        "approval": _rest_approval(job.get("approval")),
    }


def _grpc_approval(job: Job) -> dict[str, Any] | None:
    if job.status != JobStatus.Value("JOB_STATUS_WAITING_FOR_HUMAN"):
        return None
    return {
        "integration": job.approval_integration,
        "message": job.approval_message,
        "decisions": list(job.approval_decisions),
        "expires_at_ms": job.approval_deadline_ms or None,
    }


def _rest_approval(approval: dict[str, Any] | None) -> dict[str, Any] | None:
    if approval is None:
        return None
    expires_at = approval.pop("expires_at")
    return approval | {"expires_at_ms": _ms_from_iso(expires_at) if expires_at else None}


def _worker_view(worker: WorkerInfo) -> dict[str, Any]:
    return {
        "worker_id": worker.registration.worker_id,
        "skills": list(worker.registration.skills),
        "status": WorkerStatus.Name(worker.status).removeprefix("WORKER_STATUS_").lower(),
        "transport": WorkerTransport.Name(worker.transport)
        .removeprefix("WORKER_TRANSPORT_")
        .lower(),
    }


def _ms_from_iso(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


async def fetch(url: str) -> bytes:
    """GET a presigned URL (no orchestrator credentials); its body."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.read()


async def put(url: str, data: bytes) -> None:
    """PUT ``data`` to a presigned URL."""
    async with aiohttp.ClientSession() as session, session.put(url, data=data) as response:
        assert response.status == 200, await response.text()


async def reaches(api: Api, job_id: str, status: str) -> dict[str, Any]:
    """Poll the job until it has ``status``; the job, as :meth:`Api.get` shows it."""

    async def reached() -> dict[str, Any] | None:
        job = await api.get(job_id)
        return job if job["status"] == status else None

    return await wait_until(reached, message=f"job {job_id} is {status}")


ConnectApi = Callable[..., Api]
"""``connect_api(transport, orchestrator, token=CLIENT_TOKEN)``."""


@pytest.fixture
async def connect_api() -> AsyncIterator[ConnectApi]:
    """Factory: an :class:`Api` over ``transport`` (``"rest"`` or
    ``"grpc"``) on an orchestrator."""
    async with AsyncExitStack() as opened:

        def connect(
            transport: str, orchestrator: OrchestratorEngine, token: str | None = CLIENT_TOKEN
        ) -> Api:
            if transport == "rest":
                session = aiohttp.ClientSession()
                opened.push_async_callback(session.close)
                return RestApi(f"http://127.0.0.1:{orchestrator.rest_port}", session, token)
            assert transport == "grpc", transport
            # A client reading large jobs raises grpc's default 4 MiB limit
            # on what it receives (REST has none).
            channel = grpc.aio.insecure_channel(
                f"127.0.0.1:{orchestrator.grpc_port}",
                options=[("grpc.max_receive_message_length", -1)],
            )
            opened.push_async_callback(channel.close, None)
            return GrpcApi(channel, token)

        yield connect
