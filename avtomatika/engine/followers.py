"""Following a job without polling: per-job watchers fed by the event bus.

``GET /api/v1/jobs/{id}?wait=`` and the Server-Sent Events stream register a
:class:`Follower` for one job and sleep until an event about that job
arrives. The bus listener finds a job's followers in a dict, so an event
costs O(followers of that job), never a scan of every open request.

A follower is woken, not fed: it keeps the job records the events carried
(bounded: when a reader falls behind, the oldest are dropped and only the
newest matter) and a flag for events that carry no record (progress), after
which the reader re-reads the job. Register before the first read, and no
change can slip between the read and the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator

from avtomatika.engine.events import EventBus, JobEvent
from avtomatika.v1.job_pb2 import Job

__all__ = ["Follower", "JobFollowers"]

# Records kept per follower between two reads; only a reader that falls this
# far behind misses intermediate states (it still sees the latest).
_MAX_PENDING = 64


class Follower:
    """One reader's view of a job's changes."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.closed = False
        """The server is shutting down: stop following."""
        self._records: deque[Job] = deque(maxlen=_MAX_PENDING)
        self._stale = False
        self._wake = asyncio.Event()

    def notify(self, job: Job | None) -> None:
        """An event about the job (``job`` is its record after, if carried)."""
        if job is None:
            self._stale = True
        else:
            self._records.append(job)
        self._wake.set()

    def close(self) -> None:
        """Wake the reader for good."""
        self.closed = True
        self._wake.set()

    def refresh(self) -> None:
        """Make the reader re-read the job (something changed it without an
        event, e.g. a flush)."""
        self.notify(None)

    async def changed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a change; whether one came."""
        if not self._wake.is_set():
            # asyncio.timeout, not wait_for: on 3.11 wait_for runs the wait
            # in a task of its own, and every follow waits here.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        return self._wake.is_set()

    def take(self) -> tuple[list[Job], bool]:
        """The records received since the last call, oldest first, and
        whether the job must be re-read for changes they do not show."""
        records = list(self._records)
        stale = self._stale
        self._records.clear()
        self._stale = False
        if not self.closed:
            self._wake.clear()
        return records, stale


class JobFollowers:
    """The registry of followers, subscribed to the engine's events. A
    :class:`~avtomatika.server.Service`: start subscribes, stop closes every
    follower and unsubscribes."""

    def __init__(self, events: EventBus) -> None:
        self._events = events
        self._by_job: dict[str, set[Follower]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._closed = False
        if self._unsubscribe is None:
            self._unsubscribe = self._events.subscribe(self._on_event)

    async def stop(self) -> None:
        self.close()
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def close(self) -> None:
        """End every follow now and refuse new ones (shutdown)."""
        self._closed = True
        for followers in self._by_job.values():
            for follower in followers:
                follower.close()

    def refresh_all(self) -> None:
        """Make every follower re-read its job (after the store was flushed)."""
        for followers in self._by_job.values():
            for follower in followers:
                follower.refresh()

    def __len__(self) -> int:
        return sum(len(followers) for followers in self._by_job.values())

    @contextlib.contextmanager
    def follow(self, job_id: str) -> Iterator[Follower]:
        """A follower of ``job_id`` for the ``with`` block."""
        follower = Follower(job_id)
        if self._closed:
            follower.close()
        followers = self._by_job.setdefault(job_id, set())
        followers.add(follower)
        try:
            yield follower
        finally:
            followers.discard(follower)
            if not followers and self._by_job.get(job_id) is followers:
                del self._by_job[job_id]

    def follows(self, job_id: str) -> bool:
        """Whether anyone here follows ``job_id``."""
        return job_id in self._by_job

    def following(self) -> bool:
        """Whether anyone here follows any job."""
        return bool(self._by_job)

    def notify(self, job_id: str, job: Job | None) -> None:
        """Wake the followers of ``job_id``: an event about it happened here
        or, relayed, on another instance (``job`` is its record after)."""
        for follower in self._by_job.get(job_id, ()):
            follower.notify(job)

    def _on_event(self, item: JobEvent) -> None:
        if item.record_unchanged:
            return  # a worker took a task: nothing to re-read for
        self.notify(item.event.job_id, item.job)
