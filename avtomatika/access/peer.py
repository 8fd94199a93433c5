"""The names of the client certificate a request came with (mutual TLS):
its subject's common name and its DNS subject alternative names, against
which ``TLS_BIND_WORKER_IDENTITY`` checks the worker id a worker claims.

Each transport reads them off its verified connection and makes them
current while it serves the request (:func:`presented`), as the log scope
is made current (:mod:`avtomatika.logs.scope`); the services read them
(:func:`certificate_names`) without knowing a transport. A context variable
rather than a parameter: every use case of a worker, on both transports,
would otherwise carry one more argument for the few deployments that bind.

Standard library only.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator

__all__ = ["certificate_names", "presented"]

_NAMES: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "avtomatika_peer_certificate_names", default=frozenset()
)


@contextlib.contextmanager
def presented(names: Iterable[str]) -> Iterator[None]:
    """``names`` are the current request's certificate names inside the block."""
    token = _NAMES.set(frozenset(names))
    try:
        yield
    finally:
        _NAMES.reset(token)


def certificate_names() -> frozenset[str]:
    """The current request's certificate names; empty without a certificate
    (or outside a request)."""
    return _NAMES.get()
