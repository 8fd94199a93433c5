"""The legacy REST worker wire format (SDK ``avtomatika-worker`` 1.0b7, protocol
1.0b3) to and from the domain messages. Every problem is a 400 naming the
field; ``null`` lists and objects read as empty."""

from __future__ import annotations

import json
import math
from typing import Any

from avtomatika.errors import InvalidArgument
from avtomatika.ids import check_worker_id
from avtomatika.payload import from_payload, to_payload
from avtomatika.v1 import task_pb2
from avtomatika.v1.task_pb2 import Task, TaskError, TaskResult
from avtomatika.v1.worker_pb2 import GpuInfo, InstalledModel, WorkerRegistration
from avtomatika.v1.worker_service_pb2 import HeartbeatRequest

__all__ = ["heartbeat_request", "registration", "task_json", "task_result"]

_RESULT_STATUSES = {
    "success": task_pb2.TASK_RESULT_STATUS_SUCCESS,
    "failure": task_pb2.TASK_RESULT_STATUS_FAILURE,
    "cancelled": task_pb2.TASK_RESULT_STATUS_CANCELLED,
}
_ERROR_CODES = {
    "TRANSIENT_ERROR": task_pb2.ERROR_CODE_TRANSIENT,
    "PERMANENT_ERROR": task_pb2.ERROR_CODE_PERMANENT,
    "INVALID_INPUT_ERROR": task_pb2.ERROR_CODE_INVALID_INPUT,
}


def registration(body: dict[str, Any]) -> WorkerRegistration:
    """``POST /_worker/workers/register``. Skills come from ``supported_skills``
    (1.0b7) or ``supported_tasks`` (earlier SDKs)."""
    reg = WorkerRegistration(
        worker_id=_worker_id(body.get("worker_id")),
        worker_type=_string(body, "worker_type"),
        skills=_skills(body),
    )
    resources = _object(body, "resources")
    res = reg.resources
    res.max_concurrent_tasks = _count(resources, "max_concurrent_tasks", "resources.")
    res.cpu_cores = _count(resources, "cpu_cores", "resources.")
    res.ram_gb = _number(resources, "ram_gb", "resources.")
    gpu = _object(resources, "gpu_info", "resources.")
    if gpu:
        res.gpu_info.CopyFrom(
            GpuInfo(
                model=_string(gpu, "model", "resources.gpu_info."),
                vram_gb=_number(gpu, "vram_gb", "resources.gpu_info."),
            )
        )
    for i, model in enumerate(_list(body, "installed_models")):
        where = f"installed_models[{i}]."
        if not isinstance(model, dict):
            raise InvalidArgument(f"{where[:-1]} must be an object with name and version")
        res.installed_models.append(
            InstalledModel(
                name=_string(model, "name", where), version=_string(model, "version", where)
            )
        )
    for name, version in _object(body, "installed_software").items():
        reg.installed_software[name] = _text(version)
    capabilities = _object(body, "capabilities")
    for skill, cost in _object(capabilities, "cost_per_skill", "capabilities.").items():
        reg.cost_per_skill[skill] = _finite(cost, f"capabilities.cost_per_skill.{skill}")
    # Free-form capabilities become labels, matched by extra requirements.
    for key, value in _object(capabilities, "extra", "capabilities.").items():
        reg.labels[key] = _text(value)
    return reg


def heartbeat_request(worker_id: str, body: dict[str, Any]) -> HeartbeatRequest:
    """``PATCH /_worker/workers/{worker_id}`` with a body. The path names the
    worker; a body naming another one is refused."""
    named = body.get("worker_id")
    if named is not None and named != worker_id:
        raise InvalidArgument(f"the body's worker_id {named!r} is not the path's {worker_id!r}")
    return HeartbeatRequest(
        worker_id=worker_id,
        status=_string(body, "status"),
        load=_number(body, "load"),
        current_tasks=_strings(body, "current_tasks"),
        supported_skills=_skills(body),
    )


def task_result(body: dict[str, Any]) -> TaskResult:
    """``POST /_worker/tasks/result``: a status of ``success`` (the default),
    ``failure``, ``cancelled``, or any other name, which selects the blueprint
    transition of that name."""
    result = TaskResult(
        job_id=_required(body, "job_id"),
        task_id=_required(body, "task_id"),
        worker_id=_worker_id(body.get("worker_id")),
    )
    status = body.get("status")
    if status is None or status == "":
        status = "success"
    if not isinstance(status, str):
        raise InvalidArgument("status must be a string")
    if status in _RESULT_STATUSES:
        result.status = _RESULT_STATUSES[status]
    else:
        result.status = task_pb2.TASK_RESULT_STATUS_CUSTOM
        result.custom_status = status
    data = body.get("data")
    if data is not None:
        result.data.CopyFrom(_payload("data", data))
    error = body.get("error")
    if isinstance(error, str):
        error = {"message": error}
    if error is not None:
        if not isinstance(error, dict):
            raise InvalidArgument("error must be an object with code and message")
        code = error.get("code")
        if code is not None and not isinstance(code, str):
            raise InvalidArgument("error.code must be a string")
        result.error.CopyFrom(
            TaskError(
                code=_ERROR_CODES.get(code or "", task_pb2.ERROR_CODE_UNSPECIFIED),
                # Unknown codes are kept by name and handled as transient.
                code_name="" if code in _ERROR_CODES else (code or ""),
                message=_string(error, "message", "error."),
            )
        )
        details = error.get("details")
        if details is not None:
            result.error.details.CopyFrom(_payload("error.details", details))
    return result


def task_json(task: Task) -> dict[str, Any]:
    """A task as ``GET /_worker/workers/{worker_id}/tasks/next`` hands it out."""
    return {
        "job_id": task.job_id,
        "task_id": task.task_id,
        "type": task.type,
        "params": from_payload(task.params, {}),
        "tracing_context": dict(task.tracing_context),
        "params_metadata": None,
    }


# -- fields --


def _worker_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument("worker_id is required (a string)")
    return check_worker_id(value)


def _required(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} is required (a non-empty string)")
    return value


def _string(body: dict[str, Any], name: str, where: str = "") -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}{name} must be a string")
    return value


def _text(value: Any) -> str:
    """A free-form value as a label: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _number(body: dict[str, Any], name: str, where: str = "") -> float:
    value = body.get(name)
    return 0.0 if value is None else _finite(value, where + name)


def _finite(value: Any, name: str) -> float:
    if not isinstance(value, bool) and isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # a huge JSON integer
            number = math.inf
        if math.isfinite(number):
            return number
    raise InvalidArgument(f"{name} must be a finite number")


def _count(body: dict[str, Any], name: str, where: str = "") -> int:
    value = body.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise InvalidArgument(f"{where}{name} must be a non-negative integer")
    return value


def _object(body: dict[str, Any], name: str, where: str = "") -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where}{name} must be an object")
    return value


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{name} must be a list")
    return value


def _strings(body: dict[str, Any], name: str) -> list[str]:
    values = _list(body, name)
    if not all(isinstance(v, str) and v for v in values):
        raise InvalidArgument(f"{name} must be a list of non-empty strings")
    return values


def _skills(body: dict[str, Any]) -> list[str]:
    name = "supported_skills" if body.get("supported_skills") is not None else "supported_tasks"
    return list(dict.fromkeys(_strings(body, name)))


def _payload(name: str, value: Any) -> Any:
    try:
        return to_payload(value)
    except ValueError as exc:  # NaN or Infinity: not JSON
        raise InvalidArgument(f"{name} is not valid JSON: {exc}") from None
