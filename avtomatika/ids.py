"""What a worker id may look like, wherever one arrives: a gRPC Hello, the
legacy REST worker API (bodies and paths), ``workers.toml``, the worker SDK's
own settings, and the REST API's JSON Schema; and the random hex of the ids
the orchestrator makes (jobs, tasks, events, request ids).

Standard library and :mod:`avtomatika.errors` only: the worker SDK checks
its id with this module too, and the SDK must not load the server.
"""

from __future__ import annotations

import os
import re
import threading

from avtomatika.errors import InvalidArgument

__all__ = [
    "MAX_WORKER_ID_LENGTH",
    "WORKER_ID_PATTERN",
    "check_worker_id",
    "random_hex",
    "worker_id_problem",
]

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


# Random bytes read from the kernel 4 KiB at a time rather than 16 at a
# time: a job takes about a dozen ids (the job, its task, one per history
# event, the request ids), and one getrandom call each was ~5% of the
# orchestrator's CPU per job. The bytes are os.urandom's all the same, each
# handed out once.
_POOL_BYTES = 4096
_pool = b""
_taken = 0
_pool_lock = threading.Lock()


def random_hex(size: int) -> str:
    """``size`` random bytes (at most 4 KiB) from :func:`os.urandom`, as
    ``2 * size`` hex digits, as ``os.urandom(size).hex()`` would be."""
    global _pool, _taken
    with _pool_lock:
        if _taken + size > len(_pool):
            _pool = os.urandom(max(_POOL_BYTES, size))
            _taken = 0
        start = _taken
        _taken = start + size
        return _pool[start : start + size].hex()


def _forget_pool() -> None:
    """A forked child must not hand out the ids its parent will: it draws
    its own bytes."""
    global _pool, _taken, _pool_lock
    _pool, _taken = b"", 0
    _pool_lock = threading.Lock()  # a thread of the parent may have held it


os.register_at_fork(after_in_child=_forget_pool)
