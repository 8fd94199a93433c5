"""The gRPC side of the logs: per call, a request scope (the caller's
``x-request-id`` metadata when well formed, else a fresh id), echoed in the
trailing metadata of every call, in the initial metadata of streaming
ones too, and one access line once the call ends (see
:mod:`avtomatika.logs.access`).

A streaming call logs when it ends (its duration is the stream's life); a
worker's bidirectional stream also logs when it opens, and never per
message: its worker's connect and disconnect lines come from the worker
registry (:mod:`avtomatika.logs.lifecycle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from avtomatika.logs.access import ACCESS_LOG, caller_fields
from avtomatika.logs.direct import log_line
from avtomatika.logs.scope import (
    REQUEST_ID_METADATA,
    RequestScope,
    close_scope,
    open_scope,
    request_id_from,
)

__all__ = ["AccessLogInterceptor"]

_Context = grpc.aio.ServicerContext[Any, Any]
# Generic in grpc's stubs only: subscripted at run time, they raise.
if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor
_Behavior = Callable[..., Any]

# grpc reports a call's code as the core's number; its name is what an
# operator knows.
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class AccessLogInterceptor(_Interceptor):
    """Wraps every method handler; the wrapped handler is built once per
    method, not per call."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        # None for a method nobody serves (the stubs say otherwise): grpc
        # answers UNIMPLEMENTED, and there is nothing of ours to log.
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return handler  # type: ignore[return-value]
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, _wrap(handler, method))
            self._wrapped[method] = cached
        return cached[1]


def _wrap(handler: _Handler, method: str) -> _Handler:
    serializers: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _logged_call(handler.unary_unary, method, streaming=False), **serializers
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _logged_call(handler.stream_unary, method, streaming=False), **serializers
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _logged_stream(handler.unary_stream, method, announce=False), **serializers
        )
    return grpc.stream_stream_rpc_method_handler(
        _logged_stream(handler.stream_stream, method, announce=True), **serializers
    )


def _logged_call(behavior: _Behavior, method: str, *, streaming: bool) -> _Behavior:
    """A call answered by a coroutine (unary responses, and streams written
    with ``context.write``, as grpc's health Watch is)."""

    async def logged(request: Any, context: _Context) -> Any:
        scope, token, remote = await _open(context, streaming)
        with _logging(method, scope, token, context, remote):
            return await behavior(request, context)

    return logged


def _logged_stream(behavior: _Behavior | None, method: str, *, announce: bool) -> _Behavior:
    """A streaming answer, whether an async generator or a coroutine that
    writes."""
    assert behavior is not None  # one of the four kinds is always set
    if not inspect.isasyncgenfunction(behavior):
        return _logged_call(behavior, method, streaming=True)

    async def logged(request: Any, context: _Context) -> AsyncIterator[Any]:
        scope, token, remote = await _open(context, True)
        if announce and ACCESS_LOG.isEnabledFor(logging.INFO):
            log_line(
                ACCESS_LOG,
                logging.INFO,
                "gRPC %s stream opened remote=%s",
                (method, remote),
                {"rpc": method, "remote": remote, "request_id": scope.request_id},
            )
        with _logging(method, scope, token, context, remote):
            async for response in behavior(request, context):
                yield response

    return logged


async def _open(
    context: _Context, streaming: bool
) -> tuple[RequestScope, contextvars.Token[Any], str]:
    """The call's scope (opened), its token, and the caller's address for
    the access line (``-`` when access lines are off).

    The address is read here, while the call is live, never when it ends:
    a stream's generator can be finalized after grpc has torn its call
    down, and ``peer()`` on that call crashed the process (a segfault in
    one run of the benchmark in three at INFO, as its workers went away)."""
    remote = context.peer() if ACCESS_LOG.isEnabledFor(logging.INFO) else "-"
    sent = None
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA and isinstance(value, str):
            sent = value
            break
    scope, token = open_scope(request_id_from(sent))
    echo = ((REQUEST_ID_METADATA, scope.request_id),)
    # Trailing metadata goes out with the status (no extra write); an abort
    # of ours adds the id to its own trailers (grpc/status.py). A stream's
    # caller may read headers long before the end: it gets the id in them.
    context.set_trailing_metadata(echo)
    if streaming:
        await context.send_initial_metadata(echo)
    return scope, token, remote


@contextlib.contextmanager
def _logging(
    method: str,
    scope: RequestScope,
    token: contextvars.Token[Any],
    context: _Context,
    remote: str,
) -> Iterator[None]:
    """Around a call's handler: its scope closed and its access line
    written, however it ends."""
    started = time.perf_counter()
    failure: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        close_scope(token)
        if ACCESS_LOG.isEnabledFor(logging.INFO):
            _log(method, scope, context, remote, time.perf_counter() - started, failure)


def _log(
    method: str,
    scope: RequestScope,
    context: _Context,
    remote: str,
    seconds: float,
    failure: BaseException | None,
) -> None:
    duration_ms = round(seconds * 1000, 1)
    code = _code(context, failure)
    fields = caller_fields(scope.caller)
    fields.update(
        rpc=method, code=code, duration_ms=duration_ms, remote=remote, request_id=scope.request_id
    )
    log_line(
        ACCESS_LOG,
        logging.INFO,
        "gRPC %s %s %.1f ms caller=%s remote=%s",
        (method, code, duration_ms, scope.caller, remote),
        fields,
    )


def _code(context: _Context, failure: BaseException | None) -> str:
    """The call's status: the one set or aborted with, else what the way it
    ended implies."""
    code = context.code()
    if code is not None:
        number = code.value[0] if isinstance(code, grpc.StatusCode) else code
        return _CODE_NAMES.get(number, str(code))
    if failure is None:
        return "OK"
    if isinstance(failure, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"  # the caller went away (or the server is stopping)
    return "UNKNOWN"  # grpc's answer to a handler that raised
