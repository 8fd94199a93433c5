"""Per-client request rate limits and monthly job quotas.

* **Rate** (``RATE_LIMITING_ENABLED``): at most ``RATE_LIMIT_LIMIT`` requests
  in any ``RATE_LIMIT_PERIOD`` seconds per client (one client, one token).
  A sliding log: each client keeps the times of its last ``limit`` accepted
  requests, so memory is bounded by the limit, and refused requests are not
  recorded, so a client that slows down is served again as soon as its
  oldest request leaves the window (``Retry-After`` says when).
* **Quota** (``monthly_attempts`` in ``clients.toml``): jobs a client may
  create per calendar month, UTC. Only job creation consumes it; an attempt
  that fails validation is given back.

Both refuse with :class:`~avtomatika.errors.RateLimited`, whose
``retry_after_seconds`` becomes the ``Retry-After`` header.

* **Bounds** (``CLIENT_MAX_JOBS_IN_FLIGHT``, ``CLIENT_MAX_STORED_BYTES``, or
  ``max_jobs_in_flight`` / ``max_stored_bytes`` in ``clients.toml``): jobs a
  client may have not yet ended (429, :class:`~avtomatika.errors.OverLimit`)
  and bytes of job records it may have stored (413,
  :class:`~avtomatika.errors.TooLarge`). They are kept by the store itself
  (:meth:`~avtomatika.storage.base.Storage.reserve`), atomically with the
  creation, on the embedded store and on Redis alike.

The counters live in this process's memory, which is exact with the embedded
store; with ``REDIS_URL`` they live in Redis (:mod:`avtomatika.limits.redis`),
so every instance behind a load balancer counts against the same limits.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from avtomatika.clock import next_month_ms, now_ms, utc_month
from avtomatika.config import Settings
from avtomatika.errors import OverLimit, RateLimited, TooLarge, Unavailable
from avtomatika.storage.base import BoundReached, ClientBounds, Storage

if TYPE_CHECKING:
    from avtomatika.limits.redis import RedisLimits

__all__ = [
    "ClientLimits",
    "MonthlyQuota",
    "RateLimiter",
    "quota_used_up",
    "seconds_until_next_month",
]

log = logging.getLogger(__name__)


class RateLimiter:
    """At most ``limit`` acquisitions per key in any ``period`` seconds."""

    def __init__(
        self, limit: int, period: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._period = period
        self._clock = clock
        self._log: dict[str, deque[float]] = {}

    def acquire(self, key: str) -> float:
        """Record a request for ``key``; 0.0 if allowed, else the seconds
        until one would be (nothing is recorded then)."""
        now = self._clock()
        stamps = self._log.get(key)
        if stamps is None:
            stamps = self._log[key] = deque(maxlen=self._limit)
        horizon = now - self._period
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        if len(stamps) < self._limit:
            stamps.append(now)
            return 0.0
        return stamps[0] - horizon


def seconds_until_next_month(ms: int) -> int:
    """Whole seconds (rounded up, at least 1) from epoch ``ms`` to the start
    of the next calendar month, UTC."""
    return max(1, math.ceil((next_month_ms(ms) - ms) / 1000))


class MonthlyQuota:
    """Jobs created per client in the current UTC month, against its quota."""

    def __init__(self, quotas: Mapping[str, int], clock: Callable[[], int] = now_ms) -> None:
        self._quotas = dict(quotas)
        self._clock = clock
        self._used: dict[str, tuple[str, int]] = {}

    def used(self, client_id: str) -> int:
        """Attempts ``client_id`` has used this month."""
        month, count = self._used.get(client_id, ("", 0))
        return count if month == self._month(self._clock()) else 0

    def take(self, client_id: str) -> Callable[[], None]:
        """Take one attempt, or raise :class:`RateLimited`; returns the
        function that gives it back. Synchronous, so concurrent requests can
        never overshoot the quota."""
        quota = self._quotas.get(client_id)
        if quota is None:
            return _nothing
        now = self._clock()
        month = self._month(now)
        used = self.used(client_id)
        if used >= quota:
            raise quota_used_up(quota, now)
        self._used[client_id] = (month, used + 1)

        def give_back() -> None:
            current, count = self._used.get(client_id, ("", 0))
            if current == month and count > 0:
                self._used[client_id] = (month, count - 1)

        return give_back

    @staticmethod
    def _month(ms: int) -> str:
        return utc_month(ms)


def quota_used_up(quota: int, now: int) -> RateLimited:
    """The refusal of a job over a monthly ``quota`` at epoch ``now``."""
    return RateLimited(
        f"monthly quota of {quota} jobs used up; it renews at the start of next month (UTC)",
        seconds_until_next_month(now),
    )


class ClientLimits:
    """The rate limit and the quotas of every client, from the settings.

    A service: with ``REDIS_URL`` set, :meth:`start` connects to Redis, where
    the counters are then kept; otherwise they stay in this process.
    """

    def __init__(
        self,
        settings: Settings,
        quotas: Mapping[str, int],
        bounds: Mapping[str, ClientBounds] | None = None,
        storage: Storage | None = None,
    ) -> None:
        """``bounds``: the clients whose ``clients.toml`` table sets its own;
        ``storage`` keeps the bounds (none are applied without it)."""
        self._settings = settings
        self._quotas = dict(quotas)
        self._bounds = dict(bounds or {})
        self._default_bounds = ClientBounds(
            settings.client_max_jobs_in_flight, settings.client_max_stored_bytes
        )
        self._storage = storage
        self.rate = (
            RateLimiter(settings.rate_limit_limit, settings.rate_limit_period)
            if settings.rate_limiting_enabled
            else None
        )
        self.quota = MonthlyQuota(quotas)
        self._shared: RedisLimits | None = None

    async def start(self) -> None:
        needed = self.rate is not None or bool(self._quotas)
        if self._settings.redis_url and needed and self._shared is None:
            # Imported here: a process without Redis never loads the client.
            from avtomatika.limits.redis import RedisLimits

            self._shared = await RedisLimits.open(self._settings)

    async def stop(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.close()

    async def check_rate(self, client_id: str) -> None:
        """Count a request of ``client_id``; :class:`RateLimited` if over."""
        if self.rate is None:
            return
        if self._shared is not None:
            wait = await self._shared.acquire(client_id)
        else:
            wait = self.rate.acquire(client_id)
        if wait > 0:
            raise RateLimited("rate limit exceeded; slow down", max(1, math.ceil(wait)))

    @asynccontextmanager
    async def job_creation(self, client_id: str) -> AsyncIterator[None]:
        """Around creating a job: consumes one of the client's monthly
        attempts, given back if creation fails."""
        give_back = await self._take_attempt(client_id)
        try:
            yield
        except BaseException:
            await give_back()
            raise

    @asynccontextmanager
    async def job_room(self, client_id: str, job_id: str, size: int) -> AsyncIterator[None]:
        """Around creating job ``job_id`` of ``size`` bytes: room for it
        within the client's bounds, held until the job is stored (which
        counts it instead) or given back if creation fails."""
        bounds = self.bounds(client_id)
        storage = self._storage
        if storage is None or not (bounds.max_jobs_in_flight or bounds.max_stored_bytes):
            yield
            return
        reached = await storage.reserve(client_id, job_id, size, bounds)
        if reached is not None:
            raise _refusal(client_id, reached, bounds, size)
        try:
            yield
        except BaseException:
            await storage.unreserve(client_id, job_id)
            raise

    def bounds(self, client_id: str) -> ClientBounds:
        """The client's own bounds, else the defaults."""
        return self._bounds.get(client_id, self._default_bounds)

    async def _take_attempt(self, client_id: str) -> Callable[[], Awaitable[None]]:
        quota = self._quotas.get(client_id)
        shared = self._shared
        if shared is None or quota is None:
            give_back_here = self.quota.take(client_id)

            async def give_back_to_memory() -> None:
                give_back_here()

            return give_back_to_memory
        now = now_ms()
        if not await shared.take(client_id, quota, now):
            raise quota_used_up(quota, now)

        async def give_back_to_redis() -> None:
            try:
                await shared.give_back(client_id, now)
            except Unavailable as exc:
                # The creation's own error matters more than this one.
                log.warning("monthly quota of %s: a failed job stays counted: %s", client_id, exc)

        return give_back_to_redis


def _nothing() -> None:
    return None


def _refusal(client_id: str, reached: BoundReached, bounds: ClientBounds, size: int) -> OverLimit:
    if reached.bound == "jobs":
        return OverLimit(
            f"client {client_id!r} has {reached.held} jobs in flight, its limit "
            f"(max_jobs_in_flight, default CLIENT_MAX_JOBS_IN_FLIGHT) is "
            f"{bounds.max_jobs_in_flight}; create more once some have ended"
        )
    return TooLarge(
        f"client {client_id!r} stores {reached.held} bytes of jobs; {size} more would pass "
        f"its limit (max_stored_bytes, default CLIENT_MAX_STORED_BYTES) of "
        f"{bounds.max_stored_bytes} bytes; ended jobs free theirs when forgotten "
        "(JOB_RETENTION_SECONDS)"
    )
