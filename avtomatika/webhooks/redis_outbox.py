"""The webhook outbox in Redis (``REDIS_URL``): deliveries survive a restart
of the orchestrator, and the senders of every instance take from one outbox,
so each webhook is sent once cluster-wide.

Layout:

- :attr:`Keys.outbox`, a sorted set: delivery id -> when it is next due
  (epoch ms);
- :meth:`Keys.delivery`, a hash per delivery: ``j`` the Job bytes as the job
  ended, ``a`` the attempts made. The job is the existing protobuf message;
  the attempt count is a hash field rather than part of a new message so that
  taking a delivery can count its attempt with one ``HINCRBY``.

A delivery's id is the id of the job's ``job_ended`` event, so writing it
twice (a retry after a dropped connection) leaves one delivery.

Taking is a claim: the script re-scores the id to ``now + lease``, so while
the taker attempts it no other instance sees it due, and if the taker dies
the lease lapses and another instance (or the restarted one) takes it again.
The lease outlasts an attempt (``WEBHOOK_TIMEOUT_SECONDS`` plus a margin);
each claim counts an attempt, so a delivery whose sender keeps crashing still
ends after ``WEBHOOK_MAX_ATTEMPTS``.

Guarantees: in the normal case a webhook is sent once; a crash or a Redis
outage between a send and its ``done`` can send it again (receivers drop
duplicates by the ``X-Avtomatika-Delivery`` header). A job that ends while
this process cannot write to Redis has its delivery held in memory (bounded
by the sender's capacity) and written when Redis is back; one still unwritten
when the process stops is recorded as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from redis.commands.core import AsyncScript

from avtomatika.clock import now_ms
from avtomatika.config import Settings
from avtomatika.storage.redis import (
    DOWN,
    Keys,
    Outage,
    Redis,
    check_cancelled,
    connect,
    until_up,
)
from avtomatika.v1.job_pb2 import Job
from avtomatika.webhooks.delivery import Delivery

__all__ = ["RedisOutbox"]

log = logging.getLogger(__name__)

_LEASE_MARGIN_SECONDS = 30.0
_POLL_SECONDS = 1.0
_JOB = "j"
_ATTEMPTS = "a"

# KEYS[1]: the outbox (sorted set: delivery id -> due, epoch ms).
# ARGV[1]: now (epoch ms), ARGV[2]: the lease (ms), ARGV[3]: the prefix of
#   delivery keys (Keys.delivery of ''), in the outbox's hash slot.
# Returns {id, attempts including this one, Job bytes} for a due delivery,
# now claimed (due again at now + lease) with its attempt counted; else
# {when the next one is due (epoch ms)}, or {-1} when there is none.
_CLAIM = """
local now = tonumber(ARGV[1])
while true do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
  if #due == 0 then
    break
  end
  local id = due[1]
  local key = ARGV[3] .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), id)
    local attempts = redis.call('HINCRBY', key, 'a', 1)
    return {id, attempts, redis.call('HGET', key, 'j')}
  end
  -- An id without its delivery has nothing left to send.
  redis.call('ZREM', KEYS[1], id)
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #next == 0 then
  return {-1}
end
return {math.floor(tonumber(next[2]))}
"""


class RedisOutbox:
    """An :class:`~avtomatika.webhooks.outbox.Outbox` in Redis, on a client
    it opens and closes itself."""

    durable = True

    def __init__(
        self,
        settings: Settings,
        *,
        lease_seconds: float | None = None,
        poll_seconds: float = _POLL_SECONDS,
    ) -> None:
        self._settings = settings
        self._keys = Keys(settings.redis_prefix)
        if lease_seconds is None:
            lease_seconds = settings.webhook_timeout_seconds + _LEASE_MARGIN_SECONDS
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._poll = poll_seconds
        self._client: Redis | None = None
        self._claim: AsyncScript | None = None
        # Deliveries of jobs that ended here, not yet in Redis.
        self._intake: asyncio.Queue[Delivery] = asyncio.Queue()
        self._writing: Delivery | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._taking = asyncio.Lock()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    @property
    def backlog(self) -> int:
        return self._intake.qsize() + (self._writing is not None) + self._busy

    async def open(self) -> None:
        assert self._settings.redis_url is not None
        client = await connect(
            self._settings.redis_url, timeout=self._settings.redis_command_timeout_seconds
        )
        self._client = client
        self._claim = client.register_script(_CLAIM)
        self._writer = asyncio.create_task(self._write_loop(client), name="webhook-outbox")

    def put(self, delivery: Delivery) -> None:
        self._intake.put_nowait(delivery)

    async def take(self) -> Delivery:
        # One claimer at a time per process: idle senders cost one poll.
        async with self._taking:
            outage = Outage("webhook outbox")
            while True:
                check_cancelled()
                if self._closing:
                    await asyncio.Event().wait()  # until the sender is cancelled
                self._wake.clear()  # before claiming: a put from now on wakes us
                try:
                    found = await self._claim_one()
                except DOWN as exc:
                    await outage.wait(exc)
                    continue
                check_cancelled()
                outage.over()
                if isinstance(found, Delivery):
                    self._busy += 1
                    self._idle.clear()
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), found)

    async def retry(self, delivery: Delivery, delay: float) -> None:
        due = now_ms() + int(delay * 1000)
        try:
            await self._redis().zadd(self._keys.outbox, {delivery.delivery_id: due}, xx=True)
        except DOWN as exc:
            # Still claimed: it is due again when the lease lapses.
            log.warning("webhook %s: retry not scheduled (%s)", delivery.delivery_id, exc)
        finally:
            self._settle()
        self._wake.set()

    async def done(self, delivery: Delivery) -> None:
        try:
            # Until it is forgotten, the lease's end would send it again.
            await until_up("webhook outbox", self._forget, delivery)
        finally:
            self._settle()

    async def _forget(self, delivery: Delivery) -> None:
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.zrem(self._keys.outbox, delivery.delivery_id)
            pipe.delete(self._keys.delivery(delivery.delivery_id))
            await pipe.execute()

    async def drain(self) -> None:
        self._closing = True
        await self._intake.join()
        await self._idle.wait()

    async def close(self, interrupted: Sequence[Delivery]) -> list[Delivery]:
        self._closing = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        lost = [self._writing] if self._writing is not None else []
        self._writing = None
        while not self._intake.empty():
            lost.append(self._intake.get_nowait())
            self._intake.task_done()
        client, self._client = self._client, None
        if client is None:
            return lost
        if interrupted:
            # Due at once, for the next instance, rather than when the lease lapses.
            due = {delivery.delivery_id: now_ms() for delivery in interrupted}
            with contextlib.suppress(*DOWN):
                await client.zadd(self._keys.outbox, due, xx=True)
        await client.aclose()
        return lost

    async def _claim_one(self) -> Delivery | float:
        """A claimed delivery, or the seconds to sleep before looking again."""
        assert self._claim is not None
        now = now_ms()
        args: list[str | int] = [now, self._lease_ms, self._keys.delivery("")]
        found = await self._claim([self._keys.outbox], args)
        if len(found) == 3:
            delivery_id, attempts, job = found
            return Delivery(Job.FromString(job), delivery_id.decode(), int(attempts))
        next_due = int(found[0])
        wait = self._poll if next_due < 0 else (next_due - now) / 1000
        return min(max(wait, 0.001), self._poll)

    async def _write_loop(self, client: Redis) -> None:
        while True:
            delivery = self._writing = await self._intake.get()
            await until_up("webhook outbox", self._add, client, delivery)
            self._writing = None
            self._intake.task_done()
            self._wake.set()
            check_cancelled()

    async def _add(self, client: Redis, delivery: Delivery) -> None:
        key = self._keys.delivery(delivery.delivery_id)
        async with client.pipeline(transaction=True) as pipe:
            # NX everywhere: written again, it is still one delivery, and one
            # already claimed keeps its lease and its attempt count.
            pipe.hsetnx(key, _JOB, delivery.job.SerializeToString())
            pipe.hsetnx(key, _ATTEMPTS, 0)
            pipe.zadd(self._keys.outbox, {delivery.delivery_id: now_ms()}, nx=True)
            await pipe.execute()

    def _settle(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    def _redis(self) -> Redis:
        assert self._client is not None
        return self._client
