"""Avtomatika: an orchestrator for long-running jobs.

Blueprints (state machines in Python) turn client requests into tasks; workers
in any language run them over a gRPC stream or the legacy REST API.

The names below are imported on first use (PEP 562), not with the package:
``from avtomatika.worker import Worker`` must not load the server (aiohttp,
Redis, the REST app), and a worker-only install does not even have those.
``from avtomatika import StateMachineBlueprint`` works as in 1.0b13.

The generated protobuf package ``avtomatika.v1`` lives in ``generated/`` in
the source tree and is merged into this package by the build (see
pyproject.toml), so ``from avtomatika.v1 import job_pb2`` works both in an
editable install and from a wheel.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avtomatika.blueprint.actions import ActionFactory as ActionFactory
    from avtomatika.blueprint.context import ClientInfo as ClientInfo
    from avtomatika.blueprint.context import JobContext as JobContext
    from avtomatika.blueprint.data_stores import AsyncDictStore as AsyncDictStore
    from avtomatika.blueprint.state_machine import Blueprint as Blueprint
    from avtomatika.blueprint.state_machine import StateMachineBlueprint as StateMachineBlueprint
    from avtomatika.blueprint.task_files import TaskFiles as TaskFiles
    from avtomatika.config import Config as Config
    from avtomatika.config import Settings as Settings
    from avtomatika.errors import AvtomatikaError as AvtomatikaError
    from avtomatika.server import Orchestrator as Orchestrator
    from avtomatika.server import OrchestratorEngine as OrchestratorEngine
    from avtomatika.storage.base import Storage as Storage
    from avtomatika.storage.memory import MemoryStorage as MemoryStorage

# Public name -> the module that defines it.
_HOMES = {
    "ActionFactory": "avtomatika.blueprint.actions",
    "AsyncDictStore": "avtomatika.blueprint.data_stores",
    "AvtomatikaError": "avtomatika.errors",
    "Blueprint": "avtomatika.blueprint.state_machine",
    "ClientInfo": "avtomatika.blueprint.context",
    "Config": "avtomatika.config",
    "JobContext": "avtomatika.blueprint.context",
    "MemoryStorage": "avtomatika.storage.memory",
    "Orchestrator": "avtomatika.server",
    "OrchestratorEngine": "avtomatika.server",
    "Settings": "avtomatika.config",
    "StateMachineBlueprint": "avtomatika.blueprint.state_machine",
    "Storage": "avtomatika.storage.base",
    "TaskFiles": "avtomatika.blueprint.task_files",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'avtomatika' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
