"""The records this instance just wrote or leased, for the result that
follows them here.

A job's path on one instance: a commit here writes the job and leases its
new task to a worker connected here (the hand-off), or a claim here leases
it; then that worker's result, arriving here, reads the task and the job
(``get_task_and_job``) only to commit on them. Both are what this instance
last wrote, unless something changed them since, so the read is served from
here, and the commit that follows is guarded so that it fails if anything
did: the job at the version read (as any commit), no progress recorded on
it since (SET_PROGRESS keeps the version but marks the job), and the task
still leased under the very claim served (a lease taken anew has another
nonce). A commit that fails so is a conflict like any other: the engine
reads again, from Redis this time (a record is served once), and decides
on what it finds.

Bounded: the oldest records go first; a record never asked for costs only
its place here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple, TypeVar

from avtomatika.status import TERMINAL
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task

__all__ = ["Recent", "Served"]

_V = TypeVar("_V")

# Records kept of each kind: well above the tasks in flight on one instance.
_KEPT = 4096


class Served(NamedTuple):
    """A job and task read from here: what the commit on them must check."""

    version: int
    """The job's version served."""
    task_id: str
    nonce: str
    """The claim nonce the task was leased under."""


class Recent:
    """Job records committed here and tasks leased here, latest first out."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._tasks: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._served: OrderedDict[str, Served] = OrderedDict()

    def job_written(self, job_id: str, version: int, record: bytes) -> None:
        """A commit here wrote ``record`` as the job's ``version``."""
        _keep(self._jobs, job_id, (version, record))

    def task_leased(self, task: Task, nonce: str) -> None:
        """A script here leased ``task`` (as it replied) under ``nonce``."""
        _keep(self._tasks, task.task_id, (task.SerializeToString(), nonce))

    def forget_job(self, job_id: str) -> None:
        """The job changed here other than by a commit (progress)."""
        self._jobs.pop(job_id, None)

    def forget_task(self, task_id: str) -> None:
        """The lease made here was undone (the only change to a lease that
        is not a commit, and always made where the lease was)."""
        self._tasks.pop(task_id, None)

    def take(self, task_id: str, job_id: str, worker_id: str) -> tuple[Task, Job] | None:
        """The task and its job as this instance last wrote them, if it has
        both, once (a second read goes to Redis), and only if they say the
        result of ``worker_id`` is awaited: the caller then commits on them,
        and the commit's guards tell whether they still stand. Records that
        would have the result refused may be stale: Redis's say."""
        job = self._jobs.pop(job_id, None)
        task = self._tasks.pop(task_id, None)
        if job is None or task is None:
            return None
        version, record = job
        data, nonce = task
        found, read = Task.FromString(data), Job.FromString(record)
        if (
            found.job_id != job_id
            or found.worker_id != worker_id
            or read.status in TERMINAL
            or task_id not in read.active_task_ids
        ):
            return None
        _keep(self._served, job_id, Served(version, task_id, nonce))
        return found, read

    def served(self, job_id: str, version: int) -> Served | None:
        """What a commit of ``job_id`` at ``version`` must check, if it
        builds on records served from here; asked once per commit."""
        served = self._served.pop(job_id, None)
        return served if served is not None and served.version == version else None

    def clear(self) -> None:
        """Forget everything (the store was flushed)."""
        self._jobs.clear()
        self._tasks.clear()
        self._served.clear()


def _keep(records: OrderedDict[str, _V], key: str, value: _V) -> None:
    """Keep ``value`` as the newest record, dropping the oldest past the bound."""
    records[key] = value
    records.move_to_end(key)
    if len(records) > _KEPT:
        records.popitem(last=False)
