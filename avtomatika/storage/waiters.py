"""Workers waiting for a task, and which of them a new task goes to.

Both stores keep the claims that found nothing queued for their worker, per
skill, in the order they came, so that a task queued later can go straight
to one of them: among the waiting workers it suits, the task's dispatch
strategy picks, and on a tie the one waiting longest wins.

What a store does with the pick is its own: the embedded store leases the
task there and then (one synchronous section); the Redis store leases it in
a script, which may find the task gone, and then the worker looks again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from avtomatika.dispatch import Requirements, WorkerProfile, choose, eligible
from avtomatika.v1.task_pb2 import Task

__all__ = ["Waiter", "Waiters", "pick"]


class Waiter(Protocol):
    """A claim waiting for a task of one of its worker's skills."""

    @property
    def worker(self) -> WorkerProfile:
        """The worker that claims."""
        ...

    @property
    def parked(self) -> bool:
        """Waiting with nothing in flight for it: a new task may go to it."""
        ...


W = TypeVar("W", bound=Waiter)


class Waiters(Generic[W]):
    """Waiting claims per skill, in arrival order (a claim of a worker with
    several skills waits under each)."""

    def __init__(self) -> None:
        # Dicts keep insertion order: the first waiter is the longest waiting.
        self._by_skill: dict[str, dict[W, None]] = {}

    def add(self, waiter: W) -> None:
        """``waiter`` waits for a task of any of its worker's skills."""
        for skill in waiter.worker.skills:
            self._by_skill.setdefault(skill, {})[waiter] = None

    def remove(self, waiter: W) -> None:
        """``waiter`` waits no more (idempotent)."""
        for skill in waiter.worker.skills:
            waiters = self._by_skill.get(skill)
            if waiters is not None:
                waiters.pop(waiter, None)
                if not waiters:
                    del self._by_skill[skill]

    def of(self, skill: str) -> Iterator[W]:
        """Every waiter for ``skill``, longest waiting first."""
        return iter(self._by_skill.get(skill, ()))

    def parked(self, skill: str) -> list[W]:
        """The waiters for ``skill`` a new task may go to, longest waiting first."""
        return [waiter for waiter in self.of(skill) if waiter.parked]

    def skills(self) -> list[str]:
        """The skills someone waits for."""
        return list(self._by_skill)

    def counts(self) -> dict[str, int]:
        """Parked waiters per skill (skills with none left out)."""
        counts = {skill: self.count(skill) for skill in self._by_skill}
        return {skill: n for skill, n in counts.items() if n}

    def count(self, skill: str) -> int:
        """How many waiters for ``skill`` are parked."""
        return sum(waiter.parked for waiter in self.of(skill))


def pick(
    task: Task, skill: str, requirements: Requirements | None, waiters: Iterable[W]
) -> W | None:
    """The waiter (of ``waiters``, longest waiting first) that ``task`` of
    ``skill`` goes to: among those whose worker may take it, the task's
    dispatch strategy picks. None if it suits none of them."""
    fit = [waiter for waiter in waiters if eligible(requirements, waiter.worker, skill)]
    if not fit:
        return None
    profiles = [waiter.worker for waiter in fit]
    return fit[choose(task.dispatch_strategy, skill, requirements, profiles)]
