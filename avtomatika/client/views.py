"""What the client's calls return: small frozen dataclasses, never protobufs.

Statuses are the documented lowercase names (``"waiting_for_worker"``),
times are timezone-aware UTC datetimes, and user data (initial data, state
history, event details) is the decoded JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "TERMINAL_STATUSES",
    "ApprovalView",
    "BlueprintView",
    "Dashboard",
    "HistoryEvent",
    "JobEvent",
    "JobView",
    "UploadedFile",
    "WorkerView",
]

TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"finished", "failed", "cancelled", "error", "quarantined"}
)
"""The statuses in which a job has ended (only :meth:`Client.retry` runs a
failed, error or quarantined one again)."""


@dataclass(frozen=True, slots=True)
class ApprovalView:
    """What a job waiting for a human asks."""

    integration: str
    message: str
    decisions: tuple[str, ...]
    """What :meth:`Client.decide` takes, sorted."""
    expires_at: datetime | None
    """When the wait takes its ``timeout`` transition; None without a timeout."""


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as its client sees it."""

    id: str
    blueprint: str
    status: str
    """Lifecycle status, e.g. ``"running"`` or ``"finished"``."""
    current_state: str
    """The blueprint state the job is in (or last ran, when terminal)."""
    progress: float
    """The running task's progress, 0.0 to 1.0."""
    progress_message: str
    error: str | None
    """Why the job ended in ``failed``, ``error`` or ``quarantined``."""
    initial_data: Any
    state_history: Any
    """Results merged from every task so far (a JSON object)."""
    created_at: datetime
    updated_at: datetime
    retry_count: int
    webhook_url: str | None
    parent_job_id: str | None
    child_job_ids: tuple[str, ...]
    approval_message: str | None
    """While waiting for a human: what the blueprint asks them."""
    approval_token: str | None
    """While waiting for a human: the secret the approval must present when
    the server requires one (see :meth:`Client.approve`)."""
    approval: ApprovalView | None = None
    """While waiting for a human: what the wait asks (None otherwise)."""

    @property
    def terminal(self) -> bool:
        """Whether the job has ended for good."""
        return self.status in TERMINAL_STATUSES

    @property
    def result(self) -> Any:
        """Once the job is terminal, its final ``state_history`` (what its
        end state left, the REST JSON's ``result``); None while it runs."""
        return self.state_history if self.terminal else None


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One change of a followed job (status, state or progress)."""

    job_id: str
    status: str
    current_state: str
    progress: float
    progress_message: str
    error: str | None
    updated_at: datetime

    @property
    def terminal(self) -> bool:
        """Whether this is the job's last event."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One lifecycle event of a job."""

    event_id: str
    job_id: str
    timestamp: datetime
    type: str
    """What happened, e.g. ``"job_created"``, ``"task_finished"``."""
    state: str | None
    task_id: str | None
    worker_id: str | None
    duration: timedelta | None
    message: str
    details: Any


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A connected worker (never its token)."""

    worker_id: str
    worker_type: str
    skills: tuple[str, ...]
    status: str
    """``"idle"``, ``"busy"``, ``"draining"`` or ``"offline"``."""
    transport: str
    """``"grpc"`` or ``"rest"``."""
    max_concurrent_tasks: int
    active_task_ids: tuple[str, ...]
    labels: Mapping[str, str]
    cost_per_skill: Mapping[str, float]
    last_seen: datetime | None
    agent: str = ""
    """What the worker says it is (its User-Agent or gRPC user-agent)."""
    load: int = 0
    """How many tasks it holds, for every client (``active_task_ids`` are
    only this client's)."""


@dataclass(frozen=True, slots=True)
class BlueprintView:
    """A registered blueprint."""

    name: str
    route: str
    """Its create route, e.g. ``"/api/v1/jobs/video"``; :meth:`Client.create_job`
    takes it as it is."""
    states: tuple[str, ...]
    start_state: str
    end_states: tuple[str, ...]
    input_schema: Mapping[str, Any] | None = None
    """The JSON Schema a job's initial data must satisfy, if it declares one."""


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Aggregate statistics of the orchestrator."""

    jobs_by_status: Mapping[str, int]
    queue_depth_by_skill: Mapping[str, int]
    workers_by_status: Mapping[str, int]
    workers_by_transport: Mapping[str, int]
    jobs_finished_last_minute: int
    jobs_failed_last_minute: int
    oldest_queued_at_by_skill: Mapping[str, datetime] = field(default_factory=dict)
    """Per skill with queued tasks: when its longest-waiting task was queued."""


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """Where an upload went."""

    s3_uri: str
    size: int
