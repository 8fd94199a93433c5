"""The storage contract: a small set of atomic operations, not a key-value bag.

Every state change goes through :meth:`Storage.commit`, which is guarded by the
job's ``version`` and, for worker results, by the task's lease. A late result,
a timeout and a cancel racing each other therefore cannot overwrite one
another: whichever commits first wins and the others see ``CONFLICT`` or
``LEASE_LOST``, re-read, and decide again.

Records are protobuf messages; backends persist them as bytes so that what is
read back is always a fresh copy (no aliasing between callers).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from avtomatika.dispatch import WorkerProfile
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task

__all__ = [
    "APPROVAL_EXPIRY",
    "BoundReached",
    "ClientBounds",
    "ClientUsage",
    "CommitOutcome",
    "Expiry",
    "JobCursor",
    "Lease",
    "Storage",
    "queued_at",
]

APPROVAL_EXPIRY = "approval"
"""The :attr:`Expiry.kind` of a wait for a human decision that timed out."""

JobCursor = tuple[int, str]
"""A place in a client's jobs, newest first: (``created_at_ms``, job id)."""


class CommitOutcome(enum.Enum):
    """What became of a commit."""

    OK = "ok"
    CONFLICT = "conflict"
    """The job changed since it was read (its version moved on)."""
    LEASE_LOST = "lease_lost"
    """The guarding task is no longer leased to that worker."""
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class Lease:
    """A guard on a commit: ``task_id`` must be leased to ``worker_id``."""

    task_id: str
    worker_id: str


@dataclass(frozen=True, slots=True)
class Expiry:
    """A deadline that passed: ``kind`` is ``"dispatch"`` (no worker took
    the task in time), ``"result"`` (no result in time), or
    :data:`APPROVAL_EXPIRY` (a job's wait for a human decision timed out;
    ``task_id`` is then the job's id)."""

    task_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class ClientUsage:
    """What a client holds: its jobs not yet ended, and the bytes of its
    stored job records (initial data, state history, result), ended jobs
    included until they are forgotten."""

    jobs_in_flight: int
    stored_bytes: int


@dataclass(frozen=True, slots=True)
class ClientBounds:
    """What a client may hold (0: no bound): ``CLIENT_MAX_JOBS_IN_FLIGHT``
    and ``CLIENT_MAX_STORED_BYTES``, or its own in ``clients.toml``."""

    max_jobs_in_flight: int
    max_stored_bytes: int


@dataclass(frozen=True, slots=True)
class BoundReached:
    """Why :meth:`Storage.reserve` refused: the bound (``jobs`` in flight
    or stored ``bytes``) and what the client holds of it, reservations
    included."""

    bound: str
    held: int


def queued_at(task: Task) -> int:
    """When ``task`` entered its queue (epoch ms): a retry after its
    backoff, any other when it was created."""
    return task.not_before_ms or task.created_at_ms


class Storage(Protocol):
    """Where jobs, tasks and queues live. Implementations: memory, redis."""

    async def open(self) -> None:
        """Connect; raises :class:`~avtomatika.errors.ConfigError` when the
        backend cannot be reached. Idempotent."""

    async def create_job(self, job: Job) -> None:
        """Store a new job at version 1 and queue it for the executor."""

    async def get_job(self, job_id: str) -> Job | None:
        """A fresh copy of the job, or None."""

    async def get_task(self, task_id: str) -> Task | None:
        """A fresh copy of the task, or None."""

    async def get_tasks(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Fresh copies of the tasks, in the order asked (None for an
        unknown id); one round trip to a shared store."""

    async def get_task_and_job(
        self, task_id: str, job_id: str, worker_id: str = ""
    ) -> tuple[Task | None, Job | None]:
        """:meth:`get_task` and :meth:`get_job` at once (one round trip to a
        shared store), for a report that names both. ``worker_id``: the
        worker the report comes from, if the caller will commit on them only
        while the task is leased to it (a store may then answer from what it
        wrote itself, guarding the commit that follows)."""

    async def commit(
        self,
        job: Job,
        *,
        expected_version: int,
        tasks: Sequence[Task] = (),
        withdraw: Sequence[str] = (),
        new_jobs: Sequence[Job] = (),
        lease: Lease | None = None,
        ready: bool = False,
        ready_at_ms: int = 0,
    ) -> CommitOutcome:
        """Atomically write ``job`` (at ``expected_version + 1``), ``tasks``
        and ``new_jobs``.

        Nothing is written unless the stored job is at ``expected_version``
        and, when ``lease`` is given, that task is leased to that worker.
        ``expected_version`` 0 creates the job (a job whose first step ran
        before it was stored): CONFLICT if it exists.

        - Tasks written QUEUED enter their skill's queue; SCHEDULED ones enter
          it at ``not_before_ms``; any other state takes a task out of it.
          Live tasks' deadlines (``dispatch_deadline_ms`` while queued,
          ``result_deadline_ms`` until done) are reported by
          :meth:`next_expiry` when they pass.
        - A job written waiting for a human with an ``approval_deadline_ms``
          has that deadline reported by :meth:`next_expiry` (kind
          :data:`APPROVAL_EXPIRY`) unless a later commit moves it on first.
        - Tasks named in ``withdraw`` that are still live become CANCELLED in
          place (keeping the worker that held them, so it can be told).
        - ``new_jobs`` (child jobs) are created at version 1, ready to run.
        - ``ready`` queues ``job`` for the executor, at ``ready_at_ms`` if
          that is in the future (a retry's backoff).
        """

    async def next_ready_job(self) -> str:
        """Wait for and take the id of a job whose handler must run."""

    async def step_done(self, job_id: str, *, completed: bool = True) -> None:
        """The step of ``job_id`` taken from :meth:`next_ready_job` is over.
        ``completed=False``: it failed half-way (the store was unreachable);
        a shared store runs it again once this instance's claim on it lapses."""

    async def leased_to(self, worker_id: str) -> list[str]:
        """Ids of the tasks leased to ``worker_id`` right now."""

    async def next_expiry(self) -> Expiry:
        """Wait for the next task deadline to pass (while waiting, also move
        due SCHEDULED tasks into their queues and due jobs into the ready
        queue)."""

    async def claim_tasks(
        self, worker: WorkerProfile, timeout: float | None, limit: int = 1
    ) -> list[Task]:
        """Wait up to ``timeout`` seconds (None: forever) for queued tasks
        that ``worker`` may take and lease up to ``limit`` of them to it;
        empty if none came (or ``limit`` is below 1).

        The worker may take a task of one of its ``skills`` whose
        requirements it meets (:func:`avtomatika.dispatch.eligible`). Of
        those already queued it gets the best, as many as there are up to
        ``limit`` (a worker stream with several free slots drains a backlog
        in one call): highest priority first, first queued first within a
        priority. Otherwise it waits, and gets the one task that comes; a
        task queued while several eligible workers wait goes to the one its
        ``dispatch_strategy`` picks (:func:`avtomatika.dispatch.choose`), so
        no task waits in its queue while a worker it suits waits too. A
        caller cancelled while waiting loses no task.
        """

    async def set_progress(self, job_id: str, task_id: str, progress: float, message: str) -> bool:
        """Record progress of a live task of a job without bumping its
        version; False if the task is not live on that job."""

    async def client_jobs(
        self, client_id: str, before: JobCursor | None, since_ms: int, limit: int
    ) -> tuple[list[Job], JobCursor | None]:
        """Up to ``limit`` of the client's jobs, newest first (by creation
        time, then id), created at or after ``since_ms`` and strictly after
        ``before`` in that order; and where the next read starts (None when
        nothing older is left). Jobs forgotten meanwhile are left out, so a
        read may return fewer than ``limit`` with more to come: listing
        filters and pages on top (see ``ClientApi.list_jobs``)."""

    async def count_jobs(self) -> dict[int, int]:
        """Number of jobs per status value."""

    async def count_client_jobs(self, client_id: str) -> dict[int, int]:
        """Number of the client's jobs per status value (kept as jobs
        change, so counting reads no job)."""

    async def client_usage(self, client_id: str) -> ClientUsage:
        """The client's jobs in flight and stored bytes (kept as jobs
        change, so reading them reads no job)."""

    async def reserve(
        self, client_id: str, job_id: str, size: int, bounds: ClientBounds
    ) -> BoundReached | None:
        """Reserve room for job ``job_id`` (``size`` bytes) that the client
        is creating, atomically against ``bounds``: None when reserved; else
        the bound that refused it. Storing the job
        takes its reservation back in the same step, so N creations at once
        against a bound of N jobs in flight can never all succeed beyond it
        nor refuse one under it."""

    async def unreserve(self, client_id: str, job_id: str) -> None:
        """Give back a reservation whose job was not created."""

    async def oldest_queued(self) -> dict[str, int]:
        """Per skill with queued tasks, when its longest-waiting task was
        queued (epoch ms)."""

    async def queue_depths(self) -> dict[str, int]:
        """Number of queued tasks per skill."""

    async def waiting_workers(self) -> dict[str, int]:
        """Number of workers waiting in :meth:`claim_tasks` for a task to
        come, per skill."""

    async def ping(self) -> None:
        """Return once the store answers; :class:`~avtomatika.errors.Unavailable`
        when it cannot be reached (readiness probes ask this)."""

    async def flush(self) -> None:
        """Erase everything (development only)."""

    async def close(self) -> None:
        """Release connections."""
