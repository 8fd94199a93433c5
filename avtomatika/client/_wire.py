"""The protobuf edge of the client: messages in, views out, and the
arguments a user passes turned into request fields."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from google.protobuf.descriptor import EnumDescriptor

from avtomatika.client.views import (
    ApprovalView,
    BlueprintView,
    Dashboard,
    HistoryEvent,
    JobEvent,
    JobView,
    WorkerView,
)
from avtomatika.payload import from_payload
from avtomatika.v1 import history_pb2, job_pb2, job_service_pb2, worker_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A route's first segment is its API version when it looks like one ("v1",
# "v2beta"); otherwise the whole route is the endpoint.
_VERSION = re.compile(r"v\d+[a-z0-9]*")
# Where a CamelCase enum name starts a word: JobStatus -> JOB_STATUS.
_WORD_START = re.compile(r"(?<!^)(?=[A-Z])")


def split_route(route: str, api_version: str | None) -> tuple[str, str]:
    """``(api_version, endpoint)`` of a create route: ``"jobs/echo"`` (of
    API version ``"v1"`` unless told), ``"v1/jobs/echo"`` or the
    ``"/api/v1/jobs/echo"`` a blueprint's listing shows."""
    path = route.strip("/")
    path = path.removeprefix("api/")
    if api_version is None:
        first, _, rest = path.partition("/")
        if rest and _VERSION.fullmatch(first):
            api_version, path = first, rest
        else:
            api_version = "v1"
    if not path:
        raise ValueError(f"no blueprint endpoint in route {route!r}")
    return api_version, path


def _name(enum: EnumDescriptor, number: int) -> str:
    """An enum value's lowercase name without its prefix (``JobStatus``'s
    ``JOB_STATUS_``, as buf's STANDARD lint requires); a value newer than
    this client's contract reads as ``"unknown_<number>"`` rather than
    failing the whole answer (proto3 enums are open)."""
    value = enum.values_by_number.get(number)
    if value is None:
        return f"unknown_{number}"
    prefix = _WORD_START.sub("_", enum.name).upper() + "_"
    return value.name.removeprefix(prefix).lower()


def job_status_name(status: job_pb2.JobStatus.ValueType) -> str:
    """The documented lowercase name of a job status."""
    return _name(job_pb2.JobStatus.DESCRIPTOR, status)


def job_status_value(name: str) -> job_pb2.JobStatus.ValueType:
    """The job status of a documented name; ValueError for none."""
    if name and name == name.lower() and name != "unspecified":
        try:
            return job_pb2.JobStatus.Value("JOB_STATUS_" + name.upper())
        except ValueError:
            pass
    raise ValueError(f"no job status is named {name!r}")


def time_of(ms: int) -> datetime:
    """Epoch milliseconds as an exact UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def ms_of(moment: datetime) -> int:
    """A datetime as epoch milliseconds (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def job_view(job: job_pb2.Job) -> JobView:
    """A Job message as its view."""
    return JobView(
        id=job.id,
        blueprint=job.blueprint_name,
        status=job_status_name(job.status),
        current_state=job.current_state,
        progress=job.progress,
        progress_message=job.progress_message,
        error=job.error or None,
        initial_data=from_payload(job.initial_data, {}),
        state_history=from_payload(job.state_history, {}),
        created_at=time_of(job.created_at_ms),
        updated_at=time_of(job.updated_at_ms),
        retry_count=job.retry_count,
        webhook_url=job.webhook_url or None,
        parent_job_id=job.parent_job_id or None,
        child_job_ids=tuple(job.child_job_ids),
        approval_message=job.approval_message or None,
        approval_token=job.approval_token or None,
        approval=_approval(job),
    )


def _approval(job: job_pb2.Job) -> ApprovalView | None:
    if job.status != job_pb2.JOB_STATUS_WAITING_FOR_HUMAN:
        return None
    deadline = job.approval_deadline_ms
    return ApprovalView(
        integration=job.approval_integration,
        message=job.approval_message,
        decisions=tuple(job.approval_decisions),
        expires_at=time_of(deadline) if deadline else None,
    )


def job_event(event: job_service_pb2.StreamJobEventsResponse) -> JobEvent:
    """A StreamJobEvents message as its view."""
    return JobEvent(
        job_id=event.job_id,
        status=job_status_name(event.status),
        current_state=event.current_state,
        progress=event.progress,
        progress_message=event.progress_message,
        error=event.error or None,
        updated_at=time_of(event.updated_at_ms),
    )


def history_event(event: history_pb2.HistoryEvent) -> HistoryEvent:
    """A HistoryEvent message as its view."""
    return HistoryEvent(
        event_id=event.event_id,
        job_id=event.job_id,
        timestamp=time_of(event.timestamp_ms),
        type=_name(history_pb2.HistoryEventType.DESCRIPTOR, event.type),
        state=event.state or None,
        task_id=event.task_id or None,
        worker_id=event.worker_id or None,
        duration=timedelta(milliseconds=event.duration_ms) if event.duration_ms else None,
        message=event.message,
        details=from_payload(event.details, {}),
    )


def worker_view(worker: worker_pb2.WorkerInfo) -> WorkerView:
    """A WorkerInfo message as its view."""
    registration = worker.registration
    return WorkerView(
        worker_id=registration.worker_id,
        worker_type=registration.worker_type,
        skills=tuple(registration.skills),
        status=_name(worker_pb2.WorkerStatus.DESCRIPTOR, worker.status),
        transport=_name(worker_pb2.WorkerTransport.DESCRIPTOR, worker.transport),
        max_concurrent_tasks=registration.resources.max_concurrent_tasks,
        active_task_ids=tuple(worker.active_task_ids),
        labels=dict(registration.labels),
        cost_per_skill=dict(registration.cost_per_skill),
        last_seen=time_of(worker.last_seen_ms) if worker.last_seen_ms else None,
        agent=worker.agent,
        load=worker.load,
    )


def blueprint_view(blueprint: job_service_pb2.BlueprintSummary) -> BlueprintView:
    """A BlueprintSummary message as its view."""
    return BlueprintView(
        name=blueprint.name,
        route=blueprint.route,
        states=tuple(blueprint.states),
        start_state=blueprint.start_state,
        end_states=tuple(blueprint.end_states),
        input_schema=from_payload(blueprint.input_schema) if blueprint.input_schema.data else None,
    )


def dashboard(response: job_service_pb2.GetDashboardResponse) -> Dashboard:
    """A GetDashboard answer as its view."""
    return Dashboard(
        jobs_by_status=dict(response.jobs_by_status),
        queue_depth_by_skill=dict(response.queue_depth_by_skill),
        workers_by_status=dict(response.workers_by_status),
        workers_by_transport=dict(response.workers_by_transport),
        jobs_finished_last_minute=response.jobs_finished_last_minute,
        jobs_failed_last_minute=response.jobs_failed_last_minute,
        oldest_queued_at_by_skill={
            skill: time_of(ms) for skill, ms in response.oldest_queued_at_by_skill_ms.items()
        },
    )
