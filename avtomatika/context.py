"""The ``context`` handlers receive: everything about the job's current step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from avtomatika.actions import ActionFactory

__all__ = ["ClientInfo", "JobContext"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The client that created the job: never its token, only its plan and params."""

    id: str
    plan: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class JobContext:
    """One step of a job, as its handler sees it.

    ``state_history`` is live: what the handler writes into it is saved with
    the step.
    """

    job_id: str
    current_state: str
    initial_data: dict[str, Any]
    state_history: dict[str, Any]
    client: ClientInfo
    actions: ActionFactory
    data_stores: dict[str, Any] = field(default_factory=dict)
    tracing_context: dict[str, str] = field(default_factory=dict)
    task_files: Any = None
    aggregation_results: dict[str, Any] | None = None
