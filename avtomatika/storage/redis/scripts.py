"""The Lua scripts behind :class:`~avtomatika.storage.redis.RedisStorage`.

Each script is one atomic step of the storage contract; Redis runs a script
to completion before any other command, which is what makes a commit's
version check and its writes one indivisible act across every instance.

Every script declares one key, the root (``KEYS[1]``, e.g. ``{avtomatika}``),
and derives the keys it touches from it with the names of
:meth:`Keys.lua_prelude`: they all share the root's hash tag, hence one
Cluster slot.

The scripts with many arguments (COMMIT, CLAIM) take them from a Python type
that names them (:class:`CommitArgs`, :class:`ClaimArgs`): its ``argv()``
lists them in the order of its fields, and the script binds them to Lua
locals of the same names, so the order is written once.

A task is a hash: ``d`` its Task bytes as last written by the engine, plus
fields the scripts change without re-encoding protobuf (Lua has no protobuf):
``st`` state, ``w`` worker, ``la`` leased-at ms, ``sq`` queue sequence, which
override the same fields of ``d`` when read (see ``storage._task``);
and what the scripts need to queue and time it: ``j`` job, ``k`` skill, ``p``
priority, ``c`` "1" when it has requirements, ``nb``/``dd``/``rd`` its
not-before, dispatch and result deadlines, ``qm`` its queue member while
queued, ``ca`` its creation time, ``cn`` the nonce of the claim that leased it. A job
is a hash: ``d`` Job bytes, ``v`` version, ``s`` status, ``c`` client id,
``p`` 1 when progress was recorded since the version was committed, ``b``
``<version>:<length of d>`` as that version was written (see `stored_size`).

What a task's state says is all there is to it elsewhere, and every script
keeps it so: a queued task, and only a queued one, is in its skill's queue;
a leased one in its worker's lease set; its timers are those its state and
deadlines call for (``timers_of``). So a script reads a task's fields once
and changes only what the move from its old state to its new one changes,
each Redis command a script calls costing the server about what a client's
command costs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

from avtomatika.status import TERMINAL
from avtomatika.storage.redis.keys import Keys
from avtomatika.v1 import job_pb2, task_pb2

__all__ = [
    "CLAIM",
    "COMMIT",
    "CREATE",
    "DUE",
    "GIVE_BACK",
    "HEAD",
    "NAMES",
    "RENEW",
    "RESERVE",
    "SET_PROGRESS",
    "STEP_DONE",
    "SWEEP",
    "TAKE",
    "TAKE_READY",
    "UNKEEP",
    "ClaimArgs",
    "CommitArgs",
    "CommitTask",
    "NewJob",
    "source",
]

# Shared by the scripts below: task bookkeeping, as MemoryStorage does it.
# Every Redis command a script calls costs about what a client's command
# costs the server, so each reads a task's fields once (task_of), writes
# them in one HSET, and touches a queue, a lease set or a timer only when
# the task's state says there is something there to change.
_LIBRARY = """
local QUEUED, LEASED, SCHEDULED, CANCELLED = {queued}, {leased}, {scheduled}, {cancelled}
local WAITING_FOR_HUMAN = {waiting_for_human}
local TERMINAL = {{{terminal}}}
local TIMER_KINDS = {{'release', 'dispatch', 'result'}}
local TASK_FIELDS = {{'st', 'w', 'qm', 'k', 'p', 'c', 'nb', 'dd', 'rd', 'sq', 'ca', 'cn', 'd'}}
local woken = {{}}
local tasks = {{}}

-- Whether Redis' clock has passed `deadline` (epoch ms; '0': none): a
-- write whose caller has given up by then refuses to run, so that a caller
-- that answered 503 is never contradicted by Redis waking up later with the
-- command still in its socket.
local function past(deadline)
  deadline = tonumber(deadline)
  if deadline <= 0 then return false end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline
end

local function is_live(st)
  return st == QUEUED or st == LEASED or st == SCHEDULED
end

-- Wake waiting workers of `skill` ("t:<skill>") or idle executors ("j"),
-- once per script run.
local function wake(what)
  if not woken[what] then
    woken[what] = true
    redis.call('PUBLISH', K.wake_channel, what)
  end
end

-- The fields of task `id` kept beside its bytes, read once per script run
-- (with its bytes `d` when `with_data`) and kept current by `move` and
-- `write`: st (nil: no such task), w ('' for none), qm (its queue member,
-- while it is queued), k, p, c, nb, dd, rd, sq, ca, cn.
local function task_of(id, with_data)
  local t = tasks[id]
  if t and (t.d or not with_data) then return t end
  local key = K.task(id)
  local f = redis.call('HMGET', key, unpack(TASK_FIELDS, 1, with_data and 13 or 12))
  t = {{id = id, key = key, st = tonumber(f[1]), w = f[2] or '', qm = f[3], k = f[4], p = f[5],
    c = f[6], nb = tonumber(f[7]) or 0, dd = tonumber(f[8]) or 0, rd = tonumber(f[9]) or 0,
    sq = f[10], ca = tonumber(f[11]) or 0, cn = f[12], d = with_data and f[13] or nil}}
  tasks[id] = t
  return t
end

-- The timers of a task in state `st`: kind -> due (epoch ms). A timer is
-- armed only by `retime`, and DUE keeps a fired one only while this still
-- holds, so these are exactly the timers a task has.
local function timers_of(st, nb, dd, rd)
  return {{
    release = st == SCHEDULED and nb or nil,
    dispatch = st == QUEUED and dd > 0 and dd or nil,
    result = is_live(st) and rd > 0 and rd or nil,
  }}
end

-- Arm the timers of state `st` (deadlines `nb`, `dd`, `rd`), disarming
-- those of the state `t` is leaving.
local function retime(t, st, nb, dd, rd)
  local old, new = timers_of(t.st, t.nb, t.dd, t.rd), timers_of(st, nb, dd, rd)
  local gone, due = {{}}, {{}}
  for _, kind in ipairs(TIMER_KINDS) do
    if new[kind] then
      due[#due + 1] = new[kind]
      due[#due + 1] = kind .. ':' .. t.id
    elseif old[kind] then
      gone[#gone + 1] = kind .. ':' .. t.id
    end
  end
  if #gone > 0 then redis.call('ZREM', K.timers, unpack(gone)) end
  if #due > 0 then redis.call('ZADD', K.timers, unpack(due)) end
end

-- The queue a task of skill `k` is in (`c` '1': it has requirements).
local function queue_of(k, c)
  return c == '1' and K.constrained(k) or K.queue(k)
end

-- Task `t` into state `st`, held by `worker` ('' for none), with deadlines
-- `nb`, `dd`, `rd`: out of its queue if it leaves one, the workers' lease
-- sets and its timers changed. The state goes into `fields`, the
-- field-value pairs the caller then writes.
local function move(t, st, worker, fields, nb, dd, rd)
  if t.st == QUEUED and st ~= QUEUED then
    redis.call('ZREM', queue_of(t.k, t.c), t.qm)
    redis.call('ZREM', K.queued_since(t.k), t.id)
    -- Gone with the entry: scripts of an earlier release, still running on
    -- instances not yet upgraded, take a task with `qm` for queued.
    redis.call('HDEL', t.key, 'qm')
    t.qm = nil
  end
  if t.st == LEASED and t.w ~= '' and (st ~= LEASED or worker ~= t.w) then
    redis.call('SREM', K.worker_leases(t.w), t.id)
  end
  if st == LEASED and not (t.st == LEASED and t.w == worker) then
    redis.call('SADD', K.worker_leases(worker), t.id)
  end
  retime(t, st, nb, dd, rd)
  fields[#fields + 1] = 'st'
  fields[#fields + 1] = st
  fields[#fields + 1] = 'w'
  fields[#fields + 1] = worker
  t.st, t.w, t.nb, t.dd, t.rd = st, worker, nb, dd, rd
end

-- Write `fields` (field-value pairs) into the task's hash.
local function write(t, fields)
  redis.call('HSET', t.key, unpack(fields))
end

-- Into the queue of skill `k` (`p` priority, `c` requirements): score
-- minus priority, member the zero-padded sequence and id, so the lowest
-- (score, member) is the highest priority, first queued. `seq` is kept
-- when a task goes back where it was. `since` is when it entered the queue
-- (a retry: when its backoff ended), for the dashboard's oldest queued
-- task per skill. Its queue member and sequence go into `fields`.
local function enqueue(t, seq, k, p, c, since, fields)
  if not seq then
    seq = redis.call('INCR', K.sequence)
  end
  local member = string.format('%020d', seq) .. ':' .. t.id
  redis.call('ZADD', queue_of(k, c), -tonumber(p), member)
  redis.call('ZADD', K.queued_since(k), since, t.id)
  redis.call('SADD', K.skills, k)
  fields[#fields + 1] = 'qm'
  fields[#fields + 1] = member
  fields[#fields + 1] = 'sq'
  fields[#fields + 1] = seq
  t.qm, t.sq, t.k, t.p, t.c = member, seq, k, p, c
  wake('t:' .. k)
end

-- When a task enters its queue: when its backoff ends, else when created.
local function queued_at(nb, ca)
  return nb > 0 and nb or ca
end

-- Queue a task that is not in its queue (its deadlines as they are).
local function requeue(t, seq)
  local fields = {{}}
  move(t, QUEUED, '', fields, t.nb, t.dd, t.rd)
  enqueue(t, seq, t.k, t.p, t.c, queued_at(t.nb, t.ca), fields)
  write(t, fields)
  redis.call('HDEL', t.key, 'la', 'cn')
end

-- Lease task `t` to `worker` at `now` under claim `nonce`; the fields to
-- write go into `fields` (the caller writes them, with its own).
local function lease(t, worker, now, nonce, fields)
  move(t, LEASED, worker, fields, t.nb, t.dd, t.rd)
  fields[#fields + 1] = 'la'
  fields[#fields + 1] = now
  fields[#fields + 1] = 'cn'
  fields[#fields + 1] = nonce
end

-- Where a retry of the claim with `nonce` finds what it leased (its reply
-- was lost): `ids`, comma-separated, for a minute.
local function remember_claim(nonce, ids)
  redis.call('SET', K.claim_nonce(nonce), ids, 'PX', 60000)
end

-- Task `id` as a reply ({{task id, Task bytes, sequence}}) if the claim
-- with `nonce` leased it to `worker` and the worker still holds it, else nil.
local function held(id, nonce, worker)
  local t = task_of(id, true)
  if t.cn == nonce and t.st == LEASED and t.w == worker then
    return {{id, t.d, t.sq}}
  end
  return nil
end

-- What the claim with `nonce` leased to `worker` that it still holds:
-- {{task id, Task bytes, sequence}} for each such task (the nonce's key
-- lists them, comma-separated), else nil. A retry after a lost reply gets
-- the same tasks again.
local function leased_by(nonce, worker)
  if nonce == '' then return nil end
  local ids = redis.call('GET', K.claim_nonce(nonce))
  if not ids then return nil end
  local found = {{}}
  for id in string.gmatch(ids, '[^,]+') do
    local one = held(id, nonce, worker)
    if one then
      for _, x in ipairs(one) do found[#found + 1] = x end
    end
  end
  if #found == 0 then return nil end
  return found
end

-- The job's handler must run: claimed at once by the calling instance,
-- which has an executor idle (`token` and its `lease_until`), or queued
-- for any instance (`token` '').
local function ready_job(id, token, lease_until)
  if token ~= '' then
    redis.call('ZADD', K.running, lease_until, id)
    redis.call('HSET', K.claims, id, token)
  else
    redis.call('RPUSH', K.ready, id)
    wake('j')
  end
end

-- A new job in its client's index (newest first by creation time, for
-- listing); SWEEP takes it out when the job is forgotten.
-- The job's hash keeps its client id (field 'c') so forgetting it finds
-- the index.
local function index_job(id, client, created)
  redis.call('ZADD', K.client_jobs(client), created, id)
end

-- One more (`by` 1) or one less (-1) of the client's jobs in `status`; a
-- count that reaches zero goes, so a client with no jobs left has no hash.
local function count_client(client, status, by)
  local counts = K.client_statuses(client)
  if redis.call('HINCRBY', counts, status, by) <= 0 then
    redis.call('HDEL', counts, status)
  end
end

-- The client's stored bytes (its job records) change by `by`; zero goes.
-- A client is in `clients` exactly while it has bytes stored, that is jobs:
-- the counts of every job are those of these clients summed.
local function count_bytes(client, by)
  if by == 0 then return end
  local stored = redis.call('INCRBY', K.client_bytes(client), by)
  if stored <= 0 then
    redis.call('DEL', K.client_bytes(client))
    redis.call('SREM', K.clients, client)
  elseif stored == by then
    redis.call('SADD', K.clients, client)  -- its first job
  end
end

-- The length of a job's stored record, from the fields `v`, `p` and `b`
-- of its hash as read: `b` says it for the version that wrote it, unless
-- progress replaced the record since (`p`) or a script of an earlier
-- release wrote the version without `b`; then the record is measured.
-- (Kept beside the record: one command less on every commit.)
local function stored_size(key, v, p, b)
  if b and p ~= '1' then
    local version, size = string.match(b, '^(%d+):(%d+)$')
    if version == v then return tonumber(size) end
  end
  return redis.call('HSTRLEN', key, 'd')
end

-- A new job at version 1. Its id is new: a caller that may be repeating
-- itself (a retry after a lost reply) checks first that it does not exist.
local function create_job(id, data, status, token, lease_until, client, created)
  redis.call('HDEL', K.client_reservations(client), id)  -- now counted as a job
  redis.call('HSET', K.job(id), 'd', data, 'v', 1, 's', status, 'c', client, 'b', '1:' .. #data)
  count_client(client, status, 1)
  count_bytes(client, #data)
  index_job(id, client, created)
  ready_job(id, token, lease_until)
end
"""


def _library() -> str:
    return _LIBRARY.format(
        queued=task_pb2.TASK_STATE_QUEUED,
        leased=task_pb2.TASK_STATE_LEASED,
        scheduled=task_pb2.TASK_STATE_SCHEDULED,
        cancelled=task_pb2.TASK_STATE_CANCELLED,
        waiting_for_human=job_pb2.JOB_STATUS_WAITING_FOR_HUMAN,
        terminal=", ".join(f"[{status}] = true" for status in sorted(TERMINAL)),
    )


def _unpack(names: Sequence[str], first: str) -> str:
    """Lua binding ``names``, as locals, to the ARGV elements from index
    ``first`` (a Lua expression) on: a script reads its arguments by the
    names the Python side fills them by, in the order that side defines."""
    last = f"{first} + {len(names) - 1}" if first != "1" else str(len(names))
    return f"local {', '.join(names)} = unpack(ARGV, {first}, {last})\n"


CREATE = """
-- Create a job at version 1 and queue it for the executor.
-- KEYS: root. ARGV: job id, Job bytes, status, claim token ('': queue it
-- for any instance) and its lease-until ms, its client's id and its
-- creation time (ms), the deadline (epoch ms, see `past`). Returns 1, or
-- 'expired' (nothing written) past the deadline unless the job exists.
-- A repeat (a retry after a lost reply, its first run applied) must not
-- count or queue it twice.
if redis.call('EXISTS', K.job(ARGV[1])) == 1 then return 1 end
if past(ARGV[8]) then return 'expired' end
create_job(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return 1
"""


class CommitTask(NamedTuple):
    """One task a COMMIT writes: its ARGV elements, in this order."""

    task_id: str
    data: bytes
    """Its Task bytes."""
    state: int
    worker: str
    """Its worker ('' unless leased, or ended in a lease)."""
    skill: str
    priority: str
    """The float's ``repr``, exact in Lua."""
    constrained: int
    """1 when it has requirements (it queues apart), else 0."""
    not_before: int
    dispatch_deadline: int
    result_deadline: int
    task_job: str
    """The id of the job it belongs to."""
    task_created: int
    """Its creation time (when it entered its queue, unless ``not_before``)."""


class NewJob(NamedTuple):
    """A job a COMMIT creates: its ARGV elements, in this order."""

    child_id: str
    child_record: bytes
    """Its Job bytes at version 1."""
    child_status: int
    child_client: str
    child_created: int
    """Its client's id and creation time, for the client's index."""


@dataclasses.dataclass(frozen=True, slots=True)
class CommitArgs:
    """COMMIT's ARGV by name. :meth:`argv` lists the fields in the order
    declared here, and the script binds them to Lua locals of the same
    names, so the order is written once."""

    job_id: str
    record: bytes
    """The Job bytes at the new version."""
    status: int
    """The new status."""
    expected_version: int
    """The version the change was made on; 0 creates the job."""
    lease_task: str
    """The task whose lease the change needs ('' for none)..."""
    lease_worker: str
    """... held by this worker, else the commit is 'lease_lost'."""
    ready: int
    """1: the job's handler must run (at :attr:`ready_at`); else 0."""
    ready_at: int
    now: int
    commit_nonce: str
    """A retry of a commit that was applied (its reply lost) is recognised
    by it for a minute and writes nothing again."""
    keep_token: str
    """The claim token on the job's next step when it is ready now and this
    instance keeps it ('': queued for any instance)..."""
    keep_until: int
    """... and that claim's lease-until ms."""
    client_id: str = ""
    """The job's client and..."""
    created_at: int = 0
    """... creation time: when the commit creates the job (expected version
    0), it enters the client's index by them."""
    hand_task: str = ""
    """The hand-off: a new task of :attr:`tasks` to lease at once ('' for
    none)..."""
    hand_worker: str = ""
    """... to this worker, waiting on the calling instance..."""
    hand_nonce: str = ""
    """... under this claim nonce."""
    approval_deadline: int = 0
    """When the job's wait for a human decision expires (epoch ms; 0: it
    does not wait for one, or without a timeout): an 'approval:<job id>'
    timer."""
    deadline: int = 0
    """Past this time of Redis' clock (epoch ms) the commit refuses to run
    and returns 'expired', unless it was applied already; 0: no deadline."""
    lease_nonce: str = ""
    """With :attr:`lease_task`: the lease must be the one taken under this
    claim nonce ('' for any)..."""
    unchanged: int = 0
    """... and with 1, no progress may have been recorded on the job since
    its last commit (else 'conflict'): the change was made on records this
    instance wrote itself (see :mod:`.recent`)."""
    tasks: Sequence[CommitTask] = ()
    withdraw: Sequence[str] = ()
    """Ids of tasks to cancel, if still live."""
    new_jobs: Sequence[NewJob] = ()

    def argv(self) -> list[Any]:
        """The script's ARGV: the fixed fields, then each list as a count
        and its elements."""
        args: list[Any] = [getattr(self, name) for name in _COMMIT_FIXED]
        args.append(len(self.tasks))
        for task in self.tasks:
            args += task
        args.append(len(self.withdraw))
        args += self.withdraw
        args.append(len(self.new_jobs))
        for child in self.new_jobs:
            args += child
        return args


_COMMIT_LISTS = ("tasks", "withdraw", "new_jobs")
_COMMIT_FIXED = tuple(f.name for f in dataclasses.fields(CommitArgs) if f.name not in _COMMIT_LISTS)

COMMIT = (
    """
-- The storage contract's commit (see Storage.commit).
-- KEYS: root.
-- ARGV: the fields of CommitArgs but its three lists, in its order (see
--   there what each means), bound to locals of the same names,
--   then a count and that many tasks of the fields of CommitTask each,
--   then a count and that many task ids to withdraw,
--   then a count and that many new jobs of the fields of NewJob each.
-- The hand-off happens only if the task's skill has nothing else queued
-- (no task is passed over) and the task has no requirements; otherwise the
-- task is queued as any other.
-- Returns 'ok', 'not_found', 'conflict', 'lease_lost' or 'expired' (past
-- the deadline, see `past`), or for 'ok' with
-- the hand-off done {task id, Task bytes, sequence}; nothing is written
-- unless it is 'ok' or the hand-off. A retry of a commit that was applied
-- (its reply lost; the nonce is kept a minute) writes nothing and returns
-- 'again', or the hand-off it made with a fourth element 'again': the job
-- may have moved on since.
"""
    + _unpack(_COMMIT_FIXED, "1")
    + """local job = K.job(job_id)
local f = redis.call('HMGET', job, 'v', 's', 'p', 'b')
if f[1] ~= (expected_version ~= '0' and expected_version) then
  -- Not the version expected: perhaps because this commit was applied
  -- (its reply lost), whatever the job has become since. Then the worker
  -- gets the task handed off to it, if it still holds it.
  if redis.call('EXISTS', K.commit_nonce(commit_nonce)) == 1 then
    local handed = hand_task ~= '' and held(hand_task, hand_nonce, hand_worker)
    if not handed then return 'again' end
    handed[4] = 'again'
    return handed
  end
  return f[1] and 'conflict' or 'not_found'
end
if past(deadline) then return 'expired' end
if unchanged == '1' and f[3] == '1' then return 'conflict' end
if lease_task ~= '' then
  local l = task_of(lease_task)
  if l.st ~= LEASED or l.w ~= lease_worker then return 'lease_lost' end
  if lease_nonce ~= '' and l.cn ~= lease_nonce then return 'lease_lost' end
end
-- Remembered a minute, so that a retry is recognised; already there, this
-- is a retry of a creation whose job has been forgotten since.
if not redis.call('SET', K.commit_nonce(commit_nonce), 1, 'NX', 'PX', 60000) then
  return 'again'
end
local old_status = f[2]
now = tonumber(now)
-- 'p': progress recorded since this version (SET_PROGRESS sets it).
local stored, size = 0, #record
if old_status then
  stored = stored_size(job, f[1], f[3], f[4])
  local version = tonumber(expected_version) + 1
  redis.call('HSET', job, 'd', record, 'v', version, 's', status, 'p', 0,
    'b', version .. ':' .. size)
else
  redis.call('HSET', job, 'd', record, 'v', 1, 's', status, 'c', client_id, 'p', 0,
    'b', '1:' .. size)
  redis.call('HDEL', K.client_reservations(client_id), job_id)  -- now counted as a job
  index_job(job_id, client_id, created_at)
end
count_bytes(client_id, size - stored)
if old_status ~= status then
  if old_status then count_client(client_id, old_status, -1) end
  count_client(client_id, status, 1)
  if TERMINAL[tonumber(status)] then
    redis.call('ZADD', K.ended, 'NX', now, job_id)
  elseif old_status and TERMINAL[tonumber(old_status)] then
    redis.call('ZREM', K.ended, job_id)  -- retried: retention no longer applies
  end
end
-- Only a job waiting for a human decision has an approval timer (DUE
-- drops one whose job waits no more).
if tonumber(status) == WAITING_FOR_HUMAN and tonumber(approval_deadline) > 0 then
  redis.call('ZADD', K.timers, approval_deadline, 'approval:' .. job_id)
elseif tonumber(old_status) == WAITING_FOR_HUMAN then
  redis.call('ZREM', K.timers, 'approval:' .. job_id)
end
-- Whatever step of this job an instance was running is over (a job is in
-- `running` exactly when it has a claim).
if old_status and redis.call('HDEL', K.claims, job_id) == 1 then
  redis.call('ZREM', K.running, job_id)
end

local handed
"""
    + f"local i = {len(_COMMIT_FIXED) + 1}\n"
    + """local n = tonumber(ARGV[i])
for _ = 1, n do
  """
    + _unpack(CommitTask._fields, "i + 1")
    + """  local st = tonumber(state)
  local t = task_of(task_id)
  if not t.st then redis.call('SADD', K.job_tasks(task_job), task_id) end
  local nb, dd, rd = tonumber(not_before), tonumber(dispatch_deadline), tonumber(result_deadline)
  local fields = {'d', data, 'k', skill, 'p', priority, 'c', constrained, 'nb', nb, 'dd', dd,
    'rd', rd, 'j', task_job, 'ca', task_created}
  if st == QUEUED and task_id == hand_task and t.st ~= QUEUED and constrained == '0'
      and redis.call('EXISTS', K.queue(skill), K.constrained(skill)) == 0 then
    -- Straight to the waiting worker: no queue entry, no wake-up, no claim.
    local seq = redis.call('INCR', K.sequence)
    move(t, LEASED, hand_worker, fields, nb, dd, rd)
    for _, x in ipairs({'sq', seq, 'la', now, 'cn', hand_nonce}) do fields[#fields + 1] = x end
    t.sq, t.cn = seq, hand_nonce
    handed = {task_id, data, seq}
  elseif st == QUEUED then
    local queued = t.st == QUEUED
    move(t, QUEUED, '', fields, nb, dd, rd)
    if not queued then
      enqueue(t, nil, skill, priority, constrained, queued_at(nb, tonumber(task_created)), fields)
    end
  else
    move(t, st, worker, fields, nb, dd, rd)
  end
  write(t, fields)
  t.k, t.p, t.c, t.ca = skill, priority, constrained, tonumber(task_created)
"""
    + f"  i = i + {len(CommitTask._fields)}\n"
    + """end

i = i + 1
n = tonumber(ARGV[i])
for _ = 1, n do
  i = i + 1
  local t = task_of(ARGV[i])
  if is_live(t.st) then
    local fields = {}
    move(t, CANCELLED, t.w, fields, t.nb, t.dd, t.rd)
    write(t, fields)
  end
end

i = i + 1
n = tonumber(ARGV[i])
for _ = 1, n do
  """
    + _unpack(NewJob._fields, "i + 1")
    + """  create_job(child_id, child_record, child_status, '', 0, child_client, child_created)
"""
    + f"  i = i + {len(NewJob._fields)}\n"
    + """end

if ready == '1' then
  local at = tonumber(ready_at)
  if at > now then
    redis.call('ZADD', K.timers, at, 'ready:' .. job_id)
  else
    ready_job(job_id, keep_token, keep_until)
  end
end
return handed or 'ok'
"""
)


class ClaimArgs(NamedTuple):
    """CLAIM's ARGV by name: :meth:`argv` lists the fields in this order,
    and the script binds them to Lua locals of the same names."""

    worker: str
    """The claiming worker's id."""
    now: int
    candidate: str
    """A task with requirements the caller checked the worker meets; ''
    when it has not looked at those tasks, '-' when none suits."""
    nonce: str
    """The claim's nonce: a retry of a claim that leased tasks returns
    those the worker still holds."""
    limit: int
    """The most tasks to lease."""
    deadline: int
    """Past this time of Redis' clock (epoch ms) the claim refuses to run
    and returns 'expired' (see `past`), unless it leased tasks already; 0:
    no deadline."""
    skills: Sequence[str]
    """The worker's skills (the rest of ARGV)."""

    def argv(self) -> list[Any]:
        """The script's ARGV."""
        return [*self[:-1], *self.skills]


CLAIM = (
    """
-- Lease `worker` up to `limit` of the best queued tasks of its skills, best
-- first: the lowest (score, member) over the heads of its plain queues and,
-- when given, one candidate task with requirements (which the caller checked
-- it meets; then only one task is leased, as other tasks with requirements
-- were not checked).
-- KEYS: root. ARGV: the fields of ClaimArgs in its order, the skills last.
-- Returns {task id, Task bytes, sequence, ...} (three per task), false when
-- nothing suits, 'scan' when tasks with requirements are queued for these
-- skills and the caller must pick a candidate among them first (Lua cannot
-- check them), or 'expired' past the deadline.
"""
    + _unpack(ClaimArgs._fields[:-1], "1")
    + f"local skills = {{unpack(ARGV, {len(ClaimArgs._fields)})}}\n"
    + """local again = leased_by(nonce, worker)
if again then return again end
if past(deadline) then return 'expired' end
if candidate == '' then
  local constrained = {}
  for _, skill in ipairs(skills) do constrained[#constrained + 1] = K.constrained(skill) end
  if redis.call('EXISTS', unpack(constrained)) > 0 then return 'scan' end
end
-- The best `most` tasks are among the first `most` of each queue: one
-- read per queue, merged here.
local most = candidate == '' and tonumber(limit) or 1
local heads = {}
for _, skill in ipairs(skills) do
  local queue = K.queue(skill)
  local head = redis.call('ZRANGE', queue, 0, most - 1, 'WITHSCORES')
  for at = 1, #head, 2 do
    heads[#heads + 1] = {tonumber(head[at + 1]), head[at], queue}
  end
end
if candidate ~= '' and candidate ~= '-' then
  local c = task_of(candidate)
  if c.st == QUEUED and c.c == '1' then
    local queue = K.constrained(c.k)
    local score = redis.call('ZSCORE', queue, c.qm)
    if score then heads[#heads + 1] = {tonumber(score), c.qm, queue} end
  end
end
table.sort(heads, function(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end)
local leased, ids = {}, {}
for at = 1, math.min(most, #heads) do
  local member = heads[at][2]
  local id = string.sub(member, 22)
  local t = task_of(id, true)
  if t.st == QUEUED and t.qm == member then
    local fields = {}
    lease(t, worker, now, nonce, fields)
    write(t, fields)
    ids[#ids + 1] = id
    leased[#leased + 1] = id
    leased[#leased + 1] = t.d
    leased[#leased + 1] = t.sq
  else
    -- Not what its queue says (cannot happen while every script keeps
    -- queues and tasks alike): out of the queue it is found in.
    redis.call('ZREM', heads[at][3], member)
  end
end
if #ids == 0 then return false end
remember_claim(nonce, table.concat(ids, ','))
return leased
"""
)

TAKE = """
-- Lease one given task to `worker`, if it is still queued.
-- KEYS: root. ARGV: task id, worker id, now, nonce (a retry that finds
-- the task leased under it returns it again).
-- Returns {task id, Task bytes, sequence} or false.
local again = held(ARGV[1], ARGV[4], ARGV[2])
if again then return again end
local t = task_of(ARGV[1], true)
if t.st ~= QUEUED then return false end
local fields = {}
lease(t, ARGV[2], ARGV[3], ARGV[4], fields)
write(t, fields)
return {ARGV[1], t.d, t.sq}
"""

HEAD = """
-- The next task of a skill's plain queue (for a hand-out to choose among
-- waiting workers by its strategy).
-- KEYS: root. ARGV: skill. Returns its Task bytes, or false if none.
local head = redis.call('ZRANGE', K.queue(ARGV[1]), 0, 0)
if not head[1] then return false end
return redis.call('HGET', K.task(string.sub(head[1], 22)), 'd')
"""

GIVE_BACK = """
-- Undo a lease its claimer never took: back into its queue where it was,
-- unless something else happened to the task since.
-- KEYS: root. ARGV: task id, worker id, and the nonce of the claim that
-- leased it ('': any lease to that worker). Returns 1 if given back, else 0.
local t = task_of(ARGV[1])
if t.st ~= LEASED or t.w ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' and t.cn ~= ARGV[3] then return 0 end
requeue(t, tonumber(t.sq))
return 1
"""

TAKE_READY = """
-- Take up to `count` jobs whose handler must run, each claimed for this
-- instance until `lease_until` (renewed while the step runs; a lapsed claim
-- is re-queued by DUE, so a step of a dead instance runs elsewhere).
-- KEYS: root. ARGV: count, lease-until ms, then one claim token per job
-- that may be taken. Returns job id, job record ('' if gone) for each job
-- taken: the step starts without another round trip to read its job.
local ids = redis.call('LPOP', K.ready, ARGV[1])
if not ids then return {} end
local taken = {}
for n, id in ipairs(ids) do
  redis.call('ZADD', K.running, ARGV[2], id)
  redis.call('HSET', K.claims, id, ARGV[2 + n])
  taken[#taken + 1] = id
  taken[#taken + 1] = redis.call('HGET', K.job(id), 'd') or ''
end
return taken
"""

STEP_DONE = """
-- Release the claim on a step, if it is still the one taken with `token`
-- (the job may have been taken again, by this or another instance, since
-- the step committed).
-- KEYS: root. ARGV: job id, token. Returns 1 if released.
if redis.call('HGET', K.claims, ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', K.running, ARGV[1])
redis.call('HDEL', K.claims, ARGV[1])
return 1
"""

UNKEEP = """
-- Hand a step claimed for this instance by CREATE or COMMIT back to every
-- instance, if that claim (`token`) still stands: its caller never heard
-- the script's reply (cancelled, or the connection dropped).
-- KEYS: root. ARGV: job id, token. Returns 1 if handed back.
if redis.call('HGET', K.claims, ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', K.running, ARGV[1])
redis.call('HDEL', K.claims, ARGV[1])
redis.call('RPUSH', K.ready, ARGV[1])
wake('j')
return 1
"""

RENEW = """
-- Extend this instance's claims that are still its own.
-- KEYS: root. ARGV: lease-until ms, then pairs of job id, token.
for i = 2, #ARGV, 2 do
  if redis.call('HGET', K.claims, ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', K.running, 'XX', ARGV[1], ARGV[i])
  end
end
return 1
"""

DUE = """
-- Fire due timers: jobs whose backoff is over go to the ready list, due
-- SCHEDULED tasks into their queues, steps whose claim lapsed back to the
-- ready list. Dispatch and result deadlines of still-live tasks are
-- returned, and re-armed `reclaim` ms later in case the instance handling
-- them dies (handling one changes the task, which disarms its timers).
-- KEYS: root. ARGV: now, max timers, reclaim ms.
-- Returns the fired deadline timers, 'dispatch:<task id>', 'result:<task id>'
-- or 'approval:<job id>'.
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local fired = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', K.timers, '-inf', now, 'LIMIT', 0, limit)) do
  local sep = string.find(member, ':', 1, true)
  local kind, ref = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  local keep = false
  if kind == 'ready' then
    redis.call('RPUSH', K.ready, ref)
    wake('j')
  elseif kind == 'release' then
    local t = task_of(ref)
    if t.st == SCHEDULED then
      requeue(t, nil)  -- which disarms this timer
      keep = true
    end
  elseif kind == 'approval' then
    -- A job's wait for a human decision timed out, if it still waits
    -- (a commit moving it on has removed the timer, or moved it).
    if tonumber(redis.call('HGET', K.job(ref), 's')) == WAITING_FOR_HUMAN then
      keep = true
      table.insert(fired, member)
      redis.call('ZADD', K.timers, now + tonumber(ARGV[3]), member)
    end
  else
    local st = tonumber(redis.call('HGET', K.task(ref), 'st'))
    if (kind == 'dispatch' and st == QUEUED) or (kind == 'result' and is_live(st)) then
      keep = true
      table.insert(fired, member)
      redis.call('ZADD', K.timers, now + tonumber(ARGV[3]), member)
    end
  end
  if not keep then redis.call('ZREM', K.timers, member) end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.running, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', K.running, id)
  redis.call('HDEL', K.claims, id)
  redis.call('RPUSH', K.ready, id)
  wake('j')
end
return fired
"""

SET_PROGRESS = """
-- Replace a job's record without bumping its version (progress), if its
-- version is still the one read, marking it ('p') so that a commit made on
-- the record as this version was committed fails (see CommitArgs.unchanged).
-- KEYS: root. ARGV: job id, version read, Job bytes. Returns 1, or 0 if it changed.
local job = K.job(ARGV[1])
local f = redis.call('HMGET', job, 'v', 'p', 'b', 'c')
if f[1] ~= ARGV[2] then return 0 end
local stored = stored_size(job, f[1], f[2], f[3])
redis.call('HSET', job, 'd', ARGV[3], 'p', 1)
if f[4] then count_bytes(f[4], #ARGV[3] - stored) end
return 1
"""

SWEEP = """
-- Forget jobs that ended before `cutoff`: the job, its tasks (and any
-- trace of them in queues, timers and lease sets) and its history.
-- KEYS: root. ARGV: cutoff ms, max jobs. Returns how many were forgotten.
local ids = redis.call('ZRANGEBYSCORE', K.ended, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', K.job(id), 's', 'c', 'v', 'p', 'b')
  if f[2] then redis.call('ZREM', K.client_jobs(f[2]), id) end
  if f[1] and f[2] then count_client(f[2], f[1], -1) end
  if f[2] then count_bytes(f[2], -stored_size(K.job(id), f[3], f[4], f[5])) end
  local gone = {K.job(id), K.job_tasks(id), K.history(id)}
  for _, tid in ipairs(redis.call('SMEMBERS', K.job_tasks(id))) do
    local t = task_of(tid)
    if t.st then move(t, CANCELLED, '', {}, 0, 0, 0) end
    gone[#gone + 1] = t.key
    if #gone == 500 then  -- unpack has a limit
      redis.call('DEL', unpack(gone))
      gone = {}
    end
  end
  if #gone > 0 then redis.call('DEL', unpack(gone)) end
  redis.call('ZREM', K.ended, id)
  if redis.call('HDEL', K.claims, id) == 1 then redis.call('ZREM', K.running, id) end
  redis.call('ZREM', K.timers, 'ready:' .. id, 'approval:' .. id)
end
return #ids
"""


RESERVE = """
-- Reserve room for a job a client is creating, against its bounds: its jobs
-- not ended plus its reservations stay under max jobs, its stored bytes
-- plus its reservations' plus this one's within max bytes (0: no bound).
-- Creating the job takes its reservation back in the same script, so a job
-- is never counted twice nor missed; an instance that dies mid-creation
-- leaves one that lapses after its ttl.
-- The reservations' hash expires too (a client that never comes back
-- leaves nothing), always after every reservation in it: its field '~'
-- ('0:<epoch ms>', which an earlier release's script counts as one
-- reservation of no bytes until then) says when, and only a reservation
-- that would outlive that pushes it a ttl further (once a ttl, not once a
-- job).
-- KEYS: root. ARGV: client id, job id, bytes, max jobs, max bytes, ttl ms.
-- Returns {0} when reserved, else {1, jobs} (too many jobs) or {2, bytes}.
local client, id = ARGV[1], ARGV[2]
local size, max_jobs, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local held = K.client_reservations(client)
local held_jobs, held_bytes, lasts = 0, 0, 0
local entries = redis.call('HGETALL', held)
for i = 1, #entries, 2 do
  local bytes, expires = string.match(entries[i + 1], '^(%d+):(%d+)$')
  if entries[i] == '~' then
    lasts = tonumber(expires)
  elseif tonumber(expires) <= now then
    redis.call('HDEL', held, entries[i])
  else
    held_jobs = held_jobs + 1
    held_bytes = held_bytes + tonumber(bytes)
  end
end
if max_jobs > 0 then
  local jobs = held_jobs
  local counts = redis.call('HGETALL', K.client_statuses(client))
  for i = 1, #counts, 2 do
    if not TERMINAL[tonumber(counts[i])] then jobs = jobs + tonumber(counts[i + 1]) end
  end
  if jobs >= max_jobs then return {1, jobs} end
end
local stored = tonumber(redis.call('GET', K.client_bytes(client)) or '0') + held_bytes
if max_bytes > 0 and stored + size > max_bytes then return {2, stored} end
local ttl = tonumber(ARGV[6])
if now + ttl < lasts then
  redis.call('HSET', held, id, size .. ':' .. (now + ttl))
else
  redis.call('HSET', held, id, size .. ':' .. (now + ttl), '~', '0:' .. (now + 2 * ttl))
  redis.call('PEXPIRE', held, 2 * ttl)
end
return {0}
"""

UNRESERVE = """
-- Give back a reservation of RESERVE (a creation that failed).
-- KEYS: root. ARGV: client id, job id.
redis.call('HDEL', K.client_reservations(ARGV[1]), ARGV[2])
return 1
"""


NAMES = (
    "CLAIM",
    "COMMIT",
    "CREATE",
    "DUE",
    "GIVE_BACK",
    "HEAD",
    "RENEW",
    "RESERVE",
    "SET_PROGRESS",
    "STEP_DONE",
    "SWEEP",
    "TAKE",
    "TAKE_READY",
    "UNKEEP",
    "UNRESERVE",
)
"""The scripts' names (module attributes holding their bodies)."""


def source(keys: Keys, body: str) -> str:
    """A script ready to register: key names, the library, then ``body``."""
    return keys.lua_prelude() + _library() + body
