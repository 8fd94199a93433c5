"""The delays between reconnection attempts (see :class:`Backoff`)."""

from __future__ import annotations

import random

from avtomatika.backoff import backoff_delay

__all__ = ["Backoff"]


class Backoff:
    """Delays that grow by ``multiplier`` per attempt up to ``maximum``.

    Each delay is shortened by a random fraction of up to ``jitter``: workers
    cut off by the same failure then come back spread out, not all at once.
    The formula is :func:`avtomatika.backoff.backoff_delay`; this counts the
    attempts since the last good connection.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        multiplier: float,
        jitter: float,
        rng: random.Random | None = None,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._multiplier = multiplier
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds."""
        delay = backoff_delay(
            self._attempts,
            base=self._initial,
            cap=self._maximum,
            factor=self._multiplier,
            jitter=self._jitter,
            rng=self._rng,
        )
        self._attempts += 1
        return delay

    def reset(self) -> None:
        """Start over from the initial delay (after a good connection)."""
        self._attempts = 0
