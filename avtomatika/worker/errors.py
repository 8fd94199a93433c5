"""Errors of the worker SDK.

::

    Exception
    ├── TaskFailure          a skill handler gives up on its task (a FAILURE result)
    └── WorkerError          the worker itself cannot go on
        └── WorkerRejected   the server refused the worker (bad token, bad registration)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["TaskFailure", "WorkerError", "WorkerRejected"]


class TaskFailure(Exception):
    """Raise from a skill handler to fail the task with an error code.

    The code decides what the orchestrator does when the blueprint has no
    ``failure`` transition: ``TRANSIENT_ERROR`` retries with backoff,
    ``PERMANENT_ERROR`` quarantines the job, ``INVALID_INPUT_ERROR`` fails it.
    Other codes are passed through and handled like transient errors.

    ``details`` is any JSON value, stored with the error.
    """

    TRANSIENT: ClassVar[str] = "TRANSIENT_ERROR"
    PERMANENT: ClassVar[str] = "PERMANENT_ERROR"
    INVALID_INPUT: ClassVar[str] = "INVALID_INPUT_ERROR"

    def __init__(self, code: str, message: str = "", *, details: Any = None) -> None:
        if not code:
            raise ValueError("a TaskFailure needs an error code, e.g. 'TRANSIENT_ERROR'")
        super().__init__(message or code)
        self.code = code
        self.message = message
        self.details = details

    @classmethod
    def transient(cls, message: str, *, details: Any = None) -> TaskFailure:
        """A failure worth retrying (a timeout, a busy dependency)."""
        return cls(cls.TRANSIENT, message, details=details)

    @classmethod
    def permanent(cls, message: str, *, details: Any = None) -> TaskFailure:
        """A failure that retrying will not fix."""
        return cls(cls.PERMANENT, message, details=details)

    @classmethod
    def invalid_input(cls, message: str, *, details: Any = None) -> TaskFailure:
        """The task's parameters are wrong; the job fails."""
        return cls(cls.INVALID_INPUT, message, details=details)

    def __repr__(self) -> str:
        return f"TaskFailure({self.code!r}, {self.message!r})"


class WorkerError(Exception):
    """Base class of errors that stop a worker."""


class WorkerRejected(WorkerError):
    """The server refused the worker; retrying would not help.

    Raised by :meth:`Worker.run` when the server answers with
    UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT or UNIMPLEMENTED.
    """

    def __init__(self, address: str, code: str, details: str) -> None:
        super().__init__(f"{address} rejected the worker: {code}: {details}")
        self.address = address
        self.code = code
        self.details = details
