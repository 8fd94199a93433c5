"""Avtomatika: an orchestrator for long-running jobs.

Blueprints (state machines in Python) turn client requests into tasks; workers
in any language run them over a gRPC stream or the legacy REST API.

The generated protobuf package ``avtomatika.v1`` lives in ``generated/`` in
the source tree and is merged into this package by the build (see
pyproject.toml), so ``from avtomatika.v1 import job_pb2`` works both in an
editable install and from a wheel.
"""

from avtomatika.actions import ActionFactory
from avtomatika.app import OrchestratorEngine
from avtomatika.blueprint import Blueprint, StateMachineBlueprint
from avtomatika.config import Config, Settings
from avtomatika.context import ClientInfo, JobContext
from avtomatika.data_stores import AsyncDictStore
from avtomatika.errors import AvtomatikaError
from avtomatika.storage import MemoryStorage, Storage
from avtomatika.task_files import TaskFiles

__all__ = [
    "ActionFactory",
    "AsyncDictStore",
    "AvtomatikaError",
    "Blueprint",
    "ClientInfo",
    "Config",
    "JobContext",
    "MemoryStorage",
    "OrchestratorEngine",
    "Settings",
    "StateMachineBlueprint",
    "Storage",
    "TaskFiles",
]
