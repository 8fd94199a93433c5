"""Which worker gets which task: eligibility, strategies, reputation.

Pure, transport-free logic that a storage backend's claim path calls:

- :mod:`.profile`: what a claiming worker offers (:class:`WorkerProfile`);
- :mod:`.eligibility`: a task's :class:`Requirements` and whether a worker
  meets them;
- :mod:`.strategies`: which of several waiting eligible workers a task goes to;
- :mod:`.reputation`: success ratios computed from workers' results.

The engine's book of recent activity per worker, from which profiles are
built, is :mod:`avtomatika.engine.roster`: it reads the engine's registry of
connected workers, and this package stays below storage.
"""

from avtomatika.dispatch.eligibility import Requirements, eligible
from avtomatika.dispatch.profile import WorkerProfile
from avtomatika.dispatch.reputation import Reputation
from avtomatika.dispatch.strategies import STRATEGIES, choose

__all__ = [
    "STRATEGIES",
    "Reputation",
    "Requirements",
    "WorkerProfile",
    "choose",
    "eligible",
]
