"""The engine's book of what each worker did recently, and the profiles built
from it.

A profile joins what the worker declared (its registration in the
:class:`~avtomatika.engine.registry.WorkerRegistry`) with what the orchestrator saw:
the skills and models of its latest leases (warmth), when it was last served
(round robin), how many tasks it holds, and its reputation.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from avtomatika.dispatch.eligibility import Requirements
from avtomatika.dispatch.profile import WorkerProfile
from avtomatika.dispatch.reputation import Reputation
from avtomatika.engine.registry import WorkerRegistry
from avtomatika.v1 import task_pb2
from avtomatika.v1.task_pb2 import Task, TaskResult
from avtomatika.v1.worker_pb2 import WorkerInfo, WorkerRegistration

__all__ = ["Roster"]

# How many of a worker's latest leases make a skill or a model "hot".
_RECENT = 8


@dataclass(slots=True)
class _Seen:
    skills: deque[str]
    models: deque[str]
    last_served: int = 0


class Roster:
    """Recent activity per worker; builds :class:`WorkerProfile` snapshots."""

    def __init__(self, workers: WorkerRegistry, reputation: Reputation | None = None) -> None:
        self._workers = workers
        self.reputation = reputation if reputation is not None else Reputation()
        self._seen: dict[str, _Seen] = {}
        self._serial = itertools.count(1)
        # worker id -> (the registration it was built from, declared fields);
        # rebuilt when the worker registers again.
        self._declared: dict[str, tuple[WorkerRegistration, dict[str, Any]]] = {}

    def profile(self, worker_id: str, skills: Sequence[str]) -> WorkerProfile:
        """A snapshot of the worker as it claims a task of ``skills``."""
        info = self._workers.info(worker_id)
        declared = self._declare(worker_id, info) if info is not None else {}
        seen = self._seen.get(worker_id)
        return WorkerProfile(
            worker_id=worker_id,
            skills=tuple(skills),
            active=len(info.active_task_ids) if info is not None else 0,
            hot_skills=frozenset(seen.skills) if seen else frozenset(),
            hot_models=frozenset(seen.models) if seen else frozenset(),
            reputation=self.reputation.of(worker_id),
            last_served=seen.last_served if seen else 0,
            **declared,
        )

    def leased(self, worker_id: str, task: Task) -> None:
        """Note that ``task`` was leased to the worker."""
        seen = self._seen.get(worker_id)
        if seen is None:
            seen = self._seen[worker_id] = _Seen(deque(maxlen=_RECENT), deque(maxlen=_RECENT))
        seen.skills.append(task.type)
        seen.last_served = next(self._serial)
        requirements = Requirements.of(task)
        if requirements is not None:
            seen.models.extend(name for name, _ in requirements.models)

    def finished(self, result: TaskResult) -> None:
        """Count an accepted result towards its worker's reputation."""
        if result.status == task_pb2.TASK_RESULT_STATUS_CANCELLED:
            return
        failed = result.status == task_pb2.TASK_RESULT_STATUS_FAILURE
        self.reputation.record(result.worker_id, not failed)

    def timed_out(self, worker_id: str) -> None:
        """Count a task the worker held past its result deadline as a failure."""
        if worker_id:
            self.reputation.record(worker_id, False)

    def _declare(self, worker_id: str, info: WorkerInfo) -> dict[str, Any]:
        registration = info.registration
        cached = self._declared.get(worker_id)
        if cached is not None and cached[0] is registration:
            return cached[1]
        resources = registration.resources
        declared: dict[str, Any] = {
            "gpu_model": resources.gpu_info.model,
            "vram_gb": resources.gpu_info.vram_gb,
            "models": frozenset((m.name, m.version) for m in resources.installed_models),
            "labels": dict(registration.labels),
            "cost_per_skill": dict(registration.cost_per_skill),
            "max_concurrent": resources.max_concurrent_tasks,
        }
        self._declared[worker_id] = (registration, declared)
        return declared
