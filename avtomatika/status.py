"""Job and task status vocabulary shared by the engine and the transports."""

from __future__ import annotations

from avtomatika.v1.job_pb2 import JobStatus

__all__ = ["RUNNABLE", "TERMINAL", "job_status_name"]

TERMINAL: frozenset[JobStatus.ValueType] = frozenset(
    {
        JobStatus.JOB_STATUS_FINISHED,
        JobStatus.JOB_STATUS_FAILED,
        JobStatus.JOB_STATUS_CANCELLED,
        JobStatus.JOB_STATUS_ERROR,
        JobStatus.JOB_STATUS_QUARANTINED,
    }
)
"""Statuses a job never leaves."""

RUNNABLE: frozenset[JobStatus.ValueType] = frozenset(
    {JobStatus.JOB_STATUS_PENDING, JobStatus.JOB_STATUS_RUNNING}
)
"""Statuses in which the executor runs the handler of the current state."""

_PREFIX = "JOB_STATUS_"


def job_status_name(status: JobStatus.ValueType) -> str:
    """The documented lowercase name, e.g. ``waiting_for_worker``."""
    return JobStatus.Name(status).removeprefix(_PREFIX).lower()
