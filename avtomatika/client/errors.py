"""Errors of the Python client: one class per canonical code.

::

    ClientError                  any call that did not succeed
    ├── InvalidArgument          bad input: a malformed field, a bad decision
    ├── Unauthenticated          missing or wrong token
    ├── NotFound                 no such job, blueprint, file or route (or not yours)
    ├── Conflict                 not possible now (cancel a finished job, approve twice)
    ├── RateLimited              over the rate limit or the monthly quota; see retry_after
    ├── Unimplemented            the server does not serve it (files without S3)
    ├── Unavailable              the server or a backend cannot be reached; retry later
    ├── DeadlineExceeded         a call's deadline or a wait's timeout passed (a TimeoutError)
    └── ServerError              anything else: a bug on the server, an unknown status

The server puts the code itself in the trailing metadata
``avtomatika-error-code``; the client prefers it to the gRPC status, which a
proxy or the gRPC library can produce as well (an UNAVAILABLE of a refused
connection carries no code: :attr:`ClientError.code` is then None).
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

__all__ = [
    "ERROR_CODE_KEY",
    "RETRY_AFTER_KEY",
    "ClientError",
    "Conflict",
    "DeadlineExceeded",
    "InvalidArgument",
    "NotFound",
    "RateLimited",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]

ERROR_CODE_KEY = "avtomatika-error-code"
"""Trailing metadata key of a refused call: the server's canonical code."""

RETRY_AFTER_KEY = "retry-after"
"""Trailing metadata key of a rate-limited call: whole seconds to wait."""


class ClientError(Exception):
    """A call the server refused or that did not complete.

    ``message`` is the server's explanation (the gRPC details); ``code`` the
    server's canonical code (``"not_found"``, ...) or None when the status
    did not come from the orchestrator; ``status`` the gRPC status."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class InvalidArgument(ClientError):
    """The request is malformed; the message names the field."""


class Unauthenticated(ClientError):
    """The client token is missing or wrong."""


class NotFound(ClientError):
    """No such thing, or it belongs to another client."""


class Conflict(ClientError):
    """The request contradicts the job's current state."""


class RateLimited(ClientError):
    """Over the rate limit or the quota; ``retry_after`` is how many seconds
    to wait first, when the server said."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class Unimplemented(ClientError):
    """The server does not serve this (its feature is not configured)."""


class Unavailable(ClientError):
    """The server, or a backend behind it, cannot be reached now."""


class DeadlineExceeded(ClientError, TimeoutError):
    """A call took longer than its deadline, or a wait than its timeout."""


class ServerError(ClientError):
    """Any other status: an internal error, a status we do not know."""


# The canonical codes are gRPC's status names in lowercase, so one table
# serves the server's code and, when it sent none, the bare gRPC status.
_CLASSES: dict[str, type[ClientError]] = {
    "invalid_argument": InvalidArgument,
    "unauthenticated": Unauthenticated,
    "not_found": NotFound,
    "failed_precondition": Conflict,
    "resource_exhausted": RateLimited,
    "unimplemented": Unimplemented,
    "unavailable": Unavailable,
    "deadline_exceeded": DeadlineExceeded,
}


def error_from(error: grpc.aio.AioRpcError) -> ClientError:
    """The :class:`ClientError` of a failed call."""
    trailers = _metadata(error.trailing_metadata())
    status = error.code()
    code = trailers.get(ERROR_CODE_KEY)
    cls = _CLASSES.get(code or status.name.lower(), ServerError)
    message = error.details() or status.name.lower()
    if cls is RateLimited:
        return RateLimited(
            message,
            code=code,
            status=status,
            retry_after=_seconds(trailers.get(RETRY_AFTER_KEY)),
        )
    return cls(message, code=code, status=status)


def _metadata(items: object) -> dict[str, str]:
    # grpc types metadata loosely (an object, or None); at run time it is an
    # iterable of (key, value) pairs, values str (or bytes for -bin keys).
    if not isinstance(items, Iterable):
        return {}
    pairs: dict[str, str] = {}
    for key, value in items:
        if isinstance(key, str) and isinstance(value, str):
            pairs[key] = value
    return pairs


def _seconds(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
