"""Where each worker is, in Redis, for every instance to see.

Per worker, two keys (see :class:`~avtomatika.storage.redis.Keys`):

- ``workers`` (a hash) maps its id to its WorkerInfo bytes, as the instance
  that last saw it wrote them: what ``GET /api/v1/workers`` lists;
- ``alive:<worker>`` says whether and where it lives, until its TTL passes:

  ============== ==============================================================
  ``<instance>`` its stream or WebSocket is on that instance (cancels go there)
  ``s:<inst>``   a REST worker, last seen by that instance, with no connection
  ``g:<inst>``   its connection to that instance ended; in its grace period
  ============== ==============================================================

The TTL is how long silence means death: for a gRPC worker three heartbeat
intervals plus the reconnect grace (an instance killed with ``kill -9``
stops refreshing it, and its workers get the grace to reconnect elsewhere);
for a REST worker its TTL (``2 x WORKER_HEALTH_CHECK_INTERVAL_SECONDS``).
Each instance refreshes the keys of the workers it holds or saw since the
last refresh, once a heartbeat interval (at most a third of the REST TTL),
in one pipeline. A refresh that finds the worker held by another instance
since closes the connection here: the worker opened a newer one there, and
as with a second stream on one instance, the newest connection wins.

A worker whose ``alive`` key lapsed while its hash entry remains is dead:
every instance sweeps for such entries, and the one whose script removes the
entry re-queues the tasks leased to the worker (``RedisStorage.leased_to``),
so a dead instance's workers' leases are re-queued once, by one survivor.
:meth:`RedisPresence.may_release` is the same claim for an instance ending a
grace period or a REST TTL itself: it wins only if no other instance holds
the worker since. ``engine.requeue_task`` is lease-guarded, so should two
instances both re-queue a task, the second does nothing.

Cancels forwarded to this instance arrive over pub/sub, which loses what is
published while the subscription is down: once it is back, the tasks leased
to the workers connected here are read from the store, and those cancelled
meanwhile are pushed to their workers.

Writes leave this process in one background flusher that writes each
worker's *current* local state, never a log of changes: however the
writes interleave with changes, the last one written is the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from avtomatika.config import Settings
from avtomatika.engine.registry import Requeue, WorkerRegistry
from avtomatika.errors import Unavailable
from avtomatika.storage.redis import DOWN, Keys, Subscriber, run_forever, unavailable
from avtomatika.v1 import task_pb2, worker_pb2
from avtomatika.v1.task_pb2 import Task
from avtomatika.v1.worker_pb2 import WorkerInfo
from avtomatika.v1.worker_service_pb2 import CancelTask

__all__ = ["RedisPresence"]

log = logging.getLogger(__name__)

LeasedTo = Callable[[str], Awaitable[list[str]]]
"""``leased_to(worker_id)``: the storage's ids of tasks leased to a worker."""
ReadTasks = Callable[[list[str]], Awaitable[list[Task | None]]]
"""``read_tasks(task_ids)``: the storage's records of those tasks, in order."""

# KEYS[1] alive key, KEYS[2] workers hash.
# ARGV[1] mode: "held", "seen", "away" or "gone"; ARGV[2] this instance's id;
# ARGV[3] TTL in ms; ARGV[4] worker id; ARGV[5] WorkerInfo bytes; ARGV[6] "1"
# for a refresh of a connection already announced.
# held: the key names this instance for the TTL, the hash gets the record; a
#   refresh finding another instance there writes nothing and returns -1 (the
#   worker connected there since: the connection here is superseded).
# seen: the same as "s:<instance>", unless another instance holds the worker's
#   connection: then only its TTL is extended (never shortened).
# away: "g:<instance>" for the grace (ARGV[3]) if this instance was the holder.
# gone: both deleted if they are this instance's.
# Returns 1 when it wrote something, else 0 (or -1, above).
_ANNOUNCE = """
local alive, me, ttl = KEYS[1], ARGV[2], tonumber(ARGV[3])
local mode = ARGV[1]
local v = redis.call('GET', alive)
local mine = (v == me or v == 'g:' .. me or v == 's:' .. me)
if mode == 'held' then
  if ARGV[6] == '1' and v and not mine
     and string.sub(v, 1, 2) ~= 's:' and string.sub(v, 1, 2) ~= 'g:' then
    return -1
  end
  redis.call('SET', alive, me, 'PX', ttl)
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
  return 1
elseif mode == 'seen' then
  if v and string.sub(v, 1, 2) ~= 's:' and string.sub(v, 1, 2) ~= 'g:' then
    if redis.call('PTTL', alive) < ttl then
      redis.call('PEXPIRE', alive, ttl)
    end
  else
    redis.call('SET', alive, 's:' .. me, 'PX', ttl)
  end
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
  return 1
elseif mode == 'away' then
  if not v or mine then
    redis.call('SET', alive, 'g:' .. me, 'PX', ttl)
    return 1
  end
  return 0
elseif mine then
  redis.call('DEL', alive)
  redis.call('HDEL', KEYS[2], ARGV[4])
  return 1
end
return 0
"""

# KEYS[1] alive key, KEYS[2] workers hash; ARGV[1] this instance's id,
# ARGV[2] worker id. The worker's leases may be re-queued by this instance
# when no other holds or saw it since: the key is absent or this instance's.
# Then both keys are deleted. Returns 1 if so, else 0.
_RELEASE = """
local v = redis.call('GET', KEYS[1])
local me = ARGV[1]
if not v or v == me or v == 'g:' .. me or v == 's:' .. me then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] alive key, KEYS[2] workers hash; ARGV[1] worker id.
# A worker is dead when its alive key lapsed: its hash entry is removed.
# Returns 1 to the one caller that removed it (that caller re-queues its
# leases), 0 to anyone else or if the worker lives.
_BURY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
return redis.call('HDEL', KEYS[2], ARGV[1])
"""

# Refreshes per REST TTL.
_REFRESHES_PER_TTL = 3
_MIN_PERIOD = 0.05
_REAPED_KEPT = 100
_MAX_PERIOD = 5.0


@dataclass(slots=True)
class _Local:
    """What this instance last told the registry about one worker."""

    mode: str
    info: WorkerInfo | None = None
    grace_ms: int = 0
    written_seen_ms: int = 0
    """``info.last_seen_ms`` when last written (seen workers are refreshed
    only after a new sign of life)."""
    announced: bool = False
    """Written once: later writes of a held worker are refreshes."""


class RedisPresence:
    """:class:`~avtomatika.presence.Presence` on Redis, for one instance's
    :class:`WorkerRegistry`. A service: :meth:`start` begins flushing,
    refreshing and sweeping, :meth:`stop` ends them."""

    def __init__(
        self,
        client: Any,
        keys: Keys,
        instance_id: str,
        settings: Settings,
        registry: WorkerRegistry,
        *,
        leased_to: LeasedTo,
        read_tasks: ReadTasks,
        requeue: Requeue,
        subscriber: Subscriber,
    ) -> None:
        """Joins ``registry`` (becomes its presence) and listens for
        forwarded cancels on ``subscriber`` (not started yet)."""
        self._client = client
        self._keys = keys
        self.instance_id = instance_id
        self._registry = registry
        self._leased_to = leased_to
        self._read_tasks = read_tasks
        self._requeue = requeue
        heartbeat = settings.worker_heartbeat_interval_seconds
        self._grpc_ttl_ms = int((3 * heartbeat + settings.worker_reconnect_grace_seconds) * 1000)
        self._rest_ttl_ms = int(2 * settings.worker_health_check_interval_seconds * 1000)
        # Once a heartbeat interval (a worker's TTL is at least three), and
        # a third of the REST TTL: a refresh may be a whole period late and
        # the key must still be alive.
        shortest = min(heartbeat, self._rest_ttl_ms / 1000 / _REFRESHES_PER_TTL)
        self.period = min(max(shortest, _MIN_PERIOD), _MAX_PERIOD)
        """Seconds between refreshes, and between sweeps for dead workers."""
        self._announce = client.register_script(_ANNOUNCE)
        self._release = client.register_script(_RELEASE)
        self._bury = client.register_script(_BURY)
        self._local: dict[str, _Local] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        # Loops also stop on this flag: redis-py may swallow a cancel that
        # lands mid-command, and a loop that missed it must still end.
        self._running = False
        self.reaped: deque[str] = deque(maxlen=_REAPED_KEPT)
        """Ids of the latest dead workers this instance buried (for tests)."""
        registry.presence = self
        subscriber.on(keys.cancel_channel, self._on_cancel)
        subscriber.on_reconnect(self._after_outage)
        self._catching_up: asyncio.Task[None] | None = None

    # -- lifecycle --

    async def start(self) -> None:
        if not self._loops:
            self._running = True
            self._loops = [
                asyncio.create_task(self._flush_forever(), name="avtomatika-presence"),
                asyncio.create_task(self._sweep_forever(), name="avtomatika-presence-sweep"),
            ]

    async def stop(self) -> None:
        """Stop the loops after one last flush (best effort: the keys of a
        stopped instance lapse by themselves)."""
        loops, self._loops = self._loops, []
        if not loops:
            return
        self._running = False
        try:
            await self._flush(self._take_dirty())
        except Exception as exc:
            log.debug("worker presence: last flush failed (%s); the keys lapse by themselves", exc)
        self._wake.set()
        if self._catching_up is not None:
            loops.append(self._catching_up)
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    # -- what the registry tells (synchronous: recorded, written soon) --

    def held(self, info: WorkerInfo) -> None:
        self._set(info.registration.worker_id, _Local("held", info))

    def seen(self, info: WorkerInfo) -> None:
        self._set(info.registration.worker_id, _Local("seen", info))

    def away(self, worker_id: str, grace_seconds: float) -> None:
        self._set(worker_id, _Local("away", grace_ms=max(1, int(grace_seconds * 1000))))

    def gone(self, worker_id: str) -> None:
        self._set(worker_id, _Local("gone"))

    def _set(self, worker_id: str, local: _Local) -> None:
        self._local[worker_id] = local
        self._dirty.add(worker_id)
        self._wake.set()

    # -- what the registry asks --

    async def leases(self, worker_id: str) -> list[str]:
        return await self._leased_to(worker_id)

    async def may_release(self, worker_id: str) -> bool:
        local = self._local.get(worker_id)
        if local is not None and local.mode == "held":
            return False  # it came back here meanwhile
        with unavailable(f"checking where worker {worker_id} is"):
            released = await self._release(
                [self._keys.worker_alive(worker_id), self._keys.workers],
                [self.instance_id, worker_id],
            )
        if local is not None and local.mode != "seen" and self._local.get(worker_id) is local:
            # Released here, or held elsewhere now: nothing left to write.
            del self._local[worker_id]
        return bool(released)

    async def forward_cancel(self, worker_id: str, task_id: str, job_id: str, reason: str) -> bool:
        try:
            holder = await self._client.get(self._keys.worker_alive(worker_id))
            if not _is_instance(holder) or holder.decode() == self.instance_id:
                return False  # not connected anywhere (the registry tried here)
            message = CancelTask(task_id=task_id, job_id=job_id, reason=reason)
            receivers = await self._client.publish(
                self._keys.cancel_channel, worker_id.encode() + b"\n" + message.SerializeToString()
            )
        except DOWN as exc:
            # The job is cancelled already; the worker learns it later (its
            # result is refused, a REST worker's next heartbeat says so).
            log.warning("cancel of task %s not forwarded: Redis is unreachable (%s)", task_id, exc)
            return False
        return bool(receivers)

    async def workers(self, local: list[WorkerInfo]) -> list[WorkerInfo]:
        with unavailable("listing the workers"):
            records: dict[bytes, bytes] = await self._client.hgetall(self._keys.workers)
            ids = [key.decode() for key in records]
            here = {info.registration.worker_id for info in local}
            others = [worker_id for worker_id in sorted(ids) if worker_id not in here]
            alive = (
                await self._client.mget([self._keys.worker_alive(w) for w in others])
                if others
                else []
            )
        result = list(local)
        for worker_id, holder in zip(others, alive, strict=True):
            if holder is not None and not holder.startswith(b"g:"):
                result.append(WorkerInfo.FromString(records[worker_id.encode()]))
        return result

    async def lookup(self, worker_id: str) -> WorkerInfo | None:
        with unavailable(f"looking up worker {worker_id}"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(self._keys.worker_alive(worker_id))
                pipe.hget(self._keys.workers, worker_id)
                holder, record = await pipe.execute()
        if holder is None or holder.startswith(b"g:") or record is None:
            return None
        return WorkerInfo.FromString(record)

    # -- cancels from other instances --

    def _on_cancel(self, data: bytes) -> None:
        worker_id, _, body = data.partition(b"\n")
        try:
            cancel = CancelTask.FromString(body)
        except Exception:
            log.warning("a malformed cancel message on the cancel channel was ignored")
            return
        # Whoever holds the worker's connection pushes (the sender went by
        # the alive key, which may lag a reconnect by one refresh).
        self._registry.push_here(worker_id.decode(), cancel.task_id, cancel.job_id, cancel.reason)

    def _after_outage(self) -> None:
        """Pub/sub is back: the cancels forwarded while it was down are lost.
        Catch up from the store instead."""
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.create_task(
                self._push_missed_cancels(), name="avtomatika-presence-catch-up"
            )

    async def _push_missed_cancels(self) -> None:
        """Tell the workers connected here of every task of theirs that was
        cancelled (a worker told twice ignores the second)."""
        held = [
            (worker_id, task_id)
            for worker_id, task_ids in self._registry.leases_here().items()
            for task_id in task_ids
        ]
        if not held:
            return
        try:
            tasks = await self._read_tasks([task_id for _, task_id in held])
        except Unavailable as exc:
            log.warning("cancels sent during the pub/sub outage not looked for: %s", exc)
            return
        for (worker_id, task_id), task in zip(held, tasks, strict=True):
            if task is not None and task.state == task_pb2.TASK_STATE_CANCELLED:
                reason = "the job was cancelled while this instance's pub/sub was down"
                self._registry.push_here(worker_id, task_id, task.job_id, reason)

    # -- writing --

    def _take_dirty(self) -> set[str]:
        dirty, self._dirty = self._dirty, set()
        self._wake.clear()
        return dirty

    async def _flush_forever(self) -> None:
        due = 0.0
        loop = asyncio.get_running_loop()

        async def flush_when_due() -> None:
            nonlocal due
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a
            # cancel that arrives as the event is set, and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, due - loop.time())):
                    await self._wake.wait()
            if loop.time() >= due:
                due = loop.time() + self.period
                self._mark_stale()
            dirty = self._take_dirty()
            if not dirty:
                return
            try:
                await self._flush(dirty)
            except DOWN:
                self._dirty |= dirty  # written once Redis is back
                raise

        await run_forever("worker presence", flush_when_due, running=lambda: self._running)

    def _mark_stale(self) -> None:
        """Mark for writing the workers whose keys need refreshing: those
        held here, and those seen here since their last write."""
        for worker_id, local in self._local.items():
            if local.mode == "held" or (
                local.mode == "seen"
                and local.info is not None
                and local.info.last_seen_ms > local.written_seen_ms
            ):
                self._dirty.add(worker_id)

    async def _flush(self, dirty: set[str]) -> None:
        written: list[tuple[str, _Local]] = []
        async with self._client.pipeline(transaction=False) as pipe:
            for worker_id in sorted(dirty):
                local = self._local.get(worker_id)
                if local is None:
                    continue
                info = local.info
                ttl = local.grace_ms if info is None else self._ttl_ms(info)
                record = b"" if info is None else info.SerializeToString()
                refresh = "1" if local.announced else "0"
                await self._announce(
                    [self._keys.worker_alive(worker_id), self._keys.workers],
                    [local.mode, self.instance_id, ttl, worker_id, record, refresh],
                    client=pipe,
                )
                written.append((worker_id, local))
            outcomes = await pipe.execute()
        for (worker_id, local), outcome in zip(written, outcomes, strict=True):
            local.announced = True
            if outcome == -1 and self._local.get(worker_id) is local:
                # A newer connection of the worker is on another instance,
                # as when a second stream replaces the first here.
                log.info(
                    "worker %s connected to another instance; closing its connection here",
                    worker_id,
                )
                self._registry.supersede(worker_id)
            if local.info is not None:
                local.written_seen_ms = local.info.last_seen_ms
            if local.mode == "gone" and self._local.get(worker_id) is local:
                del self._local[worker_id]

    def _ttl_ms(self, info: WorkerInfo) -> int:
        if info.transport == worker_pb2.WORKER_TRANSPORT_REST:
            return self._rest_ttl_ms
        return self._grpc_ttl_ms

    # -- dead workers --

    async def _sweep_forever(self) -> None:
        async def sweep_after_a_period() -> None:
            await asyncio.sleep(self.period)
            await self.sweep()

        await run_forever("dead worker sweep", sweep_after_a_period, running=lambda: self._running)

    async def sweep(self) -> list[str]:
        """Bury the workers whose ``alive`` key lapsed and re-queue their
        leases; the ids this instance buried."""
        ids = [key.decode() for key in await self._client.hkeys(self._keys.workers)]
        if not ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.exists(self._keys.worker_alive(worker_id))
            alive = await pipe.execute()
        buried = []
        for worker_id, lives in zip(ids, alive, strict=True):
            if lives or worker_id in self._registry_ids():
                continue
            keys = [self._keys.worker_alive(worker_id), self._keys.workers]
            if await self._bury(keys, [worker_id]):
                buried.append(worker_id)
                await self._requeue_all(worker_id)
        self.reaped.extend(buried)
        return buried

    def _registry_ids(self) -> set[str]:
        return {w for w, local in self._local.items() if local.mode in ("held", "seen")}

    async def _requeue_all(self, worker_id: str) -> None:
        task_ids = await self._leased_to(worker_id)
        log.warning(
            "worker %s is gone from every instance; re-queueing its %d task(s)",
            worker_id,
            len(task_ids),
        )
        for task_id in task_ids:
            try:
                await self._requeue(task_id, worker_id, "worker lost with its instance")
            except Exception:
                log.exception("worker %s: re-queueing task %s failed", worker_id, task_id)


def _is_instance(holder: bytes | None) -> bool:
    """Whether an ``alive`` value names the instance holding a connection."""
    return holder is not None and not holder.startswith((b"s:", b"g:"))
