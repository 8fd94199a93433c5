"""The request a log line belongs to: its request id and its caller.

Each transport opens a :class:`RequestScope` per REST request or gRPC call
and puts it in a context variable, so every line logged while serving it
(an error, a job created) carries its ``request_id`` without being passed
it, and the services name the caller (:func:`identify`) once they have
authenticated it, for the access line to say who asked. The scope is a
mutable object rather than two variables: tasks started while serving
copy the context, and what they learn still reaches the access line.

Standard library only: the services and both transports import it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import secrets
from dataclasses import dataclass

__all__ = [
    "REQUEST_ID_HEADER",
    "REQUEST_ID_METADATA",
    "RequestIdFilter",
    "RequestScope",
    "close_scope",
    "current_request_id",
    "identify",
    "open_scope",
    "request_id_from",
]

REQUEST_ID_HEADER = "X-Request-ID"
"""The HTTP header a request id arrives in and is echoed in."""
REQUEST_ID_METADATA = "x-request-id"
"""The gRPC metadata key of the same (metadata keys are lower case)."""

# Visible ASCII but the double quote and the backslash, at most 128 of them:
# enough for a UUID, a W3C trace id or a proxy's id, and nothing that could
# break a log line (no space, newline or control character) or need
# escaping in the text format.
_VALID = re.compile(r"[!#-\[\]-~]{1,128}")


@dataclass(slots=True)
class RequestScope:
    """One request or call being served."""

    request_id: str
    caller: str = "-"
    """``client:<id>``, ``worker:<id>`` (``worker`` alone for a global token
    whose worker is not known yet), or ``-`` before authentication."""


_SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "avtomatika_request_scope", default=None
)


def request_id_from(sent: str | None) -> str:
    """The request id to use: the one the caller sent if it is well formed,
    else a fresh one (16 hex digits)."""
    if sent is not None and _VALID.fullmatch(sent):
        return sent
    return secrets.token_hex(8)


def open_scope(request_id: str) -> tuple[RequestScope, contextvars.Token[RequestScope | None]]:
    """Start serving a request: its scope, and the token that
    :func:`close_scope` takes back."""
    scope = RequestScope(request_id)
    return scope, _SCOPE.set(scope)


def close_scope(token: contextvars.Token[RequestScope | None]) -> None:
    """The request is served: lines logged after it carry no request id.
    (A kept-alive HTTP connection serves its next request in the same task.)"""
    # A stream's generator may be finalized from another task (grpc closes
    # a cancelled stream that way), whose context never held this scope:
    # there is nothing to reset there.
    with contextlib.suppress(ValueError):
        _SCOPE.reset(token)


def identify(caller: str) -> None:
    """Name the caller of the request being served (no-op outside one)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.caller = caller


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    scope = _SCOPE.get()
    return None if scope is None else scope.request_id


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record logged while a request is served
    (a record that names one already keeps its own: the access line is
    written after its scope closed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in record.__dict__:
            scope = _SCOPE.get()
            if scope is not None:
                record.request_id = scope.request_id
        return True

    def add_to(self, fields: dict[str, object]) -> None:
        """What :meth:`filter` adds to a record, added to a line's fields."""
        if "request_id" not in fields:
            scope = _SCOPE.get()
            if scope is not None:
                fields["request_id"] = scope.request_id
