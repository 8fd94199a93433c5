"""Every use case of an API client, written once for both transports.

The REST handlers and the gRPC ``JobService`` are translators: they read a
request, call one method here, and render what it returns. Authentication,
rate limits and quotas, ownership (another client's job is "not found") and
validation live here and nowhere else, and every refusal is an error of
:mod:`avtomatika.errors`, which each transport maps to its status once.

A method takes the caller (:meth:`ClientApi.caller` turns a token into one)
so no use case can be reached without a client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from avtomatika.access.authenticator import Authenticator
from avtomatika.blueprint.context import ClientInfo
from avtomatika.blueprint.graph import DOT_CONTENT_TYPE, to_dot
from avtomatika.blueprint.state_machine import StateMachineBlueprint
from avtomatika.blueprint.svg import SVG_CONTENT_TYPE, to_svg
from avtomatika.engine.core import Engine
from avtomatika.engine.followers import JobFollowers
from avtomatika.engine.tasks import new_id
from avtomatika.errors import InvalidArgument, NotFound, NotImplementedYet, Unauthenticated
from avtomatika.history import HistoryWriter
from avtomatika.limits.client_limits import ClientLimits
from avtomatika.logs.scope import identify
from avtomatika.monitoring.dashboard import Dashboard
from avtomatika.payload import encode_json
from avtomatika.services.requests import JobRequest
from avtomatika.services.status_reads import StatusReads
from avtomatika.status import TERMINAL, job_status_name
from avtomatika.storage.base import JobCursor
from avtomatika.v1 import job_pb2
from avtomatika.v1.history_pb2 import HistoryEvent
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.worker_pb2 import WorkerInfo

if TYPE_CHECKING:
    from avtomatika.files import S3Files

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "DEFAULT_PAGE_SIZE",
    "DOWNLOAD_URL_SECONDS",
    "MAX_PAGE_SIZE",
    "BlueprintInfo",
    "ClientApi",
    "Drawing",
    "JobFilter",
    "Reader",
    "owner_view",
    "visible",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# A listing reads at most this many of the client's jobs per page asked for
# before it answers (with fewer jobs and a token to go on): a filter that
# matches rarely costs pages, never a scan of every job in one request.
_SCAN_PER_PAGE = 10

DEFAULT_EXPIRES_IN = 3600
"""Validity of an upload URL when the client does not say (as documented)."""

DOWNLOAD_URL_SECONDS = 300
"""Validity of a download URL: it is followed at once, and S3 checks it
only when the transfer starts."""

_DIGITS = re.compile(r"[0-9]{1,9}")

_LISTABLE_STATUSES = frozenset(job_pb2.JobStatus.values()) - {job_pb2.JOB_STATUS_UNSPECIFIED}
_STATUS_NAMES = tuple(job_status_name(status) for status in sorted(_LISTABLE_STATUSES))


class Reader(Protocol):
    """A body arriving in pieces (``b""`` at its end)."""

    async def read(self, n: int = -1) -> bytes: ...


def owner_view(job: Job) -> Job:
    """A job as its owner sees it: the approval token only while the job
    waits for that approval (as the REST JSON renders it)."""
    if job.status == job_pb2.JOB_STATUS_WAITING_FOR_HUMAN or not job.approval_token:
        return job
    view = Job()
    view.CopyFrom(job)
    view.approval_token = ""
    return view


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which of a client's jobs a listing shows (empty: every one)."""

    statuses: frozenset[int] = frozenset()
    blueprint: str = ""
    current_state: str = ""
    created_after_ms: int = 0

    def matches(self, job: Job) -> bool:
        return (
            (not self.statuses or job.status in self.statuses)
            and (not self.blueprint or job.blueprint_name == self.blueprint)
            and (not self.current_state or job.current_state == self.current_state)
        )

    def fingerprint(self) -> str:
        """Short, stable: a page token is good for the filter it was made with."""
        text = json.dumps(
            [sorted(self.statuses), self.blueprint, self.current_state, self.created_after_ms]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class BlueprintInfo:
    """A registered blueprint, as ``ListBlueprints`` describes it."""

    name: str
    route: str
    states: list[str]
    start_state: str
    end_states: list[str]
    input_schema: dict[str, Any] | None
    """The JSON Schema a job's ``initial_data`` must satisfy, if any."""


@dataclass(frozen=True, slots=True)
class Drawing:
    """A blueprint's graph in one format."""

    content_type: str
    text: str


# format -> (content type, drawer) of GetBlueprintGraph.
_DRAWERS: dict[str, tuple[str, Callable[[StateMachineBlueprint], str]]] = {
    "dot": (DOT_CONTENT_TYPE, to_dot),
    "svg": (SVG_CONTENT_TYPE, to_svg),
}


def visible(job: Job) -> tuple[object, ...]:
    """What of a job a client sees changing while it runs: a wait ends, and a
    stream sends, only when this differs."""
    return (job.status, job.current_state, job.progress, job.progress_message, job.error)


@dataclass(slots=True)
class ClientApi:
    """The client use cases of one orchestrator; the features are optional
    where the orchestrator may run without them."""

    engine: Engine
    auth: Authenticator
    followers: JobFollowers
    limits: ClientLimits | None = None
    history: HistoryWriter | None = None
    dashboard_stats: Dashboard | None = None
    files: S3Files | None = None
    status_reads: StatusReads = field(default_factory=StatusReads)
    """When saturated, a read without ``wait`` is held as a short one."""

    async def caller(self, token: str | None, *, credential: str = "client token") -> ClientInfo:
        """The client a token belongs to, after its rate limit.

        ``credential`` names what carried the token in the refusal (the
        header or metadata key), so the client sees which one to fix."""
        client = self.auth.client(token)
        if client is None:
            raise Unauthenticated(f"missing or invalid {credential}")
        identify(f"client:{client.id}")
        if self.limits is not None:
            await self.limits.check_rate(client.id)
        return client

    async def create_job(self, client: ClientInfo, route: str, request: JobRequest) -> str:
        """Create a job of the blueprint served at ``/api/{route}``, counted
        against the client's monthly quota; returns its id. ``initial_data``
        must satisfy the blueprint's ``input_schema``, if it has one."""
        blueprint = self.engine.blueprint_for_route(route)
        blueprint.check_input(request.initial_data)
        if self.limits is None:
            return await self._create(blueprint.name, client, request, new_id())
        job_id = new_id()
        size = len(encode_json(request.initial_data))
        async with (
            self.limits.job_creation(client.id),
            self.limits.job_room(client.id, job_id, size),
        ):
            return await self._create(blueprint.name, client, request, job_id)

    async def _create(
        self, blueprint: str, client: ClientInfo, request: JobRequest, job_id: str
    ) -> str:
        return await self.engine.create_job(
            blueprint,
            request.initial_data,
            client=client,
            webhook_url=request.webhook_url,
            dispatch_timeout=request.dispatch_timeout,
            result_timeout=request.result_timeout,
            job_id=job_id,
        )

    async def get_job(self, client: ClientInfo, job_id: str, wait: float | None = None) -> Job:
        """The job; with ``wait`` (seconds), once it visibly changes or ends,
        or with its current state when the wait (capped at
        ``JOB_WAIT_MAX_SECONDS``) is over. Without ``wait`` the read goes
        after the work waiting on the loop, and when that is too much, it is
        held as a short ``wait`` (see :mod:`avtomatika.services.status_reads`)."""
        if wait is None:
            hold = self.engine.config.status_read_hold_seconds
            wait = await self.status_reads.hold_seconds(hold)
            if wait is None:
                return await self.engine.get_job(job_id, client_id=client.id)
        if not 0 <= wait < float("inf"):
            raise InvalidArgument(f"wait must be a number of seconds >= 0, got {wait!r}")
        wait = min(wait, self.engine.config.job_wait_max_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with self.followers.follow(job_id) as follower:
            job = await self.engine.get_job(job_id, client_id=client.id)
            seen = visible(job)
            while job.status not in TERMINAL and not follower.closed:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await follower.changed(remaining):
                    break
                records, stale = follower.take()
                newest = max(records, key=lambda record: record.version, default=None)
                if stale or newest is None:
                    job = await self.engine.get_job(job_id, client_id=client.id)
                elif newest.version > job.version:
                    job = newest  # the record the event carried: no read needed
                if visible(job) != seen:
                    break
        return job

    async def follow_job(
        self, client: ClientInfo, job_id: str, keepalive: float | None = None
    ) -> AsyncGenerator[Job | None, None]:
        """The job now, then the job at each visible change, ending after a
        terminal status. Costs nothing per event beyond the event itself: the
        records come with the engine's events, and the store is read only
        when an event did not carry one (another instance's) or after a
        quiet ``keepalive`` period, when ``None`` is yielded so the caller
        can keep its connection alive. :class:`NotFound` when the job is not
        the client's, or when it vanishes (a debug flush) while followed."""
        with self.followers.follow(job_id) as follower:
            job = await self.engine.get_job(job_id, client_id=client.id)
            sent: tuple[object, ...] | None = None
            version = 0
            pending = [job]
            while True:
                for record in pending:
                    if record.version < version:
                        continue  # published out of order; a newer one was sent
                    version = record.version
                    if visible(record) != sent:
                        sent = visible(record)
                        yield record
                    if record.status in TERMINAL:
                        return
                if follower.closed:
                    return
                woke = await follower.changed(keepalive if keepalive is not None else 3600.0)
                pending, stale = follower.take()
                if not woke:
                    yield None
                    stale = True  # also notices a job that vanished silently
                if stale and not follower.closed:
                    pending.append(await self.engine.get_job(job_id, client_id=client.id))

    async def list_jobs(
        self, client: ClientInfo, where: JobFilter, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Job], str]:
        """A page of the client's jobs, newest first, and the token of the
        next page ('' after the last). A page may hold fewer than
        ``page_size`` jobs and still have a token (a rare filter: the read
        per request is bounded); jobs created while paging appear on no page
        already served, and none is served twice."""
        if page_size == 0:
            page_size = DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if where.created_after_ms < 0:
            raise InvalidArgument("created_after_ms must not be before 1970")
        # REST turns names into statuses and refuses unknown ones; a gRPC
        # enum is open (any number arrives), so the same rule is kept here.
        for status in sorted(where.statuses):
            if status not in _LISTABLE_STATUSES:
                raise InvalidArgument(f"statuses: {status} is not a job status")
        cursor = _read_token(page_token, where) if page_token else None
        page: list[Job] = []
        budget = page_size * _SCAN_PER_PAGE
        while budget > 0:
            batch, after = await self.engine.storage.client_jobs(
                client.id, cursor, where.created_after_ms, min(budget, 2 * page_size)
            )
            budget -= len(batch)
            for job in batch:
                if where.matches(job):
                    page.append(owner_view(job))
                    if len(page) == page_size:
                        return page, _token((job.created_at_ms, job.id), where)
            if after is None:
                return page, ""
            cursor = after
        return page, _token(cursor, where) if cursor is not None else ""

    def list_blueprints(self, client: ClientInfo) -> list[BlueprintInfo]:
        """The registered blueprints, by name."""
        return [
            BlueprintInfo(
                name=bp.name,
                route=f"/api/{bp.route}" if bp.route is not None else "",
                states=sorted(bp.states),
                start_state=bp.start_state,
                end_states=sorted(bp.end_states),
                input_schema=bp.input_schema,
            )
            for bp in sorted(self.engine.blueprints.values(), key=lambda bp: bp.name)
        ]

    async def job_counts(self, client: ClientInfo) -> dict[str, int]:
        """How many of the client's jobs are in each status, by lowercase
        name: every status, zeros included, whatever a listing filters."""
        counts = dict.fromkeys(_STATUS_NAMES, 0)
        for status, n in (await self.engine.storage.count_client_jobs(client.id)).items():
            if status in _LISTABLE_STATUSES:
                counts[job_status_name(JobStatus.ValueType(status))] = n
        return counts

    async def retry_job(self, client: ClientInfo, job_id: str) -> Job:
        """Run the client's failed, error or quarantined job again from
        where it stopped (see :meth:`Engine.retry_job`); the job as it now is."""
        return owner_view(await self.engine.retry_job(job_id, client_id=client.id))

    async def approve_job(self, client: ClientInfo, job_id: str, decision: Any) -> Job:
        """The owner's decision on its job waiting for a human (see
        :meth:`Engine.submit_approval`); the job as it now is."""
        if not isinstance(decision, str) or not decision:
            raise InvalidArgument("decision must be a non-empty string")
        return owner_view(await self.engine.submit_approval(job_id, decision, client_id=client.id))

    async def cancel_job(self, client: ClientInfo, job_id: str) -> bool:
        """Cancel the client's job; True when the cancel reached a worker
        running one of its tasks at once."""
        return await self.engine.cancel_job(job_id, client_id=client.id)

    async def job_history(self, client: ClientInfo, job_id: str) -> list[HistoryEvent]:
        """The job's lifecycle events, oldest first."""
        job = await self.engine.get_job(job_id, client_id=client.id)
        if self.history is None:
            return []
        return await self.history.list_for_job(job.id)

    def blueprint_graph(self, client: ClientInfo, name: str, format: str = "") -> Drawing:
        """The blueprint's state machine as Graphviz DOT (``format`` empty or
        ``"dot"``) or SVG (``"svg"``)."""
        drawer = _DRAWERS.get(format or "dot")
        if drawer is None:
            raise InvalidArgument(
                f"format must be one of {', '.join(sorted(_DRAWERS))}, got {format!r}"
            )
        blueprint = self.engine.blueprints.get(name)
        if blueprint is None:
            raise NotFound(f"blueprint {name!r} is not registered")
        content_type, draw = drawer
        return Drawing(content_type, draw(blueprint))

    async def list_workers(self, client: ClientInfo) -> list[WorkerInfo]:
        """The workers of the whole cluster, each with its ``load`` (every
        task it holds) but only the client's own tasks in
        ``active_task_ids``: another client's task ids are not its to see."""
        workers = await self.engine.workers.list_all()
        held = sorted({task_id for info in workers for task_id in info.active_task_ids})
        tasks = [task for task in await self.engine.storage.get_tasks(held) if task is not None]
        jobs = {task.job_id for task in tasks}
        owners = {job_id: await self.engine.storage.get_job(job_id) for job_id in sorted(jobs)}
        mine = {
            task.task_id
            for task in tasks
            if (job := owners[task.job_id]) is not None and job.client_id == client.id
        }
        for info in workers:
            info.load = len(info.active_task_ids)
            info.active_task_ids[:] = [t for t in info.active_task_ids if t in mine]
        return workers

    async def dashboard(self, client: ClientInfo) -> dict[str, Any]:
        """Aggregate statistics (shape in :mod:`avtomatika.monitoring.dashboard`)."""
        if self.dashboard_stats is None:
            raise NotFound("the dashboard is not enabled")
        return await self.dashboard_stats.snapshot()

    async def upload_url(
        self, client: ClientInfo, job_id: str, filename: str, expires_in: str | int | None
    ) -> tuple[str, int]:
        """A presigned PUT URL for a file of the job, and how long it is
        valid (``expires_in`` seconds, by default an hour)."""
        files = await self._job_files(client, job_id)
        seconds = _expires_in(expires_in)
        return await files.presigned_put(job_id, filename, seconds), seconds

    async def upload(
        self,
        client: ClientInfo,
        job_id: str,
        filename: str,
        body: Reader,
        content_type: str | None = None,
    ) -> str:
        """Stream ``body`` into a file of the job, part by part in constant
        memory; returns its ``s3://`` URI."""
        files = await self._job_files(client, job_id)
        return await files.upload_stream(job_id, filename, body, content_type)

    async def download_url(self, client: ClientInfo, job_id: str, filename: str) -> str:
        """A fresh presigned GET URL for an existing file of the job."""
        files = await self._job_files(client, job_id)
        if not await files.exists(job_id, filename):
            raise NotFound(f"file {filename!r} of job {job_id!r} not found")
        return await files.presigned_get(job_id, filename, DOWNLOAD_URL_SECONDS)

    async def _job_files(self, client: ClientInfo, job_id: str) -> S3Files:
        """The files store, once the job is known to be the client's."""
        if self.files is None:
            raise NotImplementedYet("file storage is not configured (set S3_ENDPOINT_URL)")
        await self.engine.get_job(job_id, client_id=client.id)
        return self.files


def _expires_in(raw: str | int | None) -> int:
    if raw is None or raw == "" or raw == 0:
        return DEFAULT_EXPIRES_IN
    if isinstance(raw, int):
        if not 0 < raw < 10**9:
            raise InvalidArgument(f"expires_in must be a whole number of seconds, got {raw!r}")
        return raw
    if not _DIGITS.fullmatch(raw):
        raise InvalidArgument(f"expires_in must be a whole number of seconds, got {raw!r}")
    return int(raw)


def _token(cursor: JobCursor, where: JobFilter) -> str:
    raw = json.dumps([cursor[0], cursor[1], where.fingerprint()], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_token(token: str, where: JobFilter) -> JobCursor:
    """The cursor a page token holds; INVALID_ARGUMENT for one this service
    did not make, or made for other filters."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        ms, job_id, fingerprint = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidArgument("page_token is not a token this API gave") from None
    if not (isinstance(ms, int) and isinstance(job_id, str) and isinstance(fingerprint, str)):
        raise InvalidArgument("page_token is not a token this API gave")
    if fingerprint != where.fingerprint():
        raise InvalidArgument("page_token belongs to a listing with other filters")
    return ms, job_id
