"""How long to wait before trying again: the one exponential backoff.

Every retry loop (the worker SDK reconnecting, background loops waiting out
a Redis outage, webhook deliveries, history writes, task retries) takes its
delay from :func:`backoff_delay`, each with its own base, cap and jitter.

Standard library only: the worker SDK imports this module, and the SDK must
not load the server.
"""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    factor: float = 2.0,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """The delay after ``attempt`` failures before this one was retried:
    ``base * factor**attempt``, at most ``cap``, so ``base`` for attempt 0.

    ``jitter`` (0 to 1) shortens the delay by a random fraction of up to
    itself, drawn from ``rng`` (the ``random`` module's by default): callers
    that fail together (a fleet of workers, every sender of one receiver) then
    come back spread out rather than all at once. With no jitter the delay is
    exact and ``rng`` is not used.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be at least 0, got {attempt}")
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be between 0 and 1, got {jitter}")
    try:
        delay = min(cap, base * factor**attempt)
    except OverflowError:
        # A float power overflows after about a thousand doublings (a loop
        # that has been retrying for hours): long past the cap.
        delay = cap
    if jitter:
        delay *= 1 - jitter * (rng or random).random()
    return delay
