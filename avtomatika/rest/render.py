"""Domain messages rendered as the documented JSON shapes."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

from avtomatika.clock import iso_from_ms
from avtomatika.engine.approvals import approval_json
from avtomatika.payload import JSON_ENCODING, from_payload
from avtomatika.status import TERMINAL, job_status_name
from avtomatika.v1 import job_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.payload_pb2 import Payload
from avtomatika.v1.worker_pb2 import WorkerInfo, WorkerStatus, WorkerTransport

__all__ = ["JOB_FIELDS", "job_body", "job_json", "worker_json"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def job_json(job: Job) -> dict[str, Any]:
    """A job as its owner sees it: never a client token or request headers;
    the approval token and the ``approval`` (see
    :func:`~avtomatika.engine.approvals.approval_json`) only while the job
    waits for that approval.

    ``result`` is the job's final ``state_history`` once it is terminal
    (what its end state left), null while it runs."""
    state_history = from_payload(job.state_history, {})
    rendered = {
        "id": job.id,
        "blueprint_name": job.blueprint_name,
        "status": job_status_name(job.status),
        "current_state": job.current_state,
        "initial_data": from_payload(job.initial_data, {}),
        "state_history": state_history,
        "result": state_history if job.status in TERMINAL else None,
        "error": job.error or None,
        "progress": job.progress,
        "progress_message": job.progress_message or None,
        "retry_count": job.retry_count,
        "parent_job_id": job.parent_job_id or None,
        "child_job_ids": list(job.child_job_ids),
        "created_at": iso_from_ms(job.created_at_ms),
        "updated_at": iso_from_ms(job.updated_at_ms),
    }
    if job.status == job_pb2.JOB_STATUS_WAITING_FOR_HUMAN:
        rendered["approval_token"] = job.approval_token
        rendered["approval"] = approval_json(job)
    return rendered


def job_body(job: Job, fields: Collection[str] | None = None) -> bytes:
    """:func:`job_json` as a JSON response body, written around the JSON that
    ``initial_data`` and ``state_history`` already hold instead of decoding
    and re-encoding them (a follower's answer is the hot read path).

    With ``fields`` (names of :data:`JOB_FIELDS`), only those fields and
    ``id``, from the table below; a field left out is not rendered at all.
    Without, every field, written inline: the table's calls cost a sixth
    more on the hot path (a test holds the two equal)."""
    if fields is not None:
        selected = [
            key + rendered
            for name, key, render in _JOB_FIELDS
            if name in fields or name == "id"
            if (rendered := render(job)) is not None
        ]
        return b"{" + b",".join(selected) + b"}"

    state_history = _raw_json(job.state_history)
    parts = [
        b'{"id":', _text(job.id),
        b',"blueprint_name":', _text(job.blueprint_name),
        b',"status":', _text(job_status_name(job.status)),
        b',"current_state":', _text(job.current_state),
        b',"initial_data":', _raw_json(job.initial_data),
        b',"state_history":', state_history,
        b',"result":', state_history if job.status in TERMINAL else b"null",
        b',"error":', _optional(job.error),
        b',"progress":', _encode(job.progress).encode(),
        b',"progress_message":', _optional(job.progress_message),
        b',"retry_count":', str(job.retry_count).encode(),
        b',"parent_job_id":', _optional(job.parent_job_id),
        b',"child_job_ids":', _encode(list(job.child_job_ids)).encode(),
        b',"created_at":', _text(iso_from_ms(job.created_at_ms)),
        b',"updated_at":', _text(iso_from_ms(job.updated_at_ms)),
    ]  # fmt: skip
    if job.status == job_pb2.JOB_STATUS_WAITING_FOR_HUMAN:
        parts += [b',"approval_token":', _text(job.approval_token)]
        parts += [b',"approval":', _encode(approval_json(job)).encode()]
    parts.append(b"}")
    return b"".join(parts)


def _text(value: str) -> bytes:
    return _encode(value).encode()


def _optional(value: str) -> bytes:
    return _encode(value).encode() if value else b"null"


def _result(job: Job) -> bytes:
    return _raw_json(job.state_history) if job.status in TERMINAL else b"null"


def _approval_token(job: Job) -> bytes | None:
    # Only while the job waits for that approval; otherwise not there at all.
    if job.status != job_pb2.JOB_STATUS_WAITING_FOR_HUMAN:
        return None
    return _text(job.approval_token)


def _approval(job: Job) -> bytes | None:
    approval = approval_json(job)  # None, and left out, unless it waits for one
    return None if approval is None else _encode(approval).encode()


# Each field of the job JSON, in order: its name, its key as the body writes
# it, and how its value is written (None: the field is left out).
_JOB_FIELDS: tuple[tuple[str, bytes, Callable[[Job], bytes | None]], ...] = tuple(
    (name, _encode(name).encode() + b":", render)
    for name, render in (
        ("id", lambda job: _text(job.id)),
        ("blueprint_name", lambda job: _text(job.blueprint_name)),
        ("status", lambda job: _text(job_status_name(job.status))),
        ("current_state", lambda job: _text(job.current_state)),
        ("initial_data", lambda job: _raw_json(job.initial_data)),
        ("state_history", lambda job: _raw_json(job.state_history)),
        ("result", _result),
        ("error", lambda job: _optional(job.error)),
        ("progress", lambda job: _encode(job.progress).encode()),
        ("progress_message", lambda job: _optional(job.progress_message)),
        ("retry_count", lambda job: str(job.retry_count).encode()),
        ("parent_job_id", lambda job: _optional(job.parent_job_id)),
        ("child_job_ids", lambda job: _encode(list(job.child_job_ids)).encode()),
        ("created_at", lambda job: _text(iso_from_ms(job.created_at_ms))),
        ("updated_at", lambda job: _text(iso_from_ms(job.updated_at_ms))),
        ("approval_token", _approval_token),
        ("approval", _approval),
    )
)

JOB_FIELDS: tuple[str, ...] = tuple(name for name, _, _ in _JOB_FIELDS)
"""The names of the job JSON's fields, in the order it writes them: what
``?fields=`` may select."""


def _raw_json(payload: Payload) -> bytes:
    """A JSON payload's bytes as they are (``{}`` when empty): they were
    written by :func:`avtomatika.payload.to_payload`, so they are JSON."""
    if not payload.data:
        return b"{}"
    if payload.encoding not in ("", JSON_ENCODING):
        raise ValueError(f"unsupported payload encoding {payload.encoding!r}")
    return payload.data


def worker_json(info: WorkerInfo) -> dict[str, Any]:
    """A connected worker, without any credential. ``supported_skills`` is
    ``skills`` again under the name 1.0b13 clients read (the worker's
    registration field), in the order the worker registered them."""
    reg = info.registration
    res = reg.resources
    skills = list(reg.skills)
    return {
        "worker_id": reg.worker_id,
        "worker_type": reg.worker_type,
        "skills": skills,
        "supported_skills": list(skills),
        "resources": {
            "max_concurrent_tasks": res.max_concurrent_tasks,
            "cpu_cores": res.cpu_cores,
            "ram_gb": res.ram_gb,
            "gpu_info": (
                {"model": res.gpu_info.model, "vram_gb": res.gpu_info.vram_gb}
                if res.HasField("gpu_info")
                else None
            ),
            "installed_models": [
                {"name": m.name, "version": m.version} for m in res.installed_models
            ],
        },
        "cost_per_skill": dict(reg.cost_per_skill),
        "labels": dict(reg.labels),
        "status": WorkerStatus.Name(info.status).removeprefix("WORKER_STATUS_").lower(),
        "transport": WorkerTransport.Name(info.transport).removeprefix("WORKER_TRANSPORT_").lower(),
        "load": info.load or len(info.active_task_ids),
        "active_task_ids": list(info.active_task_ids),
        "last_seen": iso_from_ms(info.last_seen_ms),
        "agent": info.agent,
    }
