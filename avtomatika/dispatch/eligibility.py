"""A task's requirements and whether a worker meets them.

``resource_requirements`` as a blueprint gives it to ``dispatch_task``::

    {"gpu_info": {"model": "RTX 4090", "vram_gb": 24},   # substring, minimum
     "installed_models": ["whisper", {"name": "llama", "version": "3.1"}],
     "extra_requirements": {"region": "eu"}}               # equal to the labels

Every key is optional; an unknown key is an error rather than a requirement
silently ignored. ``max_cost`` bounds the worker's price for the task's skill.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from avtomatika.dispatch.profile import WorkerProfile
from avtomatika.payload import from_payload
from avtomatika.v1.task_pb2 import Task

__all__ = ["Requirements", "eligible"]

_KEYS = frozenset({"gpu_info", "installed_models", "extra_requirements"})
_GPU_KEYS = frozenset({"model", "vram_gb"})


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a worker must offer to be given a task."""

    gpu_model: str = ""
    """Case-insensitive substring of the worker's GPU model ("" : any)."""
    min_vram_gb: float = 0.0
    models: tuple[tuple[str, str], ...] = ()
    """(name, version) pairs; an empty version accepts any version."""
    extra: tuple[tuple[str, str], ...] = ()
    """(label, value) pairs the worker's labels must contain."""
    max_cost: float | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None, max_cost: float | None = None) -> Requirements:
        """Requirements from a blueprint's ``resource_requirements``; raises
        :class:`ValueError` naming what is wrong."""
        spec = spec or {}
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            raise ValueError(
                f"resource_requirements: unknown key(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_KEYS))})"
            )
        gpu = spec.get("gpu_info") or {}
        if not isinstance(gpu, Mapping) or set(gpu) - _GPU_KEYS:
            raise ValueError('resource_requirements: gpu_info must be {"model": str, "vram_gb": n}')
        model = gpu.get("model") or ""
        vram = gpu.get("vram_gb") or 0
        if not isinstance(model, str):
            raise ValueError("resource_requirements: gpu_info.model must be a string")
        if isinstance(vram, bool) or not isinstance(vram, int | float):
            raise ValueError("resource_requirements: gpu_info.vram_gb must be a number")
        extra = spec.get("extra_requirements") or {}
        if not isinstance(extra, Mapping):
            raise ValueError("resource_requirements: extra_requirements must be an object")
        return cls(
            gpu_model=model.lower(),
            min_vram_gb=float(vram),
            models=tuple(_model(item) for item in spec.get("installed_models") or ()),
            extra=tuple(sorted((str(k), _label(v)) for k, v in extra.items())),
            max_cost=max_cost,
        )

    @classmethod
    def of(cls, task: Task) -> Requirements | None:
        """The task's requirements; None when it has none (any worker with the
        skill will do)."""
        has_cost = task.HasField("max_cost")
        if not task.resource_requirements.data and not has_cost:
            return None
        spec = from_payload(task.resource_requirements, None)
        try:
            if spec is not None and not isinstance(spec, Mapping):
                raise ValueError("resource_requirements must be an object")
            found = cls.parse(spec, task.max_cost if has_cost else None)
        except ValueError:
            # Validated when the blueprint dispatched it; a record written
            # by something else is read leniently rather than stranded.
            found = cls(max_cost=task.max_cost if has_cost else None)
        return found if found != cls() else None


def eligible(requirements: Requirements | None, worker: WorkerProfile, skill: str) -> bool:
    """Whether ``worker`` may be given a task of ``skill`` with ``requirements``."""
    if worker.max_concurrent and worker.active >= worker.max_concurrent:
        return False
    if requirements is None:
        return True
    r = requirements
    if r.max_cost is not None and worker.cost(skill) > r.max_cost:
        return False
    if r.gpu_model and r.gpu_model not in worker.gpu_model.lower():
        return False
    if worker.vram_gb < r.min_vram_gb:
        return False
    if r.models:
        names = worker.model_names()
        for name, version in r.models:
            if (name, version) not in worker.models if version else name not in names:
                return False
    return all(worker.labels.get(key) == value for key, value in r.extra)


def _model(item: Any) -> tuple[str, str]:
    if isinstance(item, str) and item:
        return (item, "")
    if isinstance(item, Mapping) and isinstance(item.get("name"), str) and item["name"]:
        version = item.get("version") or ""
        return (item["name"], str(version))
    raise ValueError(
        'resource_requirements: installed_models items are names or {"name": ..., "version": ...}'
    )


def _label(value: Any) -> str:
    # Labels are strings (REST workers' "extra" capabilities become labels the
    # same way): a requirement written as true or 2 matches "true" or "2".
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
