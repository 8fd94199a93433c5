"""What a webhook says: the event name and JSON body for a job that ended."""

from __future__ import annotations

import json

from avtomatika.payload import from_payload
from avtomatika.status import job_status_name
from avtomatika.v1 import job_pb2
from avtomatika.v1.job_pb2 import Job

__all__ = ["event_name", "webhook_body"]

_EVENTS = {
    job_pb2.JOB_STATUS_FINISHED: "job_finished",
    job_pb2.JOB_STATUS_FAILED: "job_failed",
    # An unexpected error (a handler that raised) is a failure to the client.
    job_pb2.JOB_STATUS_ERROR: "job_failed",
    job_pb2.JOB_STATUS_QUARANTINED: "job_quarantined",
    job_pb2.JOB_STATUS_CANCELLED: "job_cancelled",
}


def event_name(job: Job) -> str:
    """``job_finished``, ``job_failed``, ``job_quarantined`` or ``job_cancelled``."""
    return _EVENTS[job.status]


def webhook_body(job: Job) -> bytes:
    """``{"event", "job_id", "status", "result", "error"}``; ``result`` is the
    job's state history."""
    return json.dumps(
        {
            "event": event_name(job),
            "job_id": job.id,
            "status": job_status_name(job.status),
            "result": from_payload(job.state_history, {}),
            "error": job.error or None,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
