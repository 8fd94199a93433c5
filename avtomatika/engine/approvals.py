"""What a job waiting for a human offers: the decisions it takes and the
approval as clients see it (job JSON, webhook, the ``approval_requested``
event).

A wait with a timeout (``await_human_approval(..., timeout=seconds)``) has a
``timeout`` transition that the engine takes when nobody decides in time;
it is not one of the decisions a person may make.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from avtomatika.clock import iso_from_ms
from avtomatika.v1 import job_pb2
from avtomatika.v1.job_pb2 import Job

__all__ = ["TIMEOUT_DECISION", "approval_json", "decisions", "offered"]

TIMEOUT_DECISION = "timeout"
"""The transition a wait with a timeout takes when it expires."""


def offered(transitions: Iterable[str], timed: bool) -> list[str]:
    """The decisions a wait with these transitions offers a person, sorted:
    every one but the timeout's, when it has a timeout."""
    return sorted(k for k in transitions if not (timed and k == TIMEOUT_DECISION))


def decisions(job: Job) -> list[str]:
    """The decisions a person may make on ``job``'s wait (as recorded when
    it began; a record from before they were, all its transitions)."""
    return list(job.approval_decisions) or sorted(job.pending_transitions)


def approval_json(job: Job) -> dict[str, Any] | None:
    """``{"integration", "message", "decisions", "expires_at"}`` while the
    job waits for a human (``expires_at`` ISO 8601, null without a
    timeout); None otherwise."""
    if job.status != job_pb2.JOB_STATUS_WAITING_FOR_HUMAN:
        return None
    deadline = job.approval_deadline_ms
    return {
        "integration": job.approval_integration,
        "message": job.approval_message,
        "decisions": decisions(job),
        "expires_at": iso_from_ms(deadline) if deadline else None,
    }
