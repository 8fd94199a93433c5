"""Status reads go last when the server is saturated.

A client polling ``GET /api/v1/jobs/{id}`` (no ``?wait=``) costs the server a
request each time, and on one event loop every request waits behind those
that came before it. Under many polling clients the workers' requests (task
hand-outs, results, heartbeats: the work that finishes jobs) wait behind
the polls, jobs take longer, so every job is polled more times, which loads
the server more: an overloaded server falls into a slow regime and stays
there (measured with SDK 1.0b7 workers at 128 clients polling every 20 ms:
25 to 29 polls per job, 6 to 7.5 ms of server CPU per job).

So a status read first yields to everything already waiting on the loop,
and the time that took says how saturated the loop is. Past
:data:`SATURATED_AFTER_SECONDS` (smoothed over the last reads), the read
holds until the job visibly changes, at most ``STATUS_READ_HOLD_SECONDS``
(0.5 s: at 128 clients 0.5 s gave 3.3 to 4.6 polls per job, 0.1 s 5.8 to
7.3), as ``?wait=`` would: the client gets the same answer, only later, and later
is when it has more to see; it polls less often, and the server's time
goes to the workers first. Idle or moderately loaded, a read waits for
nothing. Nothing runs between reads: the measure is the reads' own.
"""

from __future__ import annotations

import asyncio

__all__ = ["SATURATED_AFTER_SECONDS", "StatusReads"]

SATURATED_AFTER_SECONDS = 0.002
"""A yield to the loop that takes longer than this (smoothed): saturated.
Measured with 1.0b7 workers: the median yield is 1.2 to 1.7 ms at 32
polling clients, 2.2 to 3.5 ms at 128."""

_SMOOTHING = 0.2  # weight of the newest read's yield in the running average


class StatusReads:
    """The admission rule for status reads of one process."""

    def __init__(self) -> None:
        self.lag_seconds = 0.0
        """The smoothed time a status read's yield to the loop took."""

    async def hold_seconds(self, longest: float) -> float | None:
        """Yield to every callback already ready on the loop (the workers'
        requests among them), then how long this read may be held: None
        unless the loop is saturated, ``longest`` if it is (0: the rule is
        off, and nothing is measured)."""
        if longest <= 0:
            return None
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.sleep(0)
        lag = loop.time() - began
        self.lag_seconds += _SMOOTHING * (lag - self.lag_seconds)
        return longest if self.lag_seconds > SATURATED_AFTER_SECONDS else None
