"""History kept in process memory, bounded so it never grows without limit.

The retention rule:

- each job keeps its last ``HISTORY_MEMORY_EVENTS_PER_JOB`` events (older ones
  fall out, oldest first);
- all jobs together keep at most ``HISTORY_MEMORY_MAX_EVENTS`` events: past
  that, whole histories are forgotten, starting with the job written to least
  recently. A running job is written to whenever it moves, so the histories
  forgotten first are those of the jobs that ended longest ago. The job being
  written to is never the one forgotten, so the total stays within
  ``max(HISTORY_MEMORY_MAX_EVENTS, HISTORY_MEMORY_EVENTS_PER_JOB)``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

from avtomatika.v1.history_pb2 import HistoryEvent

__all__ = ["MemoryHistory"]


class MemoryHistory:
    """The default :class:`~avtomatika.history.HistorySink`."""

    def __init__(self, events_per_job: int, max_events: int) -> None:
        self._per_job = events_per_job
        self._max_events = max_events
        # Least recently written first.
        self._jobs: OrderedDict[str, deque[HistoryEvent]] = OrderedDict()
        self._total = 0

    @property
    def total(self) -> int:
        """Events kept, all jobs together."""
        return self._total

    async def append(self, events: Sequence[HistoryEvent]) -> None:
        for item in events:
            kept = self._jobs.get(item.job_id)
            if kept is None:
                kept = self._jobs[item.job_id] = deque(maxlen=self._per_job)
            else:
                self._jobs.move_to_end(item.job_id)
            if len(kept) == self._per_job:
                self._total -= 1  # its oldest event falls out
            kept.append(item)
            self._total += 1
            while self._total > self._max_events and len(self._jobs) > 1:
                _, forgotten = self._jobs.popitem(last=False)
                self._total -= len(forgotten)

    async def list_for_job(self, job_id: str) -> list[HistoryEvent]:
        return list(self._jobs.get(job_id, ()))

    async def close(self) -> None:
        return None
