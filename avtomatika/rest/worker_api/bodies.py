"""The legacy REST worker wire format to and from the domain messages, in
both dialects: SDK ``avtomatika-worker`` 1.0b7 (protocol 1.0b3: skills as
strings) and 1.0b20 (protocol 1.0b17: skills as objects, resources as
``properties`` and ``devices``, skills hashes, signed bodies, events).
Every problem is a 400 naming the field; ``null`` lists and objects read as
empty. Fields neither dialect sends are refused, so a typo is not silently
dropped."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from typing import Any

import orjson

from avtomatika.errors import InvalidArgument
from avtomatika.ids import check_worker_id
from avtomatika.payload import from_payload, to_payload
from avtomatika.v1 import task_pb2
from avtomatika.v1.task_pb2 import Task, TaskError, TaskResult
from avtomatika.v1.worker_pb2 import GpuInfo, InstalledModel, WorkerRegistration
from avtomatika.v1.worker_service_pb2 import HeartbeatRequest

__all__ = [
    "Event",
    "Extras",
    "event",
    "extras",
    "heartbeat_request",
    "registration",
    "signature",
    "signed_content",
    "task_content",
    "task_json",
    "task_result",
]

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
# SDK 1.0b20's further codes, handled as upstream handles them: the name is
# kept (the job's error shows it), the class decides quarantine, failure or
# retry.
_FURTHER_ERROR_CODES = {
    "SECURITY_ERROR": task_pb2.ERROR_CODE_PERMANENT,
    "DEPENDENCY_MISSING_ERROR": task_pb2.ERROR_CODE_PERMANENT,
    "CONTRACT_VIOLATION_ERROR": task_pb2.ERROR_CODE_PERMANENT,
    "INTEGRITY_MISMATCH_ERROR": task_pb2.ERROR_CODE_INVALID_INPUT,
    "LIMIT_EXCEEDED_ERROR": task_pb2.ERROR_CODE_TRANSIENT,
}

# The fields each body may carry, in either dialect (1.0b7 first).
_REGISTRATION_FIELDS = frozenset(
    {
        "worker_id", "worker_type", "supported_skills", "supported_tasks", "resources",
        "installed_software", "installed_models", "capabilities",
        "available_skills", "hot_skills", "installed_artifacts", "skills_hash",
        "timestamp", "security",
    }
)  # fmt: skip
_RESOURCE_FIELDS = frozenset(
    {"max_concurrent_tasks", "cpu_cores", "ram_gb", "gpu_info", "properties", "devices"}
)
_HEARTBEAT_FIELDS = frozenset(
    {
        "worker_id", "status", "load", "current_tasks", "supported_skills", "hot_cache",
        "skill_dependencies", "hot_skills",
        "usage", "available_skills", "skills_hash", "timestamp", "security",
    }
)  # fmt: skip
_RESULT_FIELDS = frozenset(
    {
        "job_id", "task_id", "worker_id", "status", "data", "error", "data_metadata",
        "origin_worker_id", "security", "metadata", "timestamp", "costs",
    }
)  # fmt: skip
_EVENT_FIELDS = frozenset(
    {
        "event_id", "worker_id", "origin_worker_id", "event_type", "payload",
        "origin_task_id", "bubbling_chain", "target_job_id", "target_task_id",
        "trace_context", "priority", "timestamp", "security", "metadata",
    }
)  # fmt: skip
_SKILL_FIELDS = frozenset(
    {
        "name", "type", "version", "description", "input_schema", "output_schema",
        "events_schema", "output_statuses", "schema_dialect", "properties",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Extras:
    """What a 1.0b20 body carries beyond the domain message: the hash of the
    worker's skills and the skills it offers now (None: all of them)."""

    skills_hash: str = ""
    available_skills: list[str] | None = None


def extras(body: dict[str, Any]) -> Extras:
    """The skills hash and available skills of a registration or heartbeat."""
    available = None
    if body.get("available_skills") is not None:
        available = _strings(body, "available_skills")
    return Extras(skills_hash=_string(body, "skills_hash"), available_skills=available)


def registration(body: dict[str, Any]) -> WorkerRegistration:
    """``POST /_worker/workers/register``. Skills come from ``supported_skills``
    (strings from 1.0b7, objects from 1.0b20) or ``supported_tasks``
    (earlier SDKs)."""
    _known(body, _REGISTRATION_FIELDS)
    reg = WorkerRegistration(
        worker_id=_worker_id(body.get("worker_id")),
        worker_type=_string(body, "worker_type"),
        skills=_skills(body),
    )
    resources = _object(body, "resources")
    _known(resources, _RESOURCE_FIELDS, "resources.")
    # 1.0b20 nests the figures under "properties" (free-form beyond these).
    properties = _object(resources, "properties", "resources.")
    res = reg.resources
    res.max_concurrent_tasks = _count(resources, "max_concurrent_tasks", "resources.")
    res.cpu_cores = _count(resources, "cpu_cores", "resources.") or _count(
        properties, "cpu_cores", "resources.properties."
    )
    res.ram_gb = _number(resources, "ram_gb", "resources.") or _number(
        properties, "ram_gb", "resources.properties."
    )
    gpu = _object(resources, "gpu_info", "resources.") or _gpu_device(resources)
    if gpu:
        res.gpu_info.CopyFrom(
            GpuInfo(
                model=_string(gpu, "model", "resources.gpu_info."),
                vram_gb=_number(gpu, "vram_gb", "resources.gpu_info."),
            )
        )
    for i, artifact in enumerate(_list(body, "installed_artifacts")):
        # 1.0b20's artifacts are 1.0b7's models, with a type and properties.
        where = f"installed_artifacts[{i}]."
        if not isinstance(artifact, dict):
            raise InvalidArgument(f"{where[:-1]} must be an object with name and version")
        res.installed_models.append(
            InstalledModel(
                name=_string(artifact, "name", where), version=_string(artifact, "version", where)
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
    worker; a body naming another one is refused. 1.0b20 sends skills only
    when their hash changed."""
    _known(body, _HEARTBEAT_FIELDS)
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
    _known(body, _RESULT_FIELDS)
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
                code=_ERROR_CODES.get(code or "")
                or _FURTHER_ERROR_CODES.get(code or "", task_pb2.ERROR_CODE_UNSPECIFIED),
                # Unknown codes are kept by name and handled as transient.
                code_name="" if code in _ERROR_CODES else (code or ""),
                message=_string(error, "message", "error."),
            )
        )
        details = error.get("details")
        if details is not None:
            result.error.details.CopyFrom(_payload("error.details", details))
    return result


@dataclass(frozen=True, slots=True)
class Event:
    """A 1.0b20 worker event (``POST /_worker/events`` or the WebSocket).
    Only ``progress`` means something here: ``progress`` is NaN for others."""

    worker_id: str
    task_id: str
    event_type: str
    progress: float
    message: str


def event(body: dict[str, Any]) -> Event:
    """A worker event; the task is ``target_task_id`` (``origin_task_id`` when
    it names none)."""
    _known(body, _EVENT_FIELDS)
    event_type = _required(body, "event_type")
    task_id = body.get("target_task_id") or body.get("origin_task_id")
    if not isinstance(task_id, str):
        raise InvalidArgument("target_task_id is required (a non-empty string)")
    payload = _object(body, "payload")
    progress = math.nan
    if event_type == "progress":
        progress = _finite(payload.get("progress"), "payload.progress")
    return Event(
        worker_id=_worker_id(body.get("worker_id")),
        task_id=task_id,
        event_type=event_type,
        progress=progress,
        message=_string(payload, "message", "payload."),
    )


def task_json(task: Task, signing_secret: str | None = None) -> dict[str, Any]:
    """A task as ``GET /_worker/workers/{worker_id}/tasks/next`` hands it out;
    with ``signing_secret``, signed in ``sig`` as SDK 1.0b20 verifies it
    when it has the same secret (1.0b7 ignores the field)."""
    body: dict[str, Any] = {
        "job_id": task.job_id,
        "task_id": task.task_id,
        "type": task.type,
        "params": from_payload(task.params, {}),
        "tracing_context": dict(task.tracing_context),
        "params_metadata": None,
    }
    # Params the SDK could not sign either (an integer beyond 64 bits) are
    # handed out unsigned rather than left leased to a poll that failed: a
    # worker requiring signatures drops the task, and its deadline ends it.
    with contextlib.suppress(InvalidArgument):
        if signing_secret:
            body["sig"] = _hmac(signing_secret, task_content(body))
    return body


# The fields of SDK 1.0b20's task model: it parses the task into that model
# and verifies the signature over the model, so anything else is not signed.
_TASK_MODEL_FIELDS = frozenset(
    {
        "job_id", "task_id", "type", "params", "tracing_context", "params_metadata",
        "priority", "deadline", "security", "metadata", "timestamp", "policy", "sig",
        "step", "depth", "parent_hash",
    }
)  # fmt: skip
# Fields with these values equal their model defaults, which the model
# leaves out when it serialises itself.
_TASK_MODEL_DEFAULTS = {"priority": 0, "step": 0, "depth": 0}
# Never signed: the signatures themselves.
_SIGNATURE_FIELDS = ("sig", "orchestrator_signature", "security", "_signature")


def task_content(body: dict[str, Any]) -> bytes:
    """The bytes of a task that its ``sig`` signs: what SDK 1.0b20 parses it
    into (its task model's fields, defaults left out), as it signs that."""
    model = {
        key: value
        for key, value in body.items()
        if key in _TASK_MODEL_FIELDS and _TASK_MODEL_DEFAULTS.get(key, ...) != value
    }
    return signed_content(model, _SIGNATURE_FIELDS)


def signed_content(body: dict[str, Any], leave_out: tuple[str, ...] = ("security",)) -> bytes:
    """The bytes SDK 1.0b20 signs for ``body``: without ``leave_out``, nulls
    dropped at every depth, whole-number floats as integers, keys sorted,
    compact JSON as orjson writes it. (A body the SDK sent is already in
    that form, so re-serialising what arrived gives its bytes back.)"""
    kept = {key: value for key, value in body.items() if key not in leave_out}
    try:
        return orjson.dumps(_normal(kept), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: the SDK cannot sign it either
        raise InvalidArgument("the body holds an integer too large to sign") from None


def signature(body: dict[str, Any]) -> str | None:
    """The worker's signature of ``body`` (``security.signature``), if any."""
    security = body.get("security")
    value = security.get("signature") if isinstance(security, dict) else None
    return value if isinstance(value, str) and value else None


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_normal(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _hmac(secret: str, content: bytes) -> str:
    return hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()


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
    """Skill names: 1.0b7 sends strings, 1.0b20 objects keyed by ``name``."""
    field = "supported_skills" if body.get("supported_skills") is not None else "supported_tasks"
    names = []
    for i, skill in enumerate(_list(body, field)):
        if isinstance(skill, dict):
            _known(skill, _SKILL_FIELDS, f"{field}[{i}].")
            skill = skill.get("name")
            if not isinstance(skill, str) or not skill:
                raise InvalidArgument(f"{field}[{i}].name is required (a non-empty string)")
        elif not isinstance(skill, str) or not skill:
            raise InvalidArgument(
                f"{field}[{i}] must be a non-empty string or an object with a name"
            )
        names.append(skill)
    return list(dict.fromkeys(names))


def _gpu_device(resources: dict[str, Any]) -> dict[str, Any]:
    """1.0b20's first ``gpu`` device, as 1.0b7's ``gpu_info``."""
    for i, device in enumerate(_list(resources, "devices")):
        where = f"resources.devices[{i}]"
        if not isinstance(device, dict):
            raise InvalidArgument(f"{where} must be an object")
        if device.get("type") == "gpu":
            memory = _object(device, "properties", where + ".").get("memory_gb")
            return {"model": _string(device, "model", where + "."), "vram_gb": memory}
    return {}


def _known(body: dict[str, Any], fields: frozenset[str], where: str = "") -> None:
    unknown = sorted(set(body) - fields)
    if unknown:
        raise InvalidArgument(f"unknown field {where}{unknown[0]}")


def _payload(name: str, value: Any) -> Any:
    try:
        return to_payload(value)
    except ValueError as exc:  # NaN or Infinity: not JSON
        raise InvalidArgument(f"{name} is not valid JSON: {exc}") from None
