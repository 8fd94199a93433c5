"""Exponential backoff with jitter between reconnection attempts."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that grow by ``multiplier`` per attempt up to ``maximum``.

    Each delay is shortened by a random fraction of up to ``jitter``: workers
    cut off by the same failure then come back spread out, not all at once.
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
        base = min(self._maximum, self._initial * self._multiplier**self._attempts)
        if 0 < base < self._maximum:
            # Stop counting at the cap: the power would overflow a float eventually.
            self._attempts += 1
        return base * (1 - self._jitter * self._rng.random())

    def reset(self) -> None:
        """Start over from the initial delay (after a good connection)."""
        self._attempts = 0
