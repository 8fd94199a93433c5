"""The executor's ready jobs, each step claimed by one instance: the
TAKE_READY, STEP_DONE, RENEW and UNKEEP scripts.

Instances take job ids from one list, each claimed with a lease
(``STEP_LEASE_SECONDS``) that the instance renews while its step runs. A
step of an instance that died is run again elsewhere once its lease lapses;
the job's version guard lets only one commit of a step win. A job that a
create or a commit here makes ready is claimed for this instance in the same
script while an executor here waits idle for it ("kept"), saving the take.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Iterator
from typing import Any

from avtomatika.clock import now_ms
from avtomatika.storage.redis.link import RECHECK, Link
from avtomatika.storage.redis.outages import DOWN, run_forever

__all__ = ["Steps"]

log = logging.getLogger(__name__)

# Ready jobs taken per script call.
_TAKE = 4
# A job record read with a step's claim is used for the step if it starts
# within this many seconds; older, the step reads the job afresh.
_RECORD_FRESH = 0.02


class Steps:
    """The ready jobs this instance takes and the claims on their steps."""

    def __init__(self, link: Link, instance_id: str, lease_seconds: float) -> None:
        self._link = link
        self._lease_ms = int(lease_seconds * 1000)
        self.wake = asyncio.Event()
        """Set when a job may have become ready."""
        # Ready jobs taken, not yet started: (job id, claim token).
        self._ready: deque[tuple[str, str]] = deque()
        # The record of each ready job taken, read with it; then that of the
        # job each executor task has started, until the step reads it.
        self._taken_records: dict[str, tuple[bytes, float]] = {}
        self._first_reads: dict[asyncio.Task[Any] | None, tuple[str, bytes]] = {}
        # The executor task running a step -> (job id, its claim token).
        self._stepping: dict[asyncio.Task[Any] | None, tuple[str, str]] = {}
        self._tokens = itertools.count(1)
        self._token_prefix = f"{instance_id}:{secrets.token_hex(4)}"
        self._fetching: asyncio.Lock | None = None
        # Executors waiting in next_ready_job, and commits in flight that
        # will hand one of them the job they make ready.
        self._idle_executors = 0
        self._keeping = 0
        self._renewer: asyncio.Task[None] | None = None

    def claim_until(self) -> int:
        """The lease-until ms of a step claimed now."""
        return now_ms() + self._lease_ms

    def _new_token(self) -> str:
        return f"{self._token_prefix}:{next(self._tokens)}"

    # -- keeping the steps this instance makes ready --

    @contextlib.contextmanager
    def keeping(self, job_id: str, wanted: bool = True) -> Iterator[str]:
        """A claim token when a job this instance makes ready should run
        here, else "" (queued for any instance): kept only while an executor
        here waits idle for it, so no instance hoards steps it cannot run."""
        if not wanted or self._idle_executors <= len(self._ready) + self._keeping:
            yield ""
            return
        token = self._new_token()
        self._keeping += 1
        try:
            yield token
        except BaseException:
            # Cancelled, or Redis went away, with the script sent: it may
            # have claimed the step for us unheard. Hand it to any instance
            # now rather than when the claim lapses.
            self.unkeep(job_id, token)
            raise
        finally:
            self._keeping -= 1

    def unkeep(self, job_id: str, token: str) -> None:
        """Hand the job's step, if it is still claimed here with ``token``,
        to any instance (the UNKEEP script)."""
        link = self._link
        link.spawn(link.retrying("handing a step back", link.run, "UNKEEP", job_id, token))

    def kept(self, job_id: str, token: str, record: bytes) -> None:
        """The job's next step was claimed for this instance with ``token``
        (its record ``record``): an idle executor takes it without a round
        trip."""
        if token:
            self._ready.append((job_id, token))
            self._taken_records[job_id] = (record, asyncio.get_running_loop().time())
            self.wake.set()

    def committed(self, job_id: str) -> None:
        """A commit of ``job_id`` released the claim on its step: if this is
        the step committing, its :meth:`step_done` needs no round trip."""
        if self._stepping:  # only a step an executor took holds a claim
            stepping = asyncio.current_task()
            held = self._stepping.get(stepping)
            if held is not None and held[0] == job_id and held[1]:
                self._stepping[stepping] = (job_id, "")

    def first_read(self, job_id: str) -> bytes | None:
        """The record of ``job_id`` that came with the step the calling
        task just took, once (None: read it from Redis)."""
        if not self._first_reads:
            return None
        first = self._first_reads.pop(asyncio.current_task(), None)
        return first[1] if first is not None and first[0] == job_id else None

    # -- taking ready jobs --

    async def next_ready_job(self) -> str:
        """See :meth:`Storage.next_ready_job <avtomatika.storage.base.Storage.next_ready_job>`."""
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        self._idle_executors += 1
        try:
            await self._until_ready()
        finally:
            self._idle_executors -= 1
        job_id, token = self._ready.popleft()
        stepping = asyncio.current_task()
        self._stepping[stepping] = (job_id, token)
        record, taken_at = self._taken_records.pop(job_id, (b"", 0.0))
        if record and asyncio.get_running_loop().time() - taken_at <= _RECORD_FRESH:
            # Read with the claim just now. One that waited here longer (a
            # batch taken for busy executors) is read again: the job may
            # have been cancelled meanwhile, and a handler must not run on it.
            self._first_reads[stepping] = (job_id, record)
        return job_id

    async def _until_ready(self) -> None:
        assert self._fetching is not None
        while not self._ready:
            async with self._fetching:
                if self._ready:
                    break
                self.wake.clear()
                ids = await self._link.retrying("taking ready jobs", self._take_ready)
                if ids:
                    self._ready.extend(ids)
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECHECK):
                        await self.wake.wait()

    async def _take_ready(self) -> list[tuple[str, str]]:
        tokens = [self._new_token() for _ in range(_TAKE)]
        taken = await self._link.run("TAKE_READY", _TAKE, self.claim_until(), *tokens)
        ids = [raw.decode() for raw in taken[::2]]
        now = asyncio.get_running_loop().time()
        self._taken_records.update((i, (r, now)) for i, r in zip(ids, taken[1::2], strict=True))
        return list(zip(ids, tokens, strict=False))

    async def step_done(self, job_id: str, *, completed: bool = True) -> None:
        """See :meth:`Storage.step_done <avtomatika.storage.base.Storage.step_done>`."""
        key: asyncio.Task[Any] | None = asyncio.current_task()
        if self._stepping.get(key, ("",))[0] != job_id:
            # Not taken by this task: the oldest step of that job taken here.
            key = next((k for k, (j, _) in self._stepping.items() if j == job_id), key)
        held = self._stepping.pop(key, None)
        self._first_reads.pop(key, None)
        if held is None or held[0] != job_id:
            return  # no step of that job taken here: no claim to release
        token = held[1]
        if not token:
            return  # its commit released the claim already
        if not completed:
            return  # its claim lapses and the step runs again
        # If Redis is down the claim lapses; the step re-runs and finds
        # nothing to do.
        with contextlib.suppress(*DOWN):
            await self._link.run("STEP_DONE", job_id, token)

    # -- keeping claims alive, and giving them up --

    def start_renewing(self) -> None:
        """Renew this instance's claims from now on."""
        self._renewer = asyncio.create_task(self._renew_forever(), name="avtomatika-leases")

    def stop_renewing(self) -> None:
        """Stop renewing (the claims lapse unless released)."""
        if self._renewer is not None:
            self._renewer.cancel()

    async def _renew_forever(self) -> None:
        """Keep this instance's claims on the steps it runs alive: renewed
        every third of the lease; an outage is waited out (one warning, one
        line when Redis is back)."""
        await run_forever("renewing step claims", self._renew)

    async def _renew(self) -> None:
        await asyncio.sleep(self._lease_ms / 3000)
        # Steps taken and not done: waiting here, or running (those whose
        # commit already released their claim have no token).
        held = [*self._ready, *(h for h in self._stepping.values() if h[1])]
        pairs = [x for job_id, token in held for x in (job_id, token)]
        if pairs:
            await self._link.run("RENEW", now_ms() + self._lease_ms, *pairs)

    def untaken(self) -> list[str]:
        """Forget the ready jobs taken but not started, and return their ids
        (for closing: they go back to every instance)."""
        untaken, self._ready = [job_id for job_id, _ in self._ready], deque()
        return untaken

    def clear(self) -> None:
        """Forget everything taken (the store was flushed)."""
        self._ready.clear()
        self._taken_records.clear()
        self._first_reads.clear()
        self._stepping.clear()
