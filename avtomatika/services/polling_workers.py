"""Workers that poll instead of holding a stream: the legacy REST API
(``/_worker``) and the unary gRPC worker RPCs (``RegisterWorker``,
``Heartbeat``, ``NextTask``, ``SubmitResult``). What this process remembers
about them between requests; no transport here:
:mod:`avtomatika.services.worker_api` checks who is asking, the transports
parse and render, this module keeps the books and calls the engine.

A polling worker has no connection whose end says it died, so liveness is a
time to live: every request from it (register, heartbeat, poll, result) is a
sign of life, and a worker silent for ``2 x WORKER_HEALTH_CHECK_INTERVAL_SECONDS``
(while no long-poll or WebSocket of its is open) is removed by the reaper and
the tasks it was handed go back to the queue as a new attempt.

Cancellation reaches a REST worker two ways: pushed down its WebSocket when
the socket identifies the worker (a :class:`Socket` registered in the engine's
worker registry), and always in the reply to its next heartbeat, which names
the tasks it reports running that it must stop (``cancel_task_ids``). SDK
1.0b7 opens its socket anonymously, so for it the heartbeat is the path.

Behind a load balancer a worker's requests reach any instance. What one
instance does not know it asks the registry's presence: a worker registered
elsewhere is adopted from its shared record, the tasks leased to it through
other instances are found in the shared store, and a worker silent here but
seen by another instance is only forgotten here, its tasks left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Protocol

from avtomatika.clock import now_ms
from avtomatika.engine.core import Engine, ResultVerdict
from avtomatika.engine.registry import WorkerChange
from avtomatika.errors import NotFound, RateLimited
from avtomatika.ids import check_worker_id
from avtomatika.v1 import task_pb2, worker_pb2
from avtomatika.v1.task_pb2 import Task, TaskResult
from avtomatika.v1.worker_pb2 import (
    WorkerInfo,
    WorkerRegistration,
)
from avtomatika.v1.worker_service_pb2 import HeartbeatRequest

__all__ = ["PollingWorkers", "Socket"]

log = logging.getLogger(__name__)

_STATUSES = {
    "idle": worker_pb2.WORKER_STATUS_IDLE,
    "busy": worker_pb2.WORKER_STATUS_BUSY,
    "draining": worker_pb2.WORKER_STATUS_DRAINING,
    # SDK 1.0b7 sends "offline" once on shutdown, then finishes what it runs.
    "offline": worker_pb2.WORKER_STATUS_DRAINING,
    # SDK 1.0b20 at its concurrency limit; it stops polling by itself.
    "full": worker_pb2.WORKER_STATUS_BUSY,
}


class Socket(Protocol):
    """A worker's WebSocket: carries cancels down, and can be closed (when
    a second socket for the same worker replaces it, or at shutdown)."""

    def push_cancel(self, task_id: str, job_id: str, reason: str) -> bool:
        """Queue a cancel for the worker; False if the socket is gone."""

    def close(self) -> None:
        """End the socket."""


@dataclass(slots=True)
class _Worker:
    info: WorkerInfo
    seen: float
    held: set[str] = field(default_factory=set)
    """Tasks handed to it by a poll that it has not reported yet."""
    reported: set[str] = field(default_factory=set)
    """Tasks it sent a result for, until its heartbeats stop listing them."""
    polls: int = 0
    skills_hash: str = ""
    """The hash of its skills as SDK 1.0b20 last sent them in full."""
    beat_at: float = -math.inf
    """When its last heartbeat with a body came (loop time)."""


class PollingWorkers:
    """The REST workers of one engine; a Service (its reaper runs between
    :meth:`start` and :meth:`stop`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        interval = engine.config.worker_health_check_interval_seconds
        self._check_every = interval
        self.ttl_seconds = 2 * interval
        """A worker silent this long is gone."""
        self._poll_timeout = engine.config.worker_poll_timeout_seconds
        self._min_beat_interval = engine.config.worker_heartbeat_min_interval_seconds
        self._workers: dict[str, _Worker] = {}
        self._sockets: dict[str, Socket] = {}
        self._anonymous: set[Socket] = set()
        self._closing = asyncio.Event()
        self._claims: set[asyncio.Future[Task | None]] = set()
        """The waiting polls' claims, which close() cancels to release them."""
        self._reaper: asyncio.Task[None] | None = None
        # Give-backs of tasks leased to a poll that was cancelled meanwhile:
        # held here so they finish (and are awaited at stop).
        self._giving_back: set[asyncio.Task[None]] = set()

    # -- Service --

    async def start(self) -> None:
        self._closing.clear()
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="rest-worker-reaper")

    async def stop(self) -> None:
        self.close()
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        if self._giving_back:
            await asyncio.wait(self._giving_back)

    def close(self) -> None:
        """Shutting down: release every long-poll now (they answer "no
        task") and close every socket, so the HTTP server never waits for
        them. Workers and their leases stay: a REST worker reports its
        results to whichever instance answers next."""
        self._closing.set()
        for claim in self._claims:
            claim.cancel()
        for socket in [*self._sockets.values(), *self._anonymous]:
            socket.close()

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called (new sockets are refused)."""
        return self._closing.is_set()

    # -- registration and liveness --

    async def register(
        self, registration: WorkerRegistration, skills_hash: str = "", agent: str = ""
    ) -> None:
        """Register a worker. SDK 1.0b7 registers once, when it starts, so a
        worker registering again is a new process: the tasks handed to the
        old one, which died with it, go back to the queue. SDK 1.0b20 also
        registers again, still running, when a heartbeat is answered "not
        found"; a task re-queued then is named in its next heartbeat reply
        (``cancel_task_ids``), so it stops it rather than finish it twice.
        ``agent``: what the worker says it is (its User-Agent)."""
        worker_id = check_worker_id(registration.worker_id)
        worker = self._workers.get(worker_id)
        lost: set[str] = set()
        if worker is not None:
            lost = set(worker.held)
            worker.held.clear()
            worker.reported.clear()
        # Handed out through other instances, if any (none for one process).
        lost.update(await self._engine.workers.presence.leases(worker_id))
        self._add(registration, agent).skills_hash = skills_hash
        if worker is not None:
            change = WorkerChange("registered_again", worker_id, held=len(lost))
            self._engine.workers.changes.send(change)
        for task_id in sorted(lost):
            if await self._engine.requeue_task(task_id, worker_id, "the worker restarted"):
                log.info(
                    "REST worker %s restarted; task %s goes back to the queue", worker_id, task_id
                )

    def _add(self, registration: WorkerRegistration, agent: str) -> _Worker:
        worker_id = registration.worker_id
        worker = self._workers.get(worker_id)
        info = WorkerInfo(
            registration=registration,
            status=worker_pb2.WORKER_STATUS_IDLE,
            transport=worker_pb2.WORKER_TRANSPORT_REST,
            agent=agent,
        )
        if worker is None:
            worker = self._workers[worker_id] = _Worker(info, self._now())
        else:
            worker.info = info
        self._sync(worker)
        self._engine.workers.connect(info, self._sockets.get(worker_id))
        self._touch(worker)
        return worker

    async def ping(self, worker_id: str) -> None:
        """An empty heartbeat: refresh the TTL (:class:`NotFound` if unknown)."""
        self._touch(await self._known(worker_id))

    async def heartbeat(
        self, beat: HeartbeatRequest, skills_hash: str = "", agent: str = ""
    ) -> list[str]:
        """Apply a heartbeat; the tasks the worker must stop. A worker this
        process does not know (it expired, or an in-memory server restarted)
        is registered again from the heartbeat, since SDK 1.0b7 never
        re-registers by itself; but only from a heartbeat that lists skills,
        since a worker restored with none would never get a task. Without
        them the answer is :class:`NotFound` saying "not found", the words
        on which SDK 1.0b20 registers again."""
        worker_id = check_worker_id(beat.worker_id)
        worker = self._workers.get(worker_id) or await self._adopt(worker_id)
        status = _STATUSES.get(beat.status, worker_pb2.WORKER_STATUS_IDLE)
        if worker is None:
            if beat.status == "offline" and not beat.current_tasks:
                return []  # a worker we forgot, leaving: nothing to restore
            if not beat.supported_skills:
                raise _unknown(worker_id)
            log.info("REST worker %s is back (heartbeat); registering it again", worker_id)
            worker = self._add(
                WorkerRegistration(worker_id=worker_id, skills=beat.supported_skills), agent
            )
        elif beat.status != "offline":
            self._check_beat_rate(worker)
        if beat.supported_skills:
            # Only a non-empty list replaces the skills: SDK 1.0b7 sends an
            # empty one while it is busy, which is no change of skills.
            del worker.info.registration.skills[:]
            worker.info.registration.skills.extend(dict.fromkeys(beat.supported_skills))
            worker.skills_hash = skills_hash
        worker.info.status = status
        worker.beat_at = self._now()
        self._touch(worker)
        running = set(beat.current_tasks)
        worker.reported &= running
        cancel = [task_id for task_id in running if await self._must_stop(worker, task_id)]
        await self._requeue_unlisted(worker, running)
        self._sync(worker)
        if status == worker_pb2.WORKER_STATUS_DRAINING and not running and not worker.held:
            self._forget(worker_id, worker, "it said it is going offline")
        return sorted(cancel)

    def _check_beat_rate(self, worker: _Worker) -> None:
        """``WORKER_HEARTBEAT_MIN_INTERVAL_SECONDS``: a heartbeat too soon
        after the last is refused with the wait (the SDKs' pick-up and
        completion heartbeats come in bursts; 1.0b20 backs off as told).
        A shutdown heartbeat always passes: it says the worker is leaving."""
        if self._min_beat_interval <= 0:
            return
        wait = worker.beat_at + self._min_beat_interval - self._now()
        if wait > 0:
            raise RateLimited(
                f"heartbeats at most every {self._min_beat_interval:g} s", math.ceil(wait)
            )

    async def _requeue_unlisted(self, worker: _Worker, running: set[str]) -> None:
        """Re-queue tasks leased to the worker that its heartbeats have not
        listed for two heartbeat intervals since the lease: it never got
        them (the instance that leased one died before answering the poll).
        The SDK heartbeats right after each pick-up, so a task it did get is
        listed long before that."""
        me = worker.info.registration.worker_id
        horizon_ms = 2000 * self._engine.config.worker_heartbeat_interval_seconds
        now = now_ms()
        for task_id in await self._engine.storage.leased_to(me):
            if task_id in running:
                continue
            task = await self._engine.storage.get_task(task_id)
            if task is None or task.state != task_pb2.TASK_STATE_LEASED:
                continue
            if task.worker_id == me and now - task.leased_at_ms > horizon_ms:
                reason = "the worker's heartbeats never listed it"
                if await self._engine.requeue_task(task_id, me, reason):
                    log.info("REST worker %s never got task %s; re-queued", me, task_id)
                    worker.held.discard(task_id)

    async def _must_stop(self, worker: _Worker, task_id: str) -> bool:
        """Whether the worker should stop ``task_id``: its job was cancelled
        or moved on (timed out, re-queued) while the worker ran it."""
        task = await self._engine.storage.get_task(task_id)
        me = worker.info.registration.worker_id
        if task is not None and task.state == task_pb2.TASK_STATE_LEASED and task.worker_id == me:
            worker.held.add(task_id)  # e.g. handed out before a restart of our books
            return False
        if task_id in worker.reported:
            return False  # it finished the task; the heartbeat crossed its result
        if task is not None and task.state == task_pb2.TASK_STATE_DONE and task.worker_id == me:
            return False  # the same, its result sent through another instance
        worker.held.discard(task_id)
        return True

    def needs_full_sync(self, worker_id: str, skills_hash: str) -> bool:
        """Whether a 1.0b20 worker whose skills hash to ``skills_hash`` must
        send its whole registration again: the skills it last sent here (or
        through another instance, whose record has no hash) hash otherwise."""
        worker = self._workers.get(worker_id)
        return bool(skills_hash) and worker is not None and worker.skills_hash != skills_hash

    # -- tasks --

    def held(self, worker_id: str) -> list[str]:
        """The tasks handed to the worker that it has not reported yet."""
        worker = self._workers.get(worker_id)
        return sorted(worker.held) if worker is not None else []

    def polling(self, worker_id: str) -> bool:
        """Whether a long-poll of the worker is waiting."""
        worker = self._workers.get(worker_id)
        return worker is not None and worker.polls > 0

    async def next_task(
        self,
        worker_id: str,
        *,
        timeout: float | None = None,
        available: list[str] | None = None,
    ) -> Task | None:
        """Long-poll: a task for the worker, or None after
        ``WORKER_POLL_TIMEOUT_SECONDS`` (or the worker's shorter ``timeout``,
        after which SDK 1.0b20 gives up on the request) or at shutdown. Only
        the ``available`` skills are offered, when the worker names them."""
        worker = await self._known(worker_id)
        if self._closing.is_set() or worker.info.status == worker_pb2.WORKER_STATUS_DRAINING:
            return None
        worker.polls += 1
        self._touch(worker)
        try:
            skills = list(worker.info.registration.skills)
            if available is not None:
                skills = [skill for skill in skills if skill in set(available)]
            wait = self._poll_timeout if timeout is None else min(timeout, self._poll_timeout)
            task = await self._claim(worker, skills, wait)
        finally:
            worker.polls -= 1
            self._touch(worker)
        if task is not None:
            worker.held.add(task.task_id)
            self._sync(worker)
        return task

    async def _claim(self, worker: _Worker, skills: list[str], timeout: float) -> Task | None:
        worker_id = worker.info.registration.worker_id
        claim = asyncio.ensure_future(self._engine.next_task(worker_id, skills, timeout=timeout))
        # close() cancels the claims to release their polls: one task per
        # poll, and a timer for the signs of life, where a task waiting on
        # the closing event and asyncio.wait per poll cost nearly twice the
        # CPU (30-34 us a poll against 17-20).
        self._claims.add(claim)
        self._keep_touching(worker, claim)
        # Awaited through a future of its own: cancelling the poll must not
        # cancel a claim that is returning a leased task (see below).
        claimed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle(_: object) -> None:
            if not claimed.done():
                claimed.set_result(None)

        claim.add_done_callback(settle)
        try:
            await claimed
            return claim.result()  # CancelledError when shutdown released it
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is None or not current.cancelling():
                return None  # released by shutdown
            # The poll itself was cancelled (a gRPC caller's deadline, its
            # hang-up) just as the claim leased a task: nobody will receive
            # it, so it goes back to the queue instead of waiting for the
            # worker's expiry.
            if claim.done() and not claim.cancelled() and claim.exception() is None:
                task = claim.result()
                if task is not None:
                    giving = asyncio.create_task(self.give_back(worker_id, task.task_id))
                    self._giving_back.add(giving)
                    giving.add_done_callback(self._giving_back.discard)
            raise
        finally:
            self._claims.discard(claim)
            claim.cancel()  # no-op once it has a result (its timer ends with it)

    def _keep_touching(self, worker: _Worker, claim: asyncio.Future[Task | None]) -> None:
        """A waiting poll is a sign of life: other instances see it too (the
        shared TTL may be shorter than ``WORKER_POLL_TIMEOUT_SECONDS``), so
        the worker is touched every third of it until ``claim`` is done."""
        loop = asyncio.get_running_loop()
        period = self.ttl_seconds / 3

        def arm() -> None:
            timer = loop.call_later(period, touch)
            claim.add_done_callback(lambda _: timer.cancel())

        def touch() -> None:
            if not claim.done():
                self._touch(worker)
                arm()

        arm()

    async def give_back(self, worker_id: str, task_id: str) -> None:
        """The worker could not receive a task it was handed (its poll's
        connection was gone): queue it again at once."""
        worker = self._workers.get(worker_id)
        if worker is not None:
            worker.held.discard(task_id)
            self._sync(worker)
        await self._engine.requeue_task(task_id, worker_id, "the worker's poll went away")

    async def submit_result(self, result: TaskResult) -> ResultVerdict:
        """Hand a result to the engine, which decides what it means."""
        worker = self._workers.get(result.worker_id) or await self._adopt(result.worker_id)
        if worker is not None:
            # Before the engine call: a heartbeat racing this result must not
            # be told to cancel the task it is reporting.
            worker.reported.add(result.task_id)
            self._touch(worker)
        verdict = await self._engine.submit_result(result)
        if worker is not None and (
            verdict.accepted or not await self._engine.holds(result.worker_id, result.task_id)
        ):
            worker.held.discard(result.task_id)
            self._sync(worker)
        return verdict

    async def holder_of(self, task_id: str) -> str | None:
        """The REST worker holding ``task_id`` (adopted from the store when
        another instance registered it), or None."""
        task = await self._engine.storage.get_task(task_id)
        if task is None or not task.worker_id:
            return None
        if task.worker_id not in self._workers and await self._adopt(task.worker_id) is None:
            return None
        return task.worker_id

    async def report_progress(
        self, worker_id: str, task_id: str, progress: float, message: str
    ) -> bool:
        """Progress of a task ``worker_id`` holds; False for one it does not."""
        worker = self._workers.get(worker_id)
        if worker is not None:
            self._touch(worker)
        return await self._engine.report_progress(worker_id, task_id, progress, message)

    # -- sockets --

    def attach(self, worker_id: str | None, socket: Socket) -> None:
        """A socket opened; with a worker id it replaces that worker's
        previous socket and carries its cancels."""
        if worker_id is None:
            self._anonymous.add(socket)
            return
        previous = self._sockets.get(worker_id)
        self._sockets[worker_id] = socket
        if previous is not None and previous is not socket:
            previous.close()
        worker = self._workers.get(worker_id)
        if worker is not None:
            self._engine.workers.connect(worker.info, socket)
            self._touch(worker)

    def detach(self, worker_id: str | None, socket: Socket) -> None:
        """A socket closed."""
        if worker_id is None:
            self._anonymous.discard(socket)
            return
        if self._sockets.get(worker_id) is not socket:
            return  # already replaced
        del self._sockets[worker_id]
        worker = self._workers.get(worker_id)
        if worker is not None and self._engine.workers.is_current(worker_id, socket):
            self._engine.workers.connect(worker.info, None)
            self._touch(worker)

    # -- expiry --

    async def _reap_forever(self) -> None:
        # Ends on close() too: a cancel that lands inside a Redis call may
        # come out as an error, which the loop below would outlive.
        while not self._closing.is_set():
            await asyncio.sleep(self._check_every)
            try:
                await self.reap()
            except Exception as exc:
                # A shared store that is down: the reaper must outlive it.
                log.warning("REST worker reaper: %s; trying again next round", exc)

    async def reap(self) -> list[str]:
        """Remove the workers whose TTL passed and re-queue what they held;
        their ids."""
        now = self._now()
        expired = [
            (worker_id, worker)
            for worker_id, worker in self._workers.items()
            if now - worker.seen > self.ttl_seconds
            and worker.polls == 0
            and worker_id not in self._sockets
        ]
        presence = self._engine.workers.presence
        reaped = []
        for worker_id, worker in expired:
            try:
                if not await presence.may_release(worker_id):
                    log.info("REST worker %s talks to another instance now", worker_id)
                    self._forget(worker_id, worker, "it talks to another instance now")
                    continue
                lost = sorted({*worker.held, *await presence.leases(worker_id)})
            except Exception as exc:  # Redis unreachable: the next round retries
                if self._closing.is_set():
                    raise
                log.warning("REST worker %s: checking its TTL failed (%s)", worker_id, exc)
                continue
            for task_id in lost:
                if await self._engine.requeue_task(task_id, worker_id, "worker heartbeat expired"):
                    log.info("task %s of REST worker %s goes back to the queue", task_id, worker_id)
            silence = f"sent nothing for {self.ttl_seconds:.0f} s"
            self._forget(worker_id, worker, silence, dropped=True)
            reaped.append(worker_id)
        return reaped

    # -- helpers --

    async def _known(self, worker_id: str) -> _Worker:
        """The worker, registered here or through another instance
        (:class:`NotFound` if neither)."""
        worker = self._workers.get(check_worker_id(worker_id)) or await self._adopt(worker_id)
        if worker is None:
            raise _unknown(worker_id)
        return worker

    async def _adopt(self, worker_id: str) -> _Worker | None:
        """A REST worker registered through another instance, from its
        shared record; None if no instance knows it (or with one process)."""
        info = await self._engine.workers.presence.lookup(worker_id)
        if info is None or info.transport != worker_pb2.WORKER_TRANSPORT_REST:
            return None
        if worker_id in self._workers:  # adopted by a concurrent request
            return self._workers[worker_id]
        worker = self._add(info.registration, info.agent)
        worker.info.status = info.status
        return worker

    def _forget(
        self, worker_id: str, worker: _Worker, reason: str, *, dropped: bool = False
    ) -> None:
        socket = self._sockets.get(worker_id)
        if self._workers.get(worker_id) is worker:
            del self._workers[worker_id]
        self._engine.workers.disconnect(worker_id, socket, reason, dropped=dropped)

    def _touch(self, worker: _Worker) -> None:
        worker.seen = self._now()
        self._engine.workers.touch(worker.info.registration.worker_id)

    @staticmethod
    def _sync(worker: _Worker) -> None:
        del worker.info.active_task_ids[:]
        worker.info.active_task_ids.extend(sorted(worker.held))

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def _unknown(worker_id: str) -> NotFound:
    # "not found" is what makes SDK 1.0b20 register again.
    return NotFound(f"worker {worker_id!r} not found: it is not registered; register again")
