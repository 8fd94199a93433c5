"""Errors of the core, answered as gRPC statuses.

A servicer wraps each RPC in :func:`rpc_errors`: an
:class:`~avtomatika.errors.AvtomatikaError` ends the call with the gRPC status
of its code, its message as the details, and the machine-readable code in
the trailing metadata (``avtomatika-error-code``), plus ``retry-after``
(seconds) when the client is rate limited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from avtomatika.errors import AvtomatikaError, RateLimited

__all__ = ["ERROR_CODE_KEY", "RETRY_AFTER_KEY", "rpc_errors"]

ERROR_CODE_KEY = "avtomatika-error-code"
RETRY_AFTER_KEY = "retry-after"


@asynccontextmanager
async def rpc_errors(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """Abort the RPC with the status of an :class:`AvtomatikaError` raised inside."""
    try:
        yield
    except AvtomatikaError as exc:
        trailers: list[tuple[str, str]] = [(ERROR_CODE_KEY, exc.code.value)]
        if isinstance(exc, RateLimited):
            trailers.append((RETRY_AFTER_KEY, str(exc.retry_after_seconds)))
        await context.abort(grpc.StatusCode[exc.code.name], exc.message, tuple(trailers))
