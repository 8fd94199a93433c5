"""Which of several waiting, eligible workers a newly queued task goes to.

Workers pull: a worker that claims takes the best task it is eligible for
(highest priority, then oldest). A strategy matters when a task is queued and
more than one eligible worker is already waiting for it; it picks one of them.
Ties go to the worker that has waited longest.

- ``default``: a warm worker first (it ran this skill recently, or holds a
  model the task requires hot), then the cheapest.
- ``round_robin``: the worker served longest ago.
- ``least_connections``: the worker holding the fewest tasks.
- ``cheapest``: the lowest price for the skill.
- ``best_value``: the lowest price per unit of reputation (a worker's recent
  success ratio, computed from its results).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from avtomatika.dispatch.eligibility import Requirements
from avtomatika.dispatch.profile import WorkerProfile

__all__ = ["DEFAULT", "STRATEGIES", "choose"]

DEFAULT = "default"

# A reputation floor, so a worker that failed everything recently still has a
# finite (very poor) value rather than a division by zero.
_MIN_REPUTATION = 0.01

_Key = Callable[[WorkerProfile, str, Requirements | None], tuple[float, ...]]


def _warm(worker: WorkerProfile, skill: str, requirements: Requirements | None) -> bool:
    if skill in worker.hot_skills:
        return True
    return requirements is not None and any(
        name in worker.hot_models for name, _ in requirements.models
    )


def _default(w: WorkerProfile, skill: str, r: Requirements | None) -> tuple[float, ...]:
    return (0.0 if _warm(w, skill, r) else 1.0, w.cost(skill))


def _round_robin(w: WorkerProfile, skill: str, r: Requirements | None) -> tuple[float, ...]:
    return (float(w.last_served),)


def _least_connections(w: WorkerProfile, skill: str, r: Requirements | None) -> tuple[float, ...]:
    return (float(w.active),)


def _cheapest(w: WorkerProfile, skill: str, r: Requirements | None) -> tuple[float, ...]:
    return (w.cost(skill),)


def _best_value(w: WorkerProfile, skill: str, r: Requirements | None) -> tuple[float, ...]:
    reputation = max(w.reputation, _MIN_REPUTATION)
    # Between equally priced (e.g. free) workers, the more reliable one.
    return (w.cost(skill) / reputation, -reputation)


_KEYS: dict[str, _Key] = {
    DEFAULT: _default,
    "round_robin": _round_robin,
    "least_connections": _least_connections,
    "cheapest": _cheapest,
    "best_value": _best_value,
}

STRATEGIES = frozenset(_KEYS)
"""The strategy names a blueprint may give ``dispatch_task``."""


def choose(
    strategy: str,
    skill: str,
    requirements: Requirements | None,
    candidates: Sequence[WorkerProfile],
) -> int:
    """The index in ``candidates`` (eligible workers, longest waiting first)
    of the worker a task of ``skill`` goes to. An unknown strategy is the
    default one."""
    if len(candidates) == 1:
        return 0
    key = _KEYS.get(strategy) or _default
    return min(range(len(candidates)), key=lambda i: (*key(candidates[i], skill, requirements), i))
