"""Our errors as gRPC statuses: the gRPC side of :data:`avtomatika.errors.HTTP_STATUS`.

Every :class:`~avtomatika.errors.Code` has a status in :data:`GRPC_STATUS`;
:func:`abort` ends a call with it, the error's message as the details, and
the code itself in the trailing metadata under :data:`ERROR_CODE_KEY`: a
client tells our refusals from a proxy's or grpc's own statuses (a
DEADLINE_EXCEEDED, an UNAVAILABLE of a dropped connection) without parsing
the message.

A rate-limited call also carries :data:`RETRY_AFTER_KEY` (seconds). A
servicer wraps each RPC in :func:`rpc_errors` so every error of ours that
escapes it ends the call this way.

Here rather than in :mod:`avtomatika.errors`: the core never imports grpc.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import grpc

from avtomatika.errors import AvtomatikaError, Code, RateLimited
from avtomatika.logs.scope import REQUEST_ID_METADATA, current_request_id

__all__ = ["ERROR_CODE_KEY", "GRPC_STATUS", "RETRY_AFTER_KEY", "abort", "rpc_errors"]

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

log = logging.getLogger(__name__)

ERROR_CODE_KEY = "avtomatika-error-code"
"""Trailing metadata key of an aborted call: the error's ``Code`` value."""

RETRY_AFTER_KEY = "retry-after"
"""Trailing metadata key of a rate-limited call: whole seconds to wait."""


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: AvtomatikaError) -> NoReturn:
    """End the call with ``error``: its status, its message, its code."""
    trailers: tuple[tuple[str, str], ...] = ((ERROR_CODE_KEY, error.code.value),)
    if isinstance(error, RateLimited):
        trailers += ((RETRY_AFTER_KEY, str(error.retry_after_seconds)),)
    request_id = current_request_id()
    if request_id is not None:  # these trailers replace the ones the access log set
        trailers += ((REQUEST_ID_METADATA, request_id),)
    await context.abort(GRPC_STATUS[error.code], error.message, trailing_metadata=trailers)


@asynccontextmanager
async def rpc_errors(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """Around an RPC's body: an error of ours raised inside ends the call
    (see :func:`abort`)."""
    try:
        yield
    except AvtomatikaError as exc:
        await abort(context, exc)
    except (grpc.aio.AbortError, asyncio.CancelledError):
        raise
    except Exception:
        # A bug or a backend's own error: logged here, and the caller hears
        # no more than REST clients do (never the exception's text).
        log.exception("unhandled error in a gRPC call")
        await abort(context, AvtomatikaError("internal error"))
