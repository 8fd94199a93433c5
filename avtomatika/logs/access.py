"""The access line: one INFO line per REST request or gRPC call, on the
``avtomatika.access`` logger, written by each transport's hook once the
answer is sent.

REST: ``GET /api/v1/jobs/3f.. 200 2.1 ms caller=client:default
remote=10.0.0.7 [request_id=ab12..]``. gRPC:
``gRPC /avtomatika.v1.JobService/GetJob OK 1.4 ms caller=... remote=ipv4:...``;
a worker's stream logs its connect and its end instead.

Never a token: tokens travel in headers and metadata, which are not
logged, and query parameters whose name says they hold a secret
(``?token=``, ``?api_key=``, ...) are written as ``name=***``.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

__all__ = ["ACCESS_LOG", "caller_fields", "loggable_target"]

ACCESS_LOG = logging.getLogger("avtomatika.access")
"""Set it to WARNING to silence the access lines alone."""

# A query parameter whose name holds one of these is a credential, or may be.
_SECRET_NAMES = ("token", "secret", "password", "passwd", "key", "sig", "auth", "credential")


def loggable_target(path: str, query: str) -> str:
    """``path`` (as sent, percent-encoded: no newline can reach the log)
    and ``query`` with the values of secret-looking parameters masked."""
    if not query:
        return path
    parts = []
    for part in query.split("&"):
        name = part.partition("=")[0]
        if any(word in unquote(name).lower() for word in _SECRET_NAMES):
            part = f"{name}=***"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}"


def caller_fields(caller: str) -> dict[str, object]:
    """The caller as structured fields: ``client_id`` or ``worker_id``
    besides ``caller`` itself."""
    kind, _, name = caller.partition(":")
    if name and kind == "client":
        return {"caller": caller, "client_id": name}
    if name and kind == "worker":
        return {"caller": caller, "worker_id": name}
    return {"caller": caller}
