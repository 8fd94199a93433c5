"""Reputation: a worker's recent success ratio, computed from its results.

Workers never declare their reputation. Each accepted result counts as a
success or a failure (a cancelled task counts as neither), and so does a task
a worker held past its result deadline (a failure); the ratio is taken
over the worker's last ``window`` outcomes with Laplace smoothing,
``(successes + 1) / (outcomes + 2)``, so a newcomer starts at 0.5 and one bad
result does not sink a worker with a long clean record.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Reputation"]

DEFAULT_WINDOW = 20


class Reputation:
    """Sliding-window success ratios per worker."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self._window = window
        self._outcomes: dict[str, deque[bool]] = {}

    def record(self, worker_id: str, success: bool) -> None:
        """Count one outcome of ``worker_id``."""
        outcomes = self._outcomes.get(worker_id)
        if outcomes is None:
            outcomes = self._outcomes[worker_id] = deque(maxlen=self._window)
        outcomes.append(success)

    def of(self, worker_id: str) -> float:
        """The worker's reputation in (0, 1)."""
        outcomes = self._outcomes.get(worker_id)
        if not outcomes:
            return 0.5
        return (sum(outcomes) + 1) / (len(outcomes) + 2)
