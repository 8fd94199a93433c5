"""Rate limits and monthly quotas kept in Redis, so every orchestrator
instance on one Redis counts against the same limits.

The semantics are those of :mod:`avtomatika.limits.client_limits`; each check is one Lua
script, so two instances serving the same client at once can never both take
the last request of a window or the last job of a quota.

- Rate: :meth:`Keys.rate` is a sorted set of the client's accepted request
  times, in microseconds of the Redis server's clock (one clock for every
  instance, whatever their own clocks say). Refused requests are not
  recorded; the set never holds more than ``RATE_LIMIT_LIMIT`` entries and
  expires one period after the client's last accepted request.
- Quota: :meth:`Keys.quota` counts the client's jobs in a UTC month; it
  expires a day into the next month, when it can no longer be read.
"""

from __future__ import annotations

from avtomatika.clock import next_month_ms, utc_month
from avtomatika.config import Settings
from avtomatika.engine.tasks import new_id
from avtomatika.storage.redis import Keys, Pipelined, Script, connect_pipelined, unavailable

__all__ = ["RedisLimits"]

_DAY_MS = 86_400_000

# KEYS[1]: the client's window (sorted set: request id -> time in µs).
# ARGV[1]: the limit, ARGV[2]: the period in µs, ARGV[3]: this request's id.
# Returns 0 when the request is counted; else the µs until one would be
# (the request is then not recorded).
_ACQUIRE = Script("""
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local horizon = now - period
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000) + 1)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) - horizon
""")

# KEYS[1]: the client's counter for the month.
# ARGV[1]: the quota, ARGV[2]: when the counter may go (epoch ms).
# Returns 1 when a job is taken from the quota, 0 when it is used up.
_TAKE = Script("""
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
""")

# KEYS[1]: the client's counter for the month.
# Returns the count after giving one job back (never below 0).
_GIVE_BACK = Script("""
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
""")


class RedisLimits:
    """The counters behind :class:`~avtomatika.limits.client_limits.ClientLimits` when
    ``REDIS_URL`` is set, on a Redis connection it owns (pipelined: a
    quota is checked at every job created)."""

    def __init__(self, client: Pipelined, settings: Settings) -> None:
        self._client = client
        self._keys = Keys(settings.redis_prefix)
        self._limit = settings.rate_limit_limit
        self._period_us = max(1, int(settings.rate_limit_period * 1_000_000))

    @classmethod
    async def open(cls, settings: Settings) -> RedisLimits:
        """Connect to ``REDIS_URL``
        (:class:`~avtomatika.errors.ConfigError` if it does not answer)."""
        return cls(
            await connect_pipelined(
                settings.redis_url or "", timeout=settings.redis_command_timeout_seconds
            ),
            settings,
        )

    async def close(self) -> None:
        await self._client.close()

    async def acquire(self, client_id: str) -> float:
        """Count a request of ``client_id``: 0.0 if allowed, else the seconds
        until one would be."""
        with unavailable("checking the rate limit"):
            wait_us = await self._client.run(
                _ACQUIRE, [self._keys.rate(client_id)], [self._limit, self._period_us, new_id()]
            )
        return int(wait_us) / 1_000_000

    async def take(self, client_id: str, quota: int, now: int) -> bool:
        """Take one job of ``client_id``'s ``quota`` for the month of ``now``
        (epoch ms); False when it is used up."""
        expires = next_month_ms(now) + _DAY_MS
        with unavailable("checking the monthly quota"):
            key = self._quota_key(client_id, now)
            taken = await self._client.run(_TAKE, [key], [quota, expires])
        return bool(taken)

    async def give_back(self, client_id: str, now: int) -> None:
        """Return a job taken with :meth:`take` at ``now``."""
        with unavailable("returning a job to the monthly quota"):
            await self._client.run(_GIVE_BACK, [self._quota_key(client_id, now)], [])

    def _quota_key(self, client_id: str, now: int) -> str:
        return self._keys.quota(client_id, utc_month(now))
