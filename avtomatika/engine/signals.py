"""Signals: synchronous fan-out of values that are not job history.

The engine reports facts that metrics (or logs, or tests) may want to count
without the engine knowing who listens, e.g. a worker result it ignored. Job
lifecycle events have their own bus (:mod:`avtomatika.engine.events`); a signal is
the same idea for one kind of value, kept out of history.

Listeners are synchronous and must not block; one that raises is logged and
never breaks the sender or the other listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Signal"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Signal(Generic[T]):
    """Listeners of one kind of value."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Callable[[T], None]] = []

    def subscribe(self, listener: Callable[[T], None]) -> Callable[[], None]:
        """Call ``listener`` for every value sent; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def send(self, value: T) -> None:
        """Hand ``value`` to every listener, in subscription order."""
        for listener in list(self._listeners):
            try:
                listener(value)
            except Exception:
                log.exception("%s listener %r failed", self.name, listener)
