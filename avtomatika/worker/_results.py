"""Turning what a handler did into a ``TaskResult`` message.

One table maps the REST error codes users raise to the proto's ``ErrorCode``;
the code is always kept verbatim in ``code_name`` too, so a code the table
does not know still reaches the orchestrator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from avtomatika.payload import from_payload, to_payload
from avtomatika.v1 import task_pb2
from avtomatika.v1.task_pb2 import ErrorCode, TaskError, TaskResult, TaskResultStatus
from avtomatika.v1.worker_service_pb2 import TaskAssignment
from avtomatika.worker.errors import TaskFailure
from avtomatika.worker.task import TaskOutcome

__all__ = [
    "cancelled_result",
    "decode_params",
    "exception_result",
    "failure_result",
    "handler_result",
]

_ERROR_CODES: Mapping[str, ErrorCode.ValueType] = {
    TaskFailure.TRANSIENT: task_pb2.ERROR_CODE_TRANSIENT,
    TaskFailure.PERMANENT: task_pb2.ERROR_CODE_PERMANENT,
    TaskFailure.INVALID_INPUT: task_pb2.ERROR_CODE_INVALID_INPUT,
}


def decode_params(assignment: TaskAssignment) -> dict[str, Any]:
    """The task's parameters; a task without any gets ``{}``."""
    try:
        params = from_payload(assignment.params, default={})
    except ValueError as exc:  # json.JSONDecodeError and bad encodings alike
        raise TaskFailure.invalid_input(f"task params are not valid JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise TaskFailure.invalid_input(
            f"task params must be a JSON object, not {type(params).__name__}"
        )
    return params


def handler_result(assignment: TaskAssignment, worker_id: str, returned: object) -> TaskResult:
    """The result of a handler that returned ``returned``."""
    if isinstance(returned, TaskOutcome):
        return _outcome_result(assignment, worker_id, returned)
    if returned is None or isinstance(returned, Mapping):
        return _outcome_result(assignment, worker_id, TaskOutcome(data=returned))
    return failure_result(
        assignment,
        worker_id,
        TaskFailure.permanent(
            f"the {assignment.type!r} handler returned {type(returned).__name__}; "
            "a handler returns a dict, a TaskOutcome or None"
        ),
    )


def failure_result(
    assignment: TaskAssignment, worker_id: str, failure: TaskFailure, data: object = None
) -> TaskResult:
    """A FAILURE result carrying ``failure``'s code, message and details."""
    result = _base(assignment, worker_id, task_pb2.TASK_RESULT_STATUS_FAILURE)
    result.error.CopyFrom(
        TaskError(
            code=_ERROR_CODES.get(failure.code, task_pb2.ERROR_CODE_UNSPECIFIED),
            code_name=failure.code,
            message=failure.message,
        )
    )
    if failure.details is not None:
        try:
            result.error.details.CopyFrom(to_payload(failure.details))
        except (TypeError, ValueError) as exc:
            result.error.message += f" (its details are not JSON: {exc})"
    if data is not None:
        try:
            result.data.CopyFrom(to_payload(data))
        except (TypeError, ValueError) as exc:
            result.error.message += f" (its data is not JSON: {exc})"
    return result


def exception_result(assignment: TaskAssignment, worker_id: str, exc: Exception) -> TaskResult:
    """A FAILURE result for an unexpected exception: worth a retry."""
    return failure_result(
        assignment, worker_id, TaskFailure.transient(f"{type(exc).__name__}: {exc}")
    )


def cancelled_result(assignment: TaskAssignment, worker_id: str, reason: str) -> TaskResult:
    """A CANCELLED result; ``reason`` says who stopped the task and why."""
    result = _base(assignment, worker_id, task_pb2.TASK_RESULT_STATUS_CANCELLED)
    # No error code: a cancelled task did not fail. The message says why.
    result.error.CopyFrom(TaskError(message=reason))
    return result


def _outcome_result(assignment: TaskAssignment, worker_id: str, outcome: TaskOutcome) -> TaskResult:
    data = dict(outcome.data) if outcome.data is not None else {}
    if outcome.status == "failure":
        failure = outcome.error or TaskFailure(
            TaskFailure.TRANSIENT, "the handler reported failure"
        )
        return failure_result(assignment, worker_id, failure, data)
    if outcome.status == "success":
        result = _base(assignment, worker_id, task_pb2.TASK_RESULT_STATUS_SUCCESS)
    else:
        result = _base(assignment, worker_id, task_pb2.TASK_RESULT_STATUS_CUSTOM)
        result.custom_status = outcome.status
    try:
        result.data.CopyFrom(to_payload(data))
    except (TypeError, ValueError) as exc:
        return failure_result(
            assignment,
            worker_id,
            TaskFailure.permanent(f"the {assignment.type!r} handler's result is not JSON: {exc}"),
        )
    return result


def _base(
    assignment: TaskAssignment, worker_id: str, status: TaskResultStatus.ValueType
) -> TaskResult:
    return TaskResult(
        task_id=assignment.task_id, job_id=assignment.job_id, worker_id=worker_id, status=status
    )
