"""What a worker id may look like, wherever one arrives: a gRPC Hello, the
legacy REST worker API (bodies and paths), ``workers.toml``, the worker SDK's
own settings, and the REST API's JSON Schema.

Standard library and :mod:`avtomatika.errors` only: the worker SDK checks
its id with this module too, and the SDK must not load the server.
"""

from __future__ import annotations

import re

from avtomatika.errors import InvalidArgument

__all__ = ["MAX_WORKER_ID_LENGTH", "WORKER_ID_PATTERN", "check_worker_id", "worker_id_problem"]

MAX_WORKER_ID_LENGTH = 128
"""The longest worker id: it is a key in every store and a line of every
log; 128 leaves room for a host name and a suffix."""

WORKER_ID_PATTERN = "^[A-Za-z0-9_-]+$"
"""Letters, digits, ``_`` and ``-``: safe in a URL path, a Redis key and a
TOML table name without quoting. Also the JSON Schema ``pattern``."""

_WORKER_ID = re.compile(WORKER_ID_PATTERN)


def worker_id_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a worker id (the message every
    transport and the SDK give), or None if it is well formed."""
    # fullmatch: with match, ``$`` also matches before a final newline, so
    # "w-1\n" passed (and a newline ends the id in the cancel channel's
    # framing); JSON Schema's ``$`` never let it through.
    if len(value) > MAX_WORKER_ID_LENGTH:
        # Not echoed: a refusal must not send a 10,000-character id back.
        return f"worker_id must be at most {MAX_WORKER_ID_LENGTH} characters, not {len(value)}"
    if _WORKER_ID.fullmatch(value):
        return None
    return f"worker_id {value!r} must match {WORKER_ID_PATTERN}"


def check_worker_id(value: str) -> str:
    """``value`` if it is a well-formed worker id, else :class:`InvalidArgument`
    saying what it must match."""
    problem = worker_id_problem(value)
    if problem is not None:
        raise InvalidArgument(problem)
    return value
