"""History in Redis (``REDIS_URL`` set and ``HISTORY_DATABASE_URI`` not), so
every orchestrator instance on one Redis reads and writes the same histories.

Each job's events are a sorted set, :meth:`Keys.history`:

- member: the HistoryEvent bytes. A batch written twice (the writer retries
  when the connection dropped and it cannot know whether the script ran)
  adds nothing the second time, because ``ZADD NX`` finds the same bytes;
- score: ``timestamp_ms + n / 1024``, where ``n`` counts the job's events
  already kept for that millisecond. So events are listed by time, as the
  database backends list them (instances' writers lag each other, so write
  order is not time order), and events of one millisecond (one commit's
  several events) keep the order they were written in. Scores stay exact
  doubles until the year 2248.

Bounds: each job keeps its last ``HISTORY_MEMORY_EVENTS_PER_JOB`` events.
The storage's retention sweep deletes the set with its job; as a second
guard, the set of an ended job (a ``job_ended`` or webhook event written)
expires ``JOB_RETENTION_SECONDS`` after its last write, and so does a set
that a write creates without the job's ``job_created`` event (events written
after the job was forgotten, or whose start was dropped by a full queue).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

from avtomatika.config import Settings
from avtomatika.engine.events import E
from avtomatika.errors import Unavailable
from avtomatika.storage.redis import Keys, Pipelined, Script, connect_pipelined, unavailable
from avtomatika.v1.history_pb2 import HistoryEvent

__all__ = ["RedisHistory"]

# Events after which the job changes no more: its history may expire.
_ENDED = frozenset(
    {
        E.HISTORY_EVENT_TYPE_JOB_ENDED,
        E.HISTORY_EVENT_TYPE_WEBHOOK_DELIVERED,
        E.HISTORY_EVENT_TYPE_WEBHOOK_FAILED,
    }
)
# Marks per job in the script's arguments.
_MARK_ENDED = "e"
_MARK_STARTED = "s"
_MARK_NONE = "-"

# KEYS: the history set of each job in the batch.
# ARGV: cap (events kept per job), ttl_ms (expiry of an ended job's set),
#   then for each key in KEYS order: mark (e: ended, s: has job_created,
#   -: neither), the number of runs, and each run of consecutive events of
#   one millisecond: timestamp_ms, n, and n event bytes, oldest first.
# Returns: how many events were added (duplicates are not).
_APPEND = Script("""
local cap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local at = 3
local added = 0
for k = 1, #KEYS do
  local key = KEYS[k]
  local mark = ARGV[at]
  local runs = tonumber(ARGV[at + 1])
  at = at + 2
  local had = redis.call('ZCARD', key)
  -- The job's events in one ZADD (a few, past unpack's limit). Those
  -- already kept for a run's millisecond go first: the set's, counted the
  -- first time the batch has that millisecond (none if the set is empty),
  -- then those of the batch's earlier runs.
  local scored, kept, new = {}, {}, 0
  -- NX: an event written before (a retried batch) keeps its place.
  local function add()
    if #scored > 0 then new = new + redis.call('ZADD', key, 'NX', unpack(scored)) end
    scored = {}
  end
  for _ = 1, runs do
    local ts = tonumber(ARGV[at])
    local n = tonumber(ARGV[at + 1])
    at = at + 2
    local before = kept[ts]
    if not before then
      before = had > 0 and redis.call('ZCOUNT', key, ts, '(' .. (ts + 1)) or 0
    end
    kept[ts] = before + n
    for i = 0, n - 1 do
      -- %.17g: Lua's own number-to-string would round the score.
      scored[#scored + 1] = string.format('%.17g', ts + math.min(before + i, 1023) / 1024)
      scored[#scored + 1] = ARGV[at + i]
      if #scored == 1000 then add() end  -- unpack has a limit
    end
    at = at + n
  end
  add()
  added = added + new
  if had + new > cap then
    redis.call('ZREMRANGEBYRANK', key, 0, -(cap + 1))
  end
  if mark == 'e' or (mark == '-' and had == 0) then
    redis.call('PEXPIRE', key, ttl)
  end
end
return added
""")


class RedisHistory:
    """A :class:`~avtomatika.history.HistorySink` on a Redis client it owns."""

    def __init__(self, client: Pipelined, settings: Settings) -> None:
        self._client: Pipelined | None = client
        self._keys = Keys(settings.redis_prefix)
        self._cap = settings.history_memory_events_per_job
        self._ttl_ms = max(1, int(settings.job_retention_seconds * 1000))

    @classmethod
    async def open(cls, settings: Settings) -> RedisHistory:
        """Connect to ``REDIS_URL``
        (:class:`~avtomatika.errors.ConfigError` if it does not answer)."""
        return cls(
            await connect_pipelined(
                settings.redis_url or "", timeout=settings.redis_command_timeout_seconds
            ),
            settings,
        )

    async def append(self, events: Sequence[HistoryEvent]) -> None:
        if not events:
            return
        by_job: dict[str, list[HistoryEvent]] = {}
        for item in events:
            by_job.setdefault(item.job_id, []).append(item)
        keys: list[str] = []
        args: list[bytes | str | int] = [self._cap, self._ttl_ms]
        for job_id, kept in by_job.items():
            keys.append(self._keys.history(job_id))
            runs = [list(run) for _, run in groupby(kept, key=lambda e: e.timestamp_ms)]
            args += [_mark(kept), len(runs)]
            for run in runs:
                args += [run[0].timestamp_ms, len(run), *(e.SerializeToString() for e in run)]
        with unavailable("writing job history"):
            await self._open().run(_APPEND, keys, args)

    async def list_for_job(self, job_id: str) -> list[HistoryEvent]:
        with unavailable("reading job history"):
            kept = await self._open().execute("ZRANGE", self._keys.history(job_id), 0, -1)
        return [HistoryEvent.FromString(raw) for raw in kept]

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _open(self) -> Pipelined:
        if self._client is None:
            raise Unavailable("the job history store is closed")
        return self._client


def _mark(events: Sequence[HistoryEvent]) -> str:
    if any(item.type in _ENDED for item in events):
        return _MARK_ENDED
    if any(item.type == E.HISTORY_EVENT_TYPE_JOB_CREATED for item in events):
        return _MARK_STARTED
    return _MARK_NONE
