"""What a webhook says: the event name and JSON body for a job that ended,
or that started waiting for a person."""

from __future__ import annotations

import json

from avtomatika.engine.approvals import approval_json
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
    job_pb2.JOB_STATUS_WAITING_FOR_HUMAN: "job_waiting_for_human",
}


def event_name(job: Job) -> str:
    """``job_finished``, ``job_failed``, ``job_quarantined``, ``job_cancelled``
    or ``job_waiting_for_human``."""
    return _EVENTS[job.status]


def webhook_body(job: Job) -> bytes:
    """``{"event", "job_id", "status", "result", "error"}``; ``result`` is the
    job's state history. A job waiting for a person adds ``approval``, what
    the wait asks (``integration``, ``message``, ``decisions``,
    ``expires_at``), as its JSON shows it."""
    body = {
        "event": event_name(job),
        "job_id": job.id,
        "status": job_status_name(job.status),
        "result": from_payload(job.state_history, {}),
        "error": job.error or None,
    }
    approval = approval_json(job)
    if approval is not None:
        body["approval"] = approval
    return json.dumps(
        body,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
