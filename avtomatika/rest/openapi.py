"""The OpenAPI 3.1 document of the REST API (``GET /_public/openapi.json``).

Nothing here lists paths. The document is generated from what the
application serves:

- every route registered on the aiohttp router (from ``routes.ROUTES``),
  joined to its RPC through the proto's ``google.api.http`` annotation: the
  RPC's name is the ``operationId``, its proto comment the summary and
  description, its request message's unbound scalar fields the query
  parameters (grpc-gateway rules; :mod:`api_shapes` adds the few REST-only
  ones, such as a job's ``fields``), a server-streaming RPC a held request;
- the generic ``POST /api/{api_version}/{endpoint}`` becomes one concrete
  path per registered blueprint (it is rebuilt on every request, so a
  blueprint registered later shows up);
- bodies, responses and status codes from :mod:`api_shapes`.

Authentication follows the path prefix, like the middleware: ``/api`` takes
``X-Client-Token``, ``/_worker`` takes ``X-Worker-Token``, ``/_public`` none.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from aiohttp import web
from google.api import annotations_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.empty_pb2 import Empty

import avtomatika.v1
from avtomatika.blueprint.state_machine import StateMachineBlueprint
from avtomatika.rest.api_shapes import (
    CREATE_JOB,
    JSON,
    OPERATIONS,
    PATH_PARAMETERS,
    SCHEMAS,
    Operation,
    Reply,
    Schema,
    ref,
)
from avtomatika.rest.console_api import CONSOLE_PATHS
from avtomatika.rest.state import ENGINE
from avtomatika.rest.worker_api.websocket import WEBSOCKET_PATHS

__all__ = ["HOLDS", "Rpc", "annotated_rpcs", "openapi_document", "template"]

OPENAPI_VERSION = "3.1.0"
HOLDS = "x-avtomatika-holds"
"""Extension on operations that hold the request open (long-poll, event
stream); the docs page streams their response."""

_FALLBACK = Operation({200: Reply("Success.")})
_SECURITY = {
    "/api/": ("client", "clientToken", "X-Client-Token"),
    "/_worker/": ("worker", "workerToken", "X-Worker-Token"),
}
_TAGS = [
    {"name": "public", "description": "No authentication."},
    {
        "name": "blueprints",
        "description": "Create jobs: one path per registered blueprint "
        "(`POST /api/{api_version}/{endpoint}`). Requires X-Client-Token.",
    },
    {"name": "client", "description": "Follow and manage jobs. Requires X-Client-Token."},
    {
        "name": "worker",
        "description": "The legacy REST worker API (new workers use the gRPC stream). "
        "Requires X-Worker-Token. Not listed here, as OpenAPI cannot describe it: the "
        "WebSocket `GET /_worker/ws/{worker_id}` (or `/_worker/ws`), which carries "
        '`{"command": "cancel_task", "task_id", "job_id"}` down and '
        '`{"event": "progress_update", "task_id", "job_id", "progress", "message"}` up.',
    },
]
_QUERY_TYPES: dict[int, Schema] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer"},
    FieldDescriptor.TYPE_INT64: {"type": "integer"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_UINT64: {"type": "integer", "minimum": 0},
}


@dataclass(frozen=True, slots=True)
class Rpc:
    """An RPC with a REST mapping."""

    name: str
    doc: str
    request: Descriptor
    streaming: bool


def template(path: str) -> str:
    """``{name=**}`` (google.api) and ``{name:regex}`` (aiohttp) -> ``{name}``."""
    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)[=:][^}]*\}", r"{\1}", path)


@functools.cache
def annotated_rpcs() -> dict[tuple[str, str], Rpc]:
    """Every annotated RPC of every ``*_service.proto``, by (method, path
    template). The docs are the proto comments, which protoc's gRPC plugin
    copies onto the generated servicer methods."""
    rpcs = {}
    for module in pkgutil.iter_modules(avtomatika.v1.__path__):
        if not module.name.endswith("_service_pb2"):
            continue
        messages = importlib.import_module(f"avtomatika.v1.{module.name}")
        stubs = importlib.import_module(f"avtomatika.v1.{module.name}_grpc")
        for service in messages.DESCRIPTOR.services_by_name.values():
            servicer = getattr(stubs, f"{service.name}Servicer")
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                if verb is None or verb == "custom":
                    continue
                doc = inspect.getdoc(getattr(servicer, method.name)) or ""
                key = (verb.upper(), template(getattr(rule, verb)))
                rpcs[key] = Rpc(method.name, doc, method.input_type, method.server_streaming)
    return rpcs


def openapi_document(app: web.Application) -> dict[str, Any]:
    """The document for what ``app`` serves now."""
    engine = app[ENGINE]
    rpcs = annotated_rpcs()
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler_name in _served(app):
        rpc = rpcs.get((method, path)) or Rpc(handler_name, "", Empty.DESCRIPTOR, streaming=False)
        if rpc.name == CREATE_JOB:
            for blueprint in engine.blueprints.values():
                if blueprint.route is not None:
                    operation = _create_operation(rpc, blueprint, _unique_ids(paths))
                    paths.setdefault(f"/api/{blueprint.route}", {})["post"] = operation
            continue
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, rpc)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Avtomatika",
            "version": _version(),
            "description": (
                'The orchestrator\'s REST API. Errors are JSON `{"error": message}` with '
                "the status code. Client endpoints (`/api`) take `X-Client-Token`, worker "
                "endpoints (`/_worker`) take `X-Worker-Token`; jobs belong to the client "
                "that created them (404 for any other). Workers should prefer the gRPC "
                "stream (`avtomatika.v1.WorkerService/Connect`), which has no REST mapping."
            ),
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                scheme: {"type": "apiKey", "in": "header", "name": header}
                for _, scheme, header in _SECURITY.values()
            },
        },
    }


def _served(app: web.Application) -> Iterator[tuple[str, str, str]]:
    """(method, path template, handler name) of every route but the
    WebSockets and the console's pages, in table order."""
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        path = template(route.resource.canonical)
        if path not in WEBSOCKET_PATHS and path not in CONSOLE_PATHS:
            yield route.method, path, route.handler.__name__


def _operation(method: str, path: str, rpc: Rpc) -> dict[str, Any]:
    shape = OPERATIONS.get(rpc.name, _FALLBACK)
    tag, security = _access(path)
    parameters = _path_parameters(path)
    if method in ("GET", "DELETE"):
        parameters += _query_parameters(path, rpc, shape)
    parameters += [
        {"name": name, "in": "header", "description": text, "schema": {"type": "string"}}
        for name, text in shape.headers.items()
    ]
    operation: dict[str, Any] = {
        "operationId": rpc.name,
        "tags": [tag],
        "summary": _summary(rpc),
        "description": _prose(rpc),
    }
    if parameters:
        operation["parameters"] = parameters
    if shape.body is not None:
        operation["requestBody"] = {
            "required": shape.body_required,
            "content": {shape.body_media_type: {"schema": shape.body}},
        }
    operation["responses"] = _responses(shape, path)
    if security:
        operation["security"] = [{security: []}]
    if shape.holds or rpc.streaming:
        operation[HOLDS] = True
    return operation


def _create_operation(rpc: Rpc, blueprint: StateMachineBlueprint, taken: set[str]) -> Any:
    operation = _operation("POST", "/api/", rpc)
    operation["tags"] = ["blueprints"]
    operation["summary"] = f"Create a job of blueprint {blueprint.name!r}"
    operation["description"] = (
        f"{_prose(rpc)}\n\nThis is `POST /api/{{api_version}}/{{endpoint}}` for blueprint "
        f"`{blueprint.name}`."
    ).strip()
    base = "CreateJob_" + re.sub(r"[^A-Za-z0-9_]", "_", blueprint.name)
    operation_id, n = base, 1
    while operation_id in taken:
        n += 1
        operation_id = f"{base}_{n}"
    operation["operationId"] = operation_id
    operation["x-avtomatika-blueprint"] = blueprint.name
    return operation


def _unique_ids(paths: dict[str, dict[str, Any]]) -> set[str]:
    return {op["operationId"] for item in paths.values() for op in item.values()}


def _access(path: str) -> tuple[str, str | None]:
    for prefix, (tag, scheme, _) in _SECURITY.items():
        if path.startswith(prefix):
            return tag, scheme
    return "public", None


def _prose(rpc: Rpc) -> str:
    """The proto comment as text: lines wrapped for the .proto file joined
    into paragraphs, and "GetJob returns ..." read as "Returns ..."."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", rpc.doc) if p.strip()]
    text = "\n\n".join(paragraphs)
    if text.startswith(rpc.name + " "):
        text = text[len(rpc.name) + 1 :]
        text = text[:1].upper() + text[1:]
    return text


def _summary(rpc: Rpc) -> str:
    return re.split(r"\.(?:\s|$)", _prose(rpc))[0] or rpc.name


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PATH_PARAMETERS.get(name, name),
            "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
        }
        for name in re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", path)
    ]


def _query_parameters(path: str, rpc: Rpc, shape: Operation) -> list[dict[str, Any]]:
    """Unbound scalar fields of the request message, as grpc-gateway maps
    them for a GET; ``shape.query`` refines their schemas, and adds, after
    them, the REST-only parameters the message does not have (``fields``)."""
    bound = set(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", path))
    named: dict[str, dict[str, Any]] = {}
    for field in rpc.request.fields:
        refined = shape.query.get(field.name)
        if field.name in bound or (refined is None and field.is_repeated):
            continue
        if refined is None and field.type not in _QUERY_TYPES:
            continue
        named[field.name] = refined or _QUERY_TYPES[field.type]
    fields = {field.name for field in rpc.request.fields}
    named |= {name: schema for name, schema in shape.query.items() if name not in fields}
    parameters = []
    for name, documented in named.items():
        schema = dict(documented)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in shape.required_query,
            "schema": schema,
        }
        if "description" in schema:
            parameter["description"] = schema.pop("description")
        parameters.append(parameter)
    return parameters


def _responses(shape: Operation, path: str) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, reply in shape.replies.items():
        response: dict[str, Any] = {"description": reply.description}
        if reply.schema is not None:
            response["content"] = {
                media_type: {"schema": reply.schema}
                for media_type in (reply.media_type, *reply.also)
            }
        if reply.headers:
            response["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in reply.headers.items()
            }
        responses[str(status)] = response
    errors = dict(shape.errors)
    _, security = _access(path)
    if security:
        errors.setdefault(401, "Missing or invalid token.")
    if path.startswith("/api/"):
        errors.setdefault(429, "Rate limit or monthly quota exceeded.")
    for status, text in sorted(errors.items()):
        response = {"description": text, "content": {JSON: {"schema": ref("Error")}}}
        if status == 429:
            response["headers"] = {
                "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
            }
        responses[str(status)] = response
    return responses


def _version() -> str:
    try:
        return metadata.version("avtomatika")
    except metadata.PackageNotFoundError:
        return "0"
