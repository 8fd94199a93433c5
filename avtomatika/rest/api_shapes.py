"""The documented JSON shapes of the REST API, as JSON Schema, and what each
operation takes and answers, for the OpenAPI document (:mod:`openapi`).

Paths are not listed here: they come from the route table and the proto's
``google.api.http`` annotations. This module adds what neither carries: the
JSON the REST facade really reads and renders (which for the legacy worker
API differs from the proto messages), the status codes, and descriptions.
Operations are keyed by their RPC name in ``proto/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from avtomatika.ids import MAX_WORKER_ID_LENGTH, WORKER_ID_PATTERN
from avtomatika.services.requests import MAX_TIMEOUT_SECONDS
from avtomatika.status import job_status_name
from avtomatika.v1.job_pb2 import JobStatus

__all__ = ["CREATE_JOB", "OPERATIONS", "PATH_PARAMETERS", "SCHEMAS", "Operation", "Reply"]

Schema = dict[str, Any]

JSON = "application/json"

CREATE_JOB = "CreateJob"
"""The RPC behind ``POST /api/{api_version}/{endpoint}``, documented once per
registered blueprint."""


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _status(value: str) -> Schema:
    return {"type": "object", "required": ["status"], "properties": {"status": {"const": value}}}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_STRING: Schema = {"type": "string"}
_ID: Schema = {"type": "string", "minLength": 1}
_COUNTS: Schema = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
_SECONDS: Schema = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_SECONDS}
_TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
_JOB_STATUSES = [job_status_name(v) for v in JobStatus.values() if v]
# A job read answers a whole Job, or with `?fields=` a JobFields.
_A_JOB: Schema = {"anyOf": [ref("Job"), ref("JobFields")]}


_DECISION = {
    "type": "string",
    "minLength": 1,
    "description": "One of the job's `approval.decisions`: the transitions its wait offers.",
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "description": "Every error, whatever the status code.",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong."},
            "code": {"type": "string", "description": "A machine-readable code, when given."},
        },
    },
    "CreateJobBody": {
        "type": "object",
        "description": (
            "A body without an `initial_data` key is taken as the initial data itself "
            "(the original's legacy form); an empty body is an empty object."
        ),
        "properties": {
            "initial_data": {
                "type": "object",
                "description": "Initial data for the job (its handlers' `initial_data`).",
            },
            "webhook_url": {
                "type": "string",
                "format": "uri",
                "description": "http(s) URL notified when the job finishes, fails, is "
                "quarantined or cancelled.",
            },
            "dispatch_timeout": {
                **_SECONDS,
                "description": "Longest a task may wait in the queue for a worker, in seconds.",
            },
            "result_timeout": {
                **_SECONDS,
                "description": "Deadline for results, in seconds from the job's creation.",
            },
        },
    },
    "JobAccepted": {
        "type": "object",
        "required": ["status", "job_id"],
        "properties": {"status": {"const": "accepted"}, "job_id": _ID},
    },
    "Job": {
        "type": "object",
        "description": "A job as its owner sees it (never a token or request headers).",
        "required": ["id", "blueprint_name", "status", "current_state", "created_at"],
        "properties": {
            "id": _ID,
            "blueprint_name": _STRING,
            "status": {"type": "string", "enum": _JOB_STATUSES},
            "current_state": _STRING,
            "initial_data": {"type": "object"},
            "state_history": {"type": "object", "description": "Merged results of its tasks."},
            "result": _nullable(
                {
                    "type": "object",
                    "description": "Once the job is terminal (finished, failed, cancelled, "
                    "error, quarantined): its final state_history, what its end state left. "
                    "Null while it runs.",
                }
            ),
            "error": _nullable(_STRING),
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "progress_message": _nullable(_STRING),
            "retry_count": {"type": "integer", "minimum": 0},
            "parent_job_id": _nullable(_STRING),
            "child_job_ids": {"type": "array", "items": _STRING},
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
            "approval_token": {
                "type": "string",
                "description": "Only while waiting for a human: the token the approval "
                "webhook must present when APPROVAL_TOKEN_REQUIRED is set.",
            },
            "approval": {
                "type": "object",
                "description": "Only while waiting for a human: what the wait asks.",
                "required": ["integration", "message", "decisions", "expires_at"],
                "properties": {
                    "integration": _STRING,
                    "message": _STRING,
                    "decisions": {
                        "type": "array",
                        "items": _STRING,
                        "description": "The decisions POST .../approve takes, sorted.",
                    },
                    "expires_at": _nullable(
                        {
                            **_TIMESTAMP,
                            "description": "When the wait takes its `timeout` transition; "
                            "null without a timeout.",
                        }
                    ),
                },
            },
        },
    },
    "DecisionBody": {
        "type": "object",
        "required": ["decision"],
        "properties": {"decision": _DECISION},
    },
    "JobFields": {
        "type": "object",
        "description": "A job with only the fields `?fields=` selected, and always its `id`.",
        "required": ["id"],
        "properties": {},  # the Job's, filled in below
    },
    "CancelResult": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {
                "enum": ["cancellation_request_sent", "cancellation_request_accepted"],
                "description": "`sent`: pushed in real time to the worker running the task; "
                "`accepted`: no task was running, or its worker learns it at its next "
                "heartbeat. Either way the job is `cancelled` at once.",
            }
        },
    },
    "HistoryEvent": {
        "type": "object",
        "required": ["event_id", "job_id", "timestamp", "type", "event_type"],
        "properties": {
            "event_id": _ID,
            "job_id": _ID,
            "timestamp": _TIMESTAMP,
            "type": {"type": "string", "examples": ["job_created", "task_finished"]},
            "event_type": {
                "type": "string",
                "description": "1.0b13's name of the event (ours where 1.0b13 had none).",
                "examples": ["state_started", "state_finished", "job_completed"],
            },
            "state": _nullable(_STRING),
            "task_id": _nullable(_STRING),
            "worker_id": _nullable(_STRING),
            "duration_ms": _nullable({"type": "integer"}),
            "message": _nullable(_STRING),
            "details": _nullable({"type": "object"}),
            "previous_state": _nullable(_STRING),
            "next_state": _nullable(_STRING),
            "attempt_number": _nullable({"type": "integer"}),
        },
    },
    "UploadUrl": {
        "type": "object",
        "required": ["url", "expires_in", "method"],
        "properties": {
            "url": {"type": "string", "description": "A presigned S3 URL."},
            "expires_in": {"type": "integer", "minimum": 1},
            "method": {"const": "PUT"},
        },
    },
    "Uploaded": {
        "type": "object",
        "required": ["status", "s3_uri"],
        "properties": {"status": {"const": "uploaded"}, "s3_uri": _STRING},
    },
    "Worker": {
        "type": "object",
        "description": "A connected worker (never its token).",
        "required": ["worker_id", "skills", "supported_skills", "status", "transport"],
        "properties": {
            "worker_id": _ID,
            "worker_type": _STRING,
            "skills": {"type": "array", "items": _STRING},
            "supported_skills": {
                "type": "array",
                "items": _STRING,
                "description": "The skills as the worker registered them (1.0b13's name); "
                "the same list as skills.",
            },
            "resources": {"type": "object"},
            "cost_per_skill": {"type": "object", "additionalProperties": {"type": "number"}},
            "labels": {"type": "object", "additionalProperties": _STRING},
            "status": {"enum": ["idle", "busy", "draining", "offline", "unspecified"]},
            "transport": {"enum": ["grpc", "rest", "unspecified"]},
            "load": {
                "type": "integer",
                "minimum": 0,
                "description": "How many tasks it holds, for every client.",
            },
            "active_task_ids": {
                "type": "array",
                "items": _STRING,
                "description": "The tasks it runs for the caller's own jobs (never another "
                "client's).",
            },
            "last_seen": _TIMESTAMP,
            "agent": {
                "type": "string",
                "description": "What the worker says it is: the User-Agent of its REST "
                "registration or polls, the user-agent metadata of its gRPC stream.",
            },
        },
    },
    "JobPage": {
        "type": "object",
        "required": ["jobs", "next_page_token", "counts"],
        "properties": {
            "jobs": {"type": "array", "items": _A_JOB},
            "next_page_token": {
                "type": "string",
                "description": "Pass it as page_token for the next page; empty after the last.",
            },
            "counts": {
                **_COUNTS,
                "description": "The caller's jobs per status, every status (zeros included), "
                "whatever the filters.",
            },
        },
    },
    "BlueprintList": {
        "type": "object",
        "required": ["blueprints"],
        "properties": {
            "blueprints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "name",
                        "route",
                        "states",
                        "start_state",
                        "end_states",
                        "input_schema",
                    ],
                    "properties": {
                        "name": _STRING,
                        "route": {"type": "string", "description": "e.g. /api/v1/jobs/video"},
                        "states": {"type": "array", "items": _STRING},
                        "start_state": _STRING,
                        "end_states": {"type": "array", "items": _STRING},
                        "input_schema": _nullable(
                            {
                                "type": "object",
                                "description": "The JSON Schema a job's initial_data must "
                                "satisfy (creating one that does not is 400); null when the "
                                "blueprint declares none.",
                            }
                        ),
                    },
                },
            }
        },
    },
    "Dashboard": {
        "type": "object",
        "properties": {
            "jobs_by_status": _COUNTS,
            "queue_depth_by_skill": _COUNTS,
            "workers_by_status": _COUNTS,
            "workers_by_transport": _COUNTS,
            "jobs_finished_last_minute": {"type": "integer", "minimum": 0},
            "jobs_failed_last_minute": {"type": "integer", "minimum": 0},
            "oldest_queued_at_by_skill": {
                "type": "object",
                "additionalProperties": _TIMESTAMP,
                "description": "Per skill with queued tasks: when its longest-waiting "
                "task was queued.",
            },
        },
    },
    "ApprovalBody": {
        "type": "object",
        "required": ["decision"],
        "properties": {
            "decision": _DECISION,
            "token": {
                "type": "string",
                "description": "The wait's approval token (or the X-Approval-Token header); "
                "required only with APPROVAL_TOKEN_REQUIRED.",
            },
        },
    },
    "ApprovalReceived": {
        "type": "object",
        "required": ["status", "job_id"],
        "properties": {"status": {"const": "approval_received"}, "job_id": _ID},
    },
    "WorkerRegistration": {
        "type": "object",
        "description": "What the legacy worker SDK sends (avtomatika-worker 1.0b7).",
        "required": ["worker_id"],
        "properties": {
            "worker_id": {
                "type": "string",
                "pattern": WORKER_ID_PATTERN,
                "maxLength": MAX_WORKER_ID_LENGTH,
            },
            "worker_type": _STRING,
            "supported_skills": {"type": "array", "items": _STRING},
            "supported_tasks": {
                "type": "array",
                "items": _STRING,
                "description": "What SDKs before 1.0b7 send instead of supported_skills.",
            },
            "resources": {"type": "object"},
            "installed_software": {"type": "object"},
            "installed_models": {"type": "array", "items": {"type": "object"}},
            "capabilities": {"type": "object"},
        },
    },
    "Registered": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"const": "registered"},
            "version": _STRING,
            "warning": _nullable(_STRING),
        },
    },
    "WorkerHeartbeat": {
        "type": "object",
        "description": "An empty body is a TTL ping.",
        "properties": {
            "worker_id": _STRING,
            "status": _STRING,
            "load": {"type": "number"},
            "current_tasks": _nullable({"type": "array", "items": _STRING}),
            "supported_skills": _nullable({"type": "array", "items": _STRING}),
        },
    },
    "HeartbeatReply": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["ok", "ttl_refreshed"]},
            "cancel_task_ids": {"type": "array", "items": _STRING},
        },
    },
    "TaskAssignment": {
        "type": "object",
        "required": ["job_id", "task_id", "type"],
        "properties": {
            "job_id": _ID,
            "task_id": _ID,
            "type": {"type": "string", "description": "The skill."},
            "params": {},
            "tracing_context": {"type": "object"},
            "params_metadata": {"type": "null", "description": "Always null (no file metadata)."},
        },
    },
    "WorkerResult": {
        "type": "object",
        "required": ["job_id", "task_id"],
        "properties": {
            "job_id": _ID,
            "task_id": _ID,
            "worker_id": _STRING,
            "status": {
                "type": "string",
                "description": "success, failure, cancelled, or a custom transition name.",
            },
            "data": {},
            "error": _nullable(
                {
                    "type": "object",
                    "properties": {
                        "code": {
                            "type": "string",
                            "examples": [
                                "TRANSIENT_ERROR",
                                "PERMANENT_ERROR",
                                "INVALID_INPUT_ERROR",
                            ],
                        },
                        "message": _STRING,
                    },
                }
            ),
        },
    },
    "WorkerEvent": {
        "type": "object",
        "description": "SDK 1.0b20's event: the task is target_task_id (origin_task_id "
        "when it names none); progress is payload.progress (0 to 1) and payload.message.",
        "required": ["event_type", "worker_id"],
        "properties": {
            "event_type": {"type": "string", "minLength": 1},
            "worker_id": _STRING,
            "target_task_id": _STRING,
            "origin_task_id": _STRING,
            "payload": {"type": "object"},
        },
    },
    "EventReply": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["event_accepted", "ignored"]},
            "reason": {
                "type": "string",
                "description": "Why it was ignored: stale, unsupported.",
            },
            "message": _STRING,
        },
    },
    "ResultReply": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["accepted", "ignored"]},
            "transition": _STRING,
            "reason": {
                "type": "string",
                "description": "Why it was ignored: stale, late, cancelled.",
            },
            "message": _STRING,
        },
    },
}


SCHEMAS["JobFields"]["properties"] = SCHEMAS["Job"]["properties"]
# What `?fields=` may name: every field of the job JSON (a test holds this
# list equal to what render.py writes).
_FIELDS_QUERY: Schema = {
    "type": "array",
    "items": {"type": "string", "enum": list(SCHEMAS["Job"]["properties"])},
    "description": "Only these fields of each job, and always `id` (repeat the parameter, "
    "or separate names with commas; absent or empty: every field). An unknown name is 400.",
}


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response."""

    description: str
    schema: Schema | None = None
    media_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    """Response header name -> description."""
    also: tuple[str, ...] = ()
    """Other media types the same schema may come as."""


@dataclass(frozen=True, slots=True)
class Operation:
    """What an operation takes and answers, beyond its path.

    Query parameters come from the RPC's request message (grpc-gateway
    rules: scalar fields not bound by the path); ``query`` adds what the
    message cannot say. Errors are ``{"error": ...}`` bodies; 401 (and 429
    under ``/api``) are added for authenticated operations.
    """

    replies: Mapping[int, Reply]
    errors: Mapping[int, str] = field(default_factory=dict)
    body: Schema | None = None
    body_media_type: str = JSON
    body_required: bool = True
    query: Mapping[str, Schema] = field(default_factory=dict)
    required_query: frozenset[str] = frozenset()
    headers: Mapping[str, str] = field(default_factory=dict)
    """Optional request header name -> description."""
    holds: bool = False
    """The request is held open (long-poll, event stream)."""


PATH_PARAMETERS: dict[str, str] = {
    "job_id": "The job's id, as returned when it was created.",
    "filename": "A file name under the job's folder (no `..`, no absolute path).",
    "blueprint_name": "A registered blueprint's name.",
    "worker_id": "The worker's id.",
}

_ERROR_404_JOB = "No such job, or it belongs to another client."
_FILES_ERRORS = {
    400: "Invalid file name or parameter.",
    404: _ERROR_404_JOB,
    501: "File storage is not configured (S3_ENDPOINT_URL).",
}

OPERATIONS: dict[str, Operation] = {
    "GetStatus": Operation({200: Reply("The service is up.", _status("ok"))}),
    "GetReadiness": Operation(
        {
            200: Reply("The store answers: route requests here.", _status("ready")),
            503: Reply(
                "The store does not answer (checked at most once a second).",
                {
                    "type": "object",
                    "required": ["status", "error"],
                    "properties": {"status": {"const": "not_ready"}, "error": _STRING},
                },
            ),
        }
    ),
    "GetMetrics": Operation(
        {
            200: Reply(
                "Prometheus text exposition (OpenMetrics when asked for in Accept).",
                _STRING,
                "text/plain",
            )
        }
    ),
    "SubmitApproval": Operation(
        {200: Reply("The decision was applied.", ref("ApprovalReceived"))},
        errors={
            400: "Invalid body, or a decision the waiting state does not offer.",
            401: "APPROVAL_TOKEN_REQUIRED is set and the token is missing or wrong.",
            404: "No such job.",
            409: "The job is not waiting for a human decision.",
        },
        body=ref("ApprovalBody"),
        headers={"X-Approval-Token": "The wait's approval token (or the body's `token`)."},
    ),
    "FlushDb": Operation(
        {200: Reply("Everything was erased.", _status("db_flushed"))},
        errors={404: "Not enabled (DEBUG_FLUSH_ENABLED is false): the default."},
    ),
    "GetDocs": Operation({200: Reply("The interactive documentation page.", _STRING, "text/html")}),
    "GetOpenApi": Operation({200: Reply("This document.", {"type": "object"})}),
    CREATE_JOB: Operation(
        {
            202: Reply("The job was created and starts at once.", ref("JobAccepted")),
        },
        errors={
            400: "Invalid body, or initial_data that the blueprint's input_schema refuses; "
            "the message names the field or the failing path.",
            413: "initial_data over MAX_PAYLOAD_BYTES (without S3 to take it by reference), "
            "a body over the body limit, or more than the client may store "
            "(CLIENT_MAX_STORED_BYTES); the message names the limit.",
            429: "Rate limit, monthly quota, or the client's jobs in flight "
            "(CLIENT_MAX_JOBS_IN_FLIGHT) reached.",
        },
        body=ref("CreateJobBody"),
        body_required=False,
    ),
    "GetJob": Operation(
        {200: Reply("The job (only the selected fields with `fields`).", _A_JOB)},
        errors={400: "Invalid `wait`, or an unknown name in `fields`.", 404: _ERROR_404_JOB},
        query={
            "fields": _FIELDS_QUERY,
            "wait": {
                "type": "number",
                "minimum": 0,
                "description": "Hold the request up to this many seconds until the job "
                "changes (capped at JOB_WAIT_MAX_SECONDS; at once if it is terminal).",
            },
        },
    ),
    "StreamJobEvents": Operation(
        {
            200: Reply(
                "Server-Sent Events: the job's status, state and progress, once now and "
                "then at every change, until it ends.",
                _STRING,
                "text/event-stream",
            )
        },
        errors={404: _ERROR_404_JOB},
        holds=True,
    ),
    "CancelJob": Operation(
        {200: Reply("The job is cancelled.", ref("CancelResult"))},
        errors={404: _ERROR_404_JOB, 409: "The job has already ended."},
    ),
    "RetryJob": Operation(
        {200: Reply("The job, running again from where it stopped.", ref("Job"))},
        errors={
            400: "A body that is not a JSON object.",
            404: _ERROR_404_JOB,
            409: "The job is not failed, error or quarantined.",
        },
        body={"type": "object", "description": "Empty, or `{}`."},
        body_required=False,
    ),
    "ApproveJob": Operation(
        {200: Reply("The decision was applied; the job after it.", ref("Job"))},
        errors={
            400: "Invalid body, or a decision the wait does not offer.",
            404: _ERROR_404_JOB,
            409: "The job is not waiting for a human decision.",
        },
        body=ref("DecisionBody"),
    ),
    "GetJobHistory": Operation(
        {
            200: Reply(
                "Every lifecycle event of the job, oldest first.",
                {"type": "array", "items": ref("HistoryEvent")},
            )
        },
        errors={404: _ERROR_404_JOB},
    ),
    "GetUploadUrl": Operation(
        {200: Reply("A presigned S3 PUT URL.", ref("UploadUrl"))},
        errors=_FILES_ERRORS,
        query={
            "filename": {"type": "string", "minLength": 1, "description": "The file's name."},
            "expires_in": {
                "type": "integer",
                "minimum": 1,
                "default": 3600,
                "description": "Validity of the URL in seconds.",
            },
        },
        required_query=frozenset({"filename"}),
    ),
    "UploadFile": Operation(
        {200: Reply("Stored.", ref("Uploaded"))},
        errors=_FILES_ERRORS,
        body={"type": "string", "format": "binary"},
        body_media_type="application/octet-stream",
    ),
    "DownloadFile": Operation(
        {302: Reply("Redirect to a fresh presigned S3 GET URL.", headers={"Location": "The URL."})},
        errors={**_FILES_ERRORS, 404: "No such job or file."},
    ),
    "GetBlueprintGraph": Operation(
        {
            200: Reply(
                "The state machine as Graphviz DOT, or as SVG with `format=svg`.",
                _STRING,
                "text/vnd.graphviz",
                also=("image/svg+xml",),
            )
        },
        errors={400: "An unknown format.", 404: "No such blueprint."},
        query={
            "format": {
                "type": "string",
                "enum": ["dot", "svg"],
                "description": "`dot` (the default) or `svg`.",
            }
        },
    ),
    "ListWorkers": Operation(
        {200: Reply("The connected workers.", {"type": "array", "items": ref("Worker")})}
    ),
    "ListJobs": Operation(
        {200: Reply("A page of the caller's jobs, newest first.", ref("JobPage"))},
        errors={
            400: "An unknown status or field name, a page size out of range or a page token "
            "not ours."
        },
        query={
            "fields": _FIELDS_QUERY,
            "statuses": {
                "type": "array",
                "items": {"type": "string", "enum": _JOB_STATUSES},
                "description": "Only jobs in one of these statuses (repeat the parameter, "
                "or separate names with commas).",
            },
            "created_after_ms": {
                "type": "integer",
                "minimum": 0,
                "description": "Only jobs created at or after this time (epoch ms).",
            },
            "page_size": {
                "type": "integer",
                "minimum": 0,
                "maximum": 500,
                "description": "At most this many jobs (0: 50).",
            },
        },
    ),
    "ListBlueprints": Operation(
        {200: Reply("The registered blueprints, by name.", ref("BlueprintList"))}
    ),
    "GetDashboard": Operation({200: Reply("Aggregate statistics.", ref("Dashboard"))}),
    "RegisterWorker": Operation(
        {200: Reply("Registered.", ref("Registered"))},
        errors={400: "Invalid body or worker id."},
        body=ref("WorkerRegistration"),
    ),
    "Heartbeat": Operation(
        {200: Reply("Liveness refreshed; tasks to cancel, if any.", ref("HeartbeatReply"))},
        errors={400: "Invalid body.", 404: "An empty ping from an unknown worker."},
        body=ref("WorkerHeartbeat"),
        body_required=False,
    ),
    "NextTask": Operation(
        {
            200: Reply("A task for the worker.", ref("TaskAssignment")),
            204: Reply("No task arrived within WORKER_POLL_TIMEOUT_SECONDS."),
        },
        errors={400: "A malformed worker id.", 404: "Unknown worker."},
        holds=True,
    ),
    "SubmitResult": Operation(
        {200: Reply("Accepted, or ignored with a reason.", ref("ResultReply"))},
        errors={400: "Invalid body."},
        body=ref("WorkerResult"),
    ),
    "ReportEvent": Operation(
        {200: Reply("Recorded, or ignored with a reason.", ref("EventReply"))},
        errors={400: "Invalid body, or an unknown field (named)."},
        body=ref("WorkerEvent"),
    ),
}
