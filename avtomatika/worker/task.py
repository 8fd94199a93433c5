"""What a skill handler sees and returns: its task's context, its outcome."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from avtomatika.worker.errors import TaskFailure

__all__ = ["HandlerResult", "ProgressReporter", "SkillHandler", "TaskContext", "TaskOutcome"]

#: Reports ``(progress, message)`` for one task.
ProgressReporter: TypeAlias = Callable[[float, str], None]


def _ignore_progress(progress: float, message: str) -> None:
    """The reporter of a context built by hand (in a handler's unit test, say)."""


@dataclass(frozen=True, kw_only=True)
class TaskContext:
    """One task attempt, as its handler sees it.

    The SDK builds it; build one yourself to unit-test a handler without a
    server (progress then goes nowhere).
    """

    task_id: str
    """Unique to this attempt; a retry gets a new id."""
    job_id: str
    """The job the task belongs to."""
    task_type: str
    """The skill being run."""
    attempt: int = 1
    """Attempt number, from 1."""
    worker_id: str = ""
    """The worker running it."""
    deadline_ms: int | None = None
    """When the orchestrator stops waiting for the result (epoch ms), if ever."""
    tracing_context: Mapping[str, str] = field(default_factory=dict)
    """W3C trace context propagated from the job."""
    progress_reporter: ProgressReporter = field(default=_ignore_progress, repr=False, compare=False)

    async def report_progress(self, progress: float, message: str = "") -> None:
        """Tell the orchestrator how far the task is (``0.0`` to ``1.0``).

        Never waits for the network: progress is best effort, and an update
        made while the worker is reconnecting is dropped.
        """
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be between 0.0 and 1.0, not {progress!r}")
        self.progress_reporter(progress, message)

    def seconds_left(self) -> float | None:
        """Seconds until the result is due (negative when late), or None."""
        if self.deadline_ms is None:
            return None
        return self.deadline_ms / 1000 - time.time()


@dataclass(frozen=True)
class TaskOutcome:
    """An explicit result: a status other than success, or a failure with data.

    ``status`` is ``"success"``, ``"failure"`` (give ``error``) or a status of
    your blueprint, e.g. ``"needs_review"``, which picks the transition of
    that name. ``data`` is merged into the job's state history.
    """

    status: str = "success"
    data: Mapping[str, Any] | None = None
    error: TaskFailure | None = None

    def __post_init__(self) -> None:
        if not self.status:
            raise ValueError("a TaskOutcome needs a status")
        if self.status == "cancelled":
            raise ValueError("a handler cannot report 'cancelled'; the SDK does when it is")
        if self.error is not None and self.status != "failure":
            raise ValueError("only a 'failure' outcome carries an error")


#: What a skill handler may return: a JSON object, an explicit outcome, or None.
HandlerResult: TypeAlias = Mapping[str, Any] | TaskOutcome | None


class SkillHandler(Protocol):
    """A skill: ``async def handler(params, task) -> dict | TaskOutcome | None``.

    ``params`` is the task's JSON object. Returning a dict (or None) succeeds
    with that data; raising :class:`TaskFailure` fails with its code; any
    other exception fails with ``TRANSIENT_ERROR``. When the task is
    cancelled the handler sees :class:`asyncio.CancelledError`.
    """

    def __call__(
        self, params: dict[str, Any], task: TaskContext, /
    ) -> Awaitable[HandlerResult]: ...
