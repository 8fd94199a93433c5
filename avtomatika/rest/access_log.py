"""The REST side of the logs: a request id for every request, echoed in
``X-Request-ID`` on every response (errors and 404s included), and one
access line per request (see :mod:`avtomatika.logs.access`).

The line is written by aiohttp's access-log hook, once the response is
sent: one formatted line, nothing awaited, and nothing at all when the
``avtomatika.access`` logger is below INFO.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from avtomatika.logs.access import caller_fields, loggable_target
from avtomatika.logs.direct import log_line
from avtomatika.logs.scope import (
    REQUEST_ID_HEADER,
    RequestScope,
    close_scope,
    open_scope,
    request_id_from,
)

__all__ = ["SCOPE", "AccessLogger", "echo_request_id", "request_scope_middleware"]

SCOPE = web.RequestKey("request_scope", RequestScope)
"""The request's id and caller, for the response header and the access line."""


@web.middleware
async def request_scope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: the request's id (the one sent, if well formed) and, while
    it is served, its scope in the context, so every line logged for it
    carries the id."""
    scope, token = open_scope(request_id_from(request.headers.get(REQUEST_ID_HEADER)))
    request[SCOPE] = scope
    try:
        return await handler(request)
    finally:
        close_scope(token)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response names its request's id."""
    scope = request.get(SCOPE)
    if scope is not None:
        response.headers[REQUEST_ID_HEADER] = scope.request_id


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook: the access line of a served request."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        scope = request.get(SCOPE)
        caller = "-" if scope is None else scope.caller
        url = request.rel_url
        target = loggable_target(url.raw_path, url.raw_query_string)
        duration_ms = round(time * 1000, 1)
        remote = request.remote or "-"
        fields = caller_fields(caller)
        fields.update(
            method=request.method,
            path=target,
            status=response.status,
            duration_ms=duration_ms,
            remote=remote,
        )
        if scope is not None:
            fields["request_id"] = scope.request_id
        log_line(
            self.logger,
            logging.INFO,
            "%s %s %d %.1f ms caller=%s remote=%s",
            (request.method, target, response.status, duration_ms, caller, remote),
            fields,
        )
