"""What a claiming worker offers, as the dispatcher sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["WorkerProfile"]


# Not frozen: a frozen dataclass pays a setattr per field in __init__, and a
# profile is built on every claim. Treat it as immutable all the same.
@dataclass(slots=True)
class WorkerProfile:
    """A snapshot of a worker taken when it claims a task.

    Everything here is either declared by the worker at registration (skills,
    hardware, models, prices, labels) or observed by the orchestrator
    (``active``, ``hot_skills``, ``hot_models``, ``reputation``,
    ``last_served``); a worker cannot declare its own reputation.
    """

    worker_id: str
    skills: tuple[str, ...]
    gpu_model: str = ""
    vram_gb: float = 0.0
    models: frozenset[tuple[str, str]] = frozenset()
    """Installed models as (name, version) pairs."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Operator labels (and, for REST workers, their ``extra`` capabilities)."""
    cost_per_skill: Mapping[str, float] = field(default_factory=dict)
    max_concurrent: int = 0
    """Declared concurrency; 0 leaves capacity to the transport's flow control."""
    active: int = 0
    """Tasks it holds right now."""
    hot_skills: frozenset[str] = frozenset()
    """Skills it ran recently."""
    hot_models: frozenset[str] = frozenset()
    """Models that tasks it ran recently required."""
    reputation: float = 1.0
    """Recent success ratio in [0, 1] (see :mod:`.reputation`)."""
    last_served: int = 0
    """Sequence number of its latest lease (0: never); round robin serves the
    lowest first."""

    def cost(self, skill: str) -> float:
        """Its price for a task of ``skill``; a skill it prices at nothing is free."""
        return self.cost_per_skill.get(skill, 0.0)

    def model_names(self) -> frozenset[str]:
        """Names of its installed models."""
        return frozenset(name for name, _ in self.models)
