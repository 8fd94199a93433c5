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
and the time that took says how saturated the loop is. Once saturated (the
yield, smoothed over the last reads, took over :data:`SATURATED_AFTER_SECONDS`),
a read holds until the job visibly changes, at most
``STATUS_READ_HOLD_SECONDS`` (0.5 s: at 128 clients 0.5 s gave 3.3 to 4.6
polls per job, 0.1 s 5.8 to 7.3), as ``?wait=`` would: the client gets the
same answer, only later, and later is when it has more to see; it polls
less often, and the server's time goes to the workers first. Idle or
moderately loaded, a read waits for nothing. Nothing runs between reads:
the measure is the reads' own.

The rule lets go only once the yield is under :data:`RELIEVED_UNDER_SECONDS`,
far below where it engages: holding the reads is what makes the loop's
yields short (at 128 clients 0.4 to 1.2 ms held against 2 to 7 ms not), so
one threshold both ways would let the hold go as soon as it worked, and
the polls it saved would come back and saturate the loop again. With one
threshold, runs of the same load fell one way or the other (4 or 8.5 polls
per job at 128 clients, 2.7 at 32 while the server was CPU-bound there too).
"""

from __future__ import annotations

import asyncio

__all__ = ["RELIEVED_UNDER_SECONDS", "SATURATED_AFTER_SECONDS", "StatusReads"]

SATURATED_AFTER_SECONDS = 0.001
"""A yield to the loop that takes longer than this (smoothed): saturated.
Measured with 1.0b7 workers, reads answered at once: the median yield is
1.2 to 1.8 ms at 32 polling clients and 2 to 5 ms at 128 (the server
CPU-bound at both); an idle loop's is tens of microseconds."""

RELIEVED_UNDER_SECONDS = 0.0004
"""Once saturated, a smoothed yield under this: saturated no longer. Held
reads at 128 clients yield 1 to 1.2 ms on average; a loop that serves
one client at a time, about 0.15 ms."""

_SMOOTHING = 0.2  # weight of the newest read's yield in the running average


class StatusReads:
    """The admission rule for status reads of one process."""

    def __init__(self) -> None:
        self.lag_seconds = 0.0
        """The smoothed time a status read's yield to the loop took."""
        self.saturated = False
        """Whether reads are held (see the module's notes)."""

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
        if self.saturated:
            self.saturated = self.lag_seconds >= RELIEVED_UNDER_SECONDS
        else:
            self.saturated = self.lag_seconds > SATURATED_AFTER_SECONDS
        return longest if self.saturated else None
