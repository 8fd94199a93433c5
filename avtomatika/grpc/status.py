"""Our errors as gRPC statuses: the gRPC side of :data:`avtomatika.errors.HTTP_STATUS`.

Every :class:`~avtomatika.errors.Code` has a status in :data:`GRPC_STATUS`;
:func:`abort` ends a call with it, the error's message as the details, and
the code itself in the trailing metadata under :data:`ERROR_CODE_KEY`: a
client tells our refusals from a proxy's or grpc's own statuses (a
DEADLINE_EXCEEDED, an UNAVAILABLE of a dropped connection) without parsing
the message.

Here rather than in :mod:`avtomatika.errors`: the core never imports grpc.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from avtomatika.errors import AvtomatikaError, Code

__all__ = ["ERROR_CODE_KEY", "GRPC_STATUS", "abort"]

GRPC_STATUS: dict[Code, grpc.StatusCode] = {
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Code.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
}
"""The gRPC status of each canonical code (the same names: the codes are
gRPC's canonical ones)."""

ERROR_CODE_KEY = "avtomatika-error-code"
"""Trailing metadata key of an aborted call: the error's ``Code`` value."""


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: AvtomatikaError) -> NoReturn:
    """End the call with ``error``: its status, its message, its code."""
    await context.abort(
        GRPC_STATUS[error.code],
        error.message,
        trailing_metadata=((ERROR_CODE_KEY, error.code.value),),
    )
