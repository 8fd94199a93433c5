"""Every Redis key and channel Avtomatika uses, in one place.

All names start with the configured prefix inside a hash tag,
``{avtomatika}:...``, so every key lives in one Redis Cluster slot: the Lua
scripts touch a job, its tasks, the queues and the timers in one call, which
Cluster allows only within a slot. A cluster therefore gives this deployment
high availability (replicas, failover), not sharding; one Redis primary
handles far more than the orchestrator's Python processes can send it.

Values are protobuf bytes; times are epoch milliseconds.
"""

from __future__ import annotations

__all__ = ["Keys"]

# Per-record keys: ``<root>:<kind>:<id>``. The Lua scripts build the same
# names from this table (:meth:`Keys.lua_prelude`), so no name is spelled twice.
_PER_RECORD = {
    "job": "job",
    "job_tasks": "jobtasks",
    "task": "task",
    "queue": "q",
    "constrained": "qc",
    "queued_since": "qs",
    "history": "history",
    "worker_leases": "leases",
    "claim_nonce": "nonce",
    "commit_nonce": "applied",
    "client_jobs": "clientjobs",
    "client_statuses": "clientstatuses",
    "client_bytes": "clientbytes",
    "client_reservations": "clientres",
}


class Keys:
    """Key and channel names under one prefix."""

    def __init__(self, prefix: str = "avtomatika") -> None:
        self.root = f"{{{prefix}}}"
        r = self.root
        # -- jobs and tasks (storage) --
        self.sequence = f"{r}:seq"
        """Counter: queue order of tasks (FIFO within a priority)."""
        self.ready = f"{r}:ready"
        """List: ids of jobs whose current handler must run."""
        self.running = f"{r}:running"
        """Sorted set: job id -> lease deadline of the instance running its step."""
        self.claims = f"{r}:claims"
        """Hash: job id -> token of the take whose claim is in :attr:`running`."""
        self.timers = f"{r}:timers"
        """Sorted set: ``kind:ref`` -> due time (ready, release, dispatch, result,
        approval)."""
        self.statuses = f"{r}:statuses"
        """Hash: job status number -> jobs in it. Kept by earlier releases;
        the counts of every job are now those of :attr:`clients` summed (one
        count per status change instead of two), and an instance that opens
        adopts this layout (see ``RedisStorage.open``)."""
        self.clients = f"{r}:clients"
        """Set: ids of the clients with jobs stored (whose stored bytes are
        not zero), whose :meth:`client_statuses` count every job."""
        self.skills = f"{r}:skills"
        """Set: every skill that ever had a queue (for queue depths)."""
        self.ended = f"{r}:ended"
        """Sorted set: id of an ended job -> when it ended (retention)."""
        # -- webhooks, limits, workers (shared services) --
        self.outbox = f"{r}:outbox"
        """Sorted set: webhook delivery id -> when it is next due, epoch ms (a
        claimed one: when its claim lapses)."""
        self.workers = f"{r}:workers"
        """Hash: worker id -> WorkerInfo bytes, for workers of every instance."""
        # -- pub/sub channels --
        self.wake_channel = f"{r}:wake"
        """Messages: a skill whose queue got a task (waiting workers try to claim)."""
        self.events_channel = f"{r}:events"
        """Messages: job events, for followers on other instances."""
        self.cancel_channel = f"{r}:cancel"
        """Messages: cancels for workers connected to another instance."""

    def job(self, job_id: str) -> str:
        """Hash: ``d`` Job bytes, ``v`` version, ``s`` status."""
        return f"{self.root}:{_PER_RECORD['job']}:{job_id}"

    def job_tasks(self, job_id: str) -> str:
        """Set: every task id of the job (deleted with it)."""
        return f"{self.root}:{_PER_RECORD['job_tasks']}:{job_id}"

    def task(self, task_id: str) -> str:
        """Hash: ``d`` Task bytes, ``st`` state, ``w`` worker, ``j`` job,
        ``k`` skill, ``qm`` queue member, ``dd``/``rd`` dispatch/result
        deadlines, ``c`` 1 when the task has requirements."""
        return f"{self.root}:{_PER_RECORD['task']}:{task_id}"

    def queue(self, skill: str) -> str:
        """Sorted set of tasks any worker with the skill may take: score
        minus priority, member ``<20-digit sequence>:<task id>``."""
        return f"{self.root}:{_PER_RECORD['queue']}:{skill}"

    def constrained(self, skill: str) -> str:
        """Sorted set like :meth:`queue`, of tasks with requirements."""
        return f"{self.root}:{_PER_RECORD['constrained']}:{skill}"

    def queued_since(self, skill: str) -> str:
        """Sorted set: id of every task in the skill's two queues -> when it
        entered them (epoch ms): the oldest is the first."""
        return f"{self.root}:{_PER_RECORD['queued_since']}:{skill}"

    def history(self, job_id: str) -> str:
        """Sorted set: the job's HistoryEvent bytes, scored by
        ``timestamp_ms + n/1024`` (``n``: events kept for that millisecond)."""
        return f"{self.root}:{_PER_RECORD['history']}:{job_id}"

    def delivery(self, delivery_id: str) -> str:
        """Hash: a pending webhook delivery, ``j`` the Job bytes as it ended,
        ``a`` the attempts made."""
        return f"{self.root}:delivery:{delivery_id}"

    def rate(self, client_id: str) -> str:
        """Sorted set: a client's accepted request ids -> their times in µs on
        the Redis server's clock (sliding window; expires a period after the
        last one)."""
        return f"{self.root}:rate:{client_id}"

    def quota(self, client_id: str, month: str) -> str:
        """Counter: jobs a client created in ``month`` (``YYYY-MM``, UTC);
        expires a day into the next month."""
        return f"{self.root}:quota:{client_id}:{month}"

    def schedule_slot(self, schedule: str, due_ms: int) -> str:
        """String with a TTL: the scheduler that fired ``schedule``'s firing
        due at epoch ``due_ms`` (set only if absent; expires once no
        instance would still fire that slot, about two minutes)."""
        return f"{self.root}:slot:{schedule}:{due_ms}"

    def worker_leases(self, worker_id: str) -> str:
        """Set: task ids leased to a worker."""
        return f"{self.root}:{_PER_RECORD['worker_leases']}:{worker_id}"

    def claim_nonce(self, nonce: str) -> str:
        """String with a one-minute TTL: the ids (comma-separated) of the
        tasks a claim with this nonce leased, so a retry after a lost reply
        gets those tasks again."""
        return f"{self.root}:{_PER_RECORD['claim_nonce']}:{nonce}"

    def commit_nonce(self, nonce: str) -> str:
        """String with a one-minute TTL: a commit with this nonce was
        applied, so its retry after a lost reply writes nothing again."""
        return f"{self.root}:{_PER_RECORD['commit_nonce']}:{nonce}"

    def client_jobs(self, client_id: str) -> str:
        """Sorted set: the client's job ids by creation time (ms), for
        listing newest first. Written when a job is created (its client id
        is kept in the job's hash, field ``c``), emptied by the retention
        sweep; a listing also drops an entry whose job it cannot find.
        Empty, it is gone: Redis deletes an empty sorted set."""
        return f"{self.root}:{_PER_RECORD['client_jobs']}:{client_id}"

    def client_statuses(self, client_id: str) -> str:
        """Hash: job status number -> the client's jobs in it (what
        ``GET /api/v1/jobs`` counts), kept by the scripts that create,
        change and forget jobs."""
        return f"{self.root}:{_PER_RECORD['client_statuses']}:{client_id}"

    def client_bytes(self, client_id: str) -> str:
        """String: bytes of the client's stored job records, kept by the
        scripts that write and forget jobs (``CLIENT_MAX_STORED_BYTES``).
        Gone at zero."""
        return f"{self.root}:{_PER_RECORD['client_bytes']}:{client_id}"

    def client_reservations(self, client_id: str) -> str:
        """Hash: id of a job being created -> ``<bytes>:<expiry ms>``, what
        the client's bounds count on top of its stored jobs until the
        creation commits (:mod:`avtomatika.limits.redis`)."""
        return f"{self.root}:{_PER_RECORD['client_reservations']}:{client_id}"

    def worker_alive(self, worker_id: str) -> str:
        """String with a TTL, the worker's liveness: ``<instance>`` holding its
        connection, ``s:<instance>`` that last saw a REST worker, or
        ``g:<instance>`` it left, in its reconnect grace."""
        return f"{self.root}:alive:{worker_id}"

    def lua_prelude(self) -> str:
        """Lua defining ``K.<kind>(id)`` for every per-record key and
        ``K.<name>`` for the fixed ones, all derived from ``KEYS[1]`` (the
        root): scripts declare the root as their one key, and every key they
        touch shares its hash slot."""
        lines = ["local K = {}", "local root = KEYS[1]"]
        for name, kind in _PER_RECORD.items():
            lines.append(f"K.{name} = function(id) return root .. ':{kind}:' .. id end")
        for name in _FIXED:
            suffix = getattr(self, name).removeprefix(self.root)
            lines.append(f"K.{name} = root .. '{suffix}'")
        return "\n".join(lines) + "\n"


_FIXED = (
    "sequence",
    "ready",
    "running",
    "claims",
    "timers",
    "clients",
    "skills",
    "ended",
    "wake_channel",
)
