"""Readiness: whether this orchestrator can serve requests now, which is
whether its store answers. Liveness (``GET /_public/status``) only says the
process runs; readiness is what a load balancer or Kubernetes should route
by, and what the gRPC health service reports.

A probe pings the store with a short deadline, so a store that hangs (a
Redis stopped, not dead) counts as down after :data:`PING_TIMEOUT_SECONDS`
instead of holding the probe. The answer is kept for :data:`KEEP_SECONDS`
and probes arriving meanwhile share one ping: a probe every second, from
any number of checkers, costs the store one round trip a second at most.
The embedded store's ping cannot fail: it is always ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["KEEP_SECONDS", "PING_TIMEOUT_SECONDS", "Readiness"]

PING_TIMEOUT_SECONDS = 2.0
"""A ping unanswered this long means the store is down."""

KEEP_SECONDS = 1.0
"""How long one answer serves the probes that follow."""


class Readiness:
    """The store's last answer to a ping, renewed on demand."""

    __slots__ = ("_checked_at", "_keep", "_ping", "_pinging", "_problem", "_timeout")

    def __init__(
        self,
        ping: Callable[[], Awaitable[None]],
        *,
        timeout: float = PING_TIMEOUT_SECONDS,
        keep: float = KEEP_SECONDS,
    ) -> None:
        self._ping = ping
        self._timeout = timeout
        self._keep = keep
        self._checked_at: float | None = None
        self._problem: str | None = None
        self._pinging: asyncio.Future[str | None] | None = None

    async def problem(self) -> str | None:
        """None when ready; else why not (the store's error)."""
        now = asyncio.get_running_loop().time()
        if self._checked_at is not None and now - self._checked_at < self._keep:
            return self._problem
        if self._pinging is None:
            self._pinging = asyncio.ensure_future(self._check())
        # Shielded: one prober giving up must not cancel the others' ping.
        return await asyncio.shield(self._pinging)

    async def _check(self) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._ping()
            problem = None
        except TimeoutError:
            problem = f"the store did not answer a ping within {self._timeout:g} s"
        except Exception as exc:
            # Any failure to answer is "not ready" (an ACL refusing the
            # ping, a connection that cannot be reopened), never an error
            # of the probe itself.
            problem = str(exc) or type(exc).__name__
        finally:
            self._pinging = None  # even cancelled: the next probe pings anew
        self._checked_at = asyncio.get_running_loop().time()
        self._problem = problem
        return problem
