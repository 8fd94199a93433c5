"""One exception hierarchy for everything a user (client, worker, blueprint
author, operator) can get wrong, each with a canonical code.

The codes are gRPC's canonical status codes, spelled out here so the core never
imports grpc; the transports map them: HTTP through :data:`HTTP_STATUS`, gRPC
through :data:`avtomatika.grpc.status.GRPC_STATUS` (beside it
:func:`avtomatika.grpc.status.abort`, which also sends the code itself).

    AvtomatikaError
    ├── InvalidArgument      bad input: a malformed body, a bad field
    │   └── BlueprintError   a blueprint that cannot be registered or run (a ValueError)
    ├── ConfigError          a setting or config file that stops start-up
    ├── Unauthenticated      missing or wrong token
    ├── NotFound             unknown job, blueprint, worker, route
    ├── Conflict             the request contradicts the current state
    ├── RateLimited          too many requests or over quota
    ├── OverLimit            over a per-client bound (jobs in flight)
    │   └── TooLarge         a payload or a client's stored bytes over their limit (413)
    ├── NotImplementedYet    a declared route not served here (not configured, other transport)
    └── Unavailable          a backend is down; retry later
"""

from __future__ import annotations

import enum

__all__ = [
    "HTTP_STATUS",
    "AvtomatikaError",
    "BlueprintError",
    "Code",
    "ConfigError",
    "Conflict",
    "InvalidArgument",
    "NotFound",
    "NotImplementedYet",
    "OverLimit",
    "RateLimited",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "http_status",
]


class Code(enum.Enum):
    """Canonical error codes (the names match ``grpc.StatusCode``)."""

    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    NOT_FOUND = "not_found"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNIMPLEMENTED = "unimplemented"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


HTTP_STATUS: dict[Code, int] = {
    Code.INVALID_ARGUMENT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.NOT_FOUND: 404,
    Code.FAILED_PRECONDITION: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.INTERNAL: 500,
}


class AvtomatikaError(Exception):
    """Base of every error Avtomatika raises on purpose."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AvtomatikaError):
    """The request or input is malformed."""

    code = Code.INVALID_ARGUMENT


class BlueprintError(InvalidArgument, ValueError):
    """A blueprint is inconsistent (no start state, dangling transition, ...).

    Also a :class:`ValueError`, which 1.0b13 documents for these mistakes, so
    code written for it that catches ``ValueError`` keeps working."""


class ConfigError(AvtomatikaError):
    """A setting or configuration file is invalid; start-up stops."""

    code = Code.INVALID_ARGUMENT


class Unauthenticated(AvtomatikaError):
    """Credentials are missing or wrong."""

    code = Code.UNAUTHENTICATED


class NotFound(AvtomatikaError):
    """The thing asked for does not exist (or belongs to someone else)."""

    code = Code.NOT_FOUND


class Conflict(AvtomatikaError):
    """The request is not valid in the current state (e.g. cancel a finished job)."""

    code = Code.FAILED_PRECONDITION


class RateLimited(AvtomatikaError):
    """The caller is over its rate limit or quota."""

    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class NotImplementedYet(AvtomatikaError):
    """A declared route or RPC this server does not serve: its feature is
    not configured (file storage without S3), or it is served over the other
    transport (the unary worker RPCs over gRPC)."""

    code = Code.UNIMPLEMENTED


class Unavailable(AvtomatikaError):
    """A backend (storage, S3) cannot be reached; the caller may retry."""

    code = Code.UNAVAILABLE


class OverLimit(AvtomatikaError):
    """A per-client bound is reached (e.g. jobs in flight): 429 without a
    ``Retry-After`` (the wait depends on the client's own jobs ending)."""

    code = Code.RESOURCE_EXHAUSTED


class TooLarge(OverLimit):
    """A payload bigger than ``MAX_PAYLOAD_BYTES``, or more than a client may
    store: 413 over REST, RESOURCE_EXHAUSTED over gRPC."""


def http_status(error: AvtomatikaError) -> int:
    """The HTTP status of ``error``: its code's, but 413 for :class:`TooLarge`."""
    return 413 if isinstance(error, TooLarge) else HTTP_STATUS[error.code]
