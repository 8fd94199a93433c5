"""Job and task status vocabulary shared by the engine and the transports."""

from __future__ import annotations

from avtomatika.v1 import job_pb2
from avtomatika.v1.job_pb2 import JobStatus

__all__ = ["RUNNABLE", "TERMINAL", "job_status_name", "job_status_named"]

TERMINAL: frozenset[JobStatus.ValueType] = frozenset(
    {
        job_pb2.JOB_STATUS_FINISHED,
        job_pb2.JOB_STATUS_FAILED,
        job_pb2.JOB_STATUS_CANCELLED,
        job_pb2.JOB_STATUS_ERROR,
        job_pb2.JOB_STATUS_QUARANTINED,
    }
)
"""Statuses in which a job has ended: nothing moves it on its own (a late
result is ignored); only its client's retry runs a failed, error or
quarantined job again."""

RUNNABLE: frozenset[JobStatus.ValueType] = frozenset(
    {job_pb2.JOB_STATUS_PENDING, job_pb2.JOB_STATUS_RUNNING}
)
"""Statuses in which the executor runs the handler of the current state."""

_PREFIX = "JOB_STATUS_"


def job_status_name(status: JobStatus.ValueType) -> str:
    """The documented lowercase name, e.g. ``waiting_for_worker``."""
    return JobStatus.Name(status).removeprefix(_PREFIX).lower()


def job_status_named(name: str) -> JobStatus.ValueType | None:
    """The status whose documented name is ``name``; None for no status."""
    if not name or name != name.lower() or name == "unspecified":
        return None
    try:
        return JobStatus.Value(_PREFIX + name.upper())
    except ValueError:
        return None
