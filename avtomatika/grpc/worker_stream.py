"""``WorkerService``: ``Connect``, one bidirectional stream per worker
connection, and the unary RPCs of workers that poll instead (served by
:class:`~avtomatika.services.worker_api.WorkerApi`, as the REST worker API is).

Per stream, background coroutines share a session with the RPC's own
generator:

- the reader handles what the worker sends (credits, results, progress,
  heartbeats), in order; its receiver reads ahead meanwhile, and what
  arrived during one handling is handled next as one batch;
- the watchdog ends the stream after three heartbeat intervals of silence;
- the feeder waits for a credit, then for a task, and leases it;
- the heart sends a heartbeat every interval;
- the RPC generator is the only writer (grpc.aio allows one write at a
  time): it yields what the others put in the outbound queue.

Batches: every stream message costs a read or a write that completes on
another thread and resumes a coroutine here, so under load the number of
messages, more than their size, limits a stream. A worker whose Hello sets
``accepts_batches`` gets what is queued at once (e.g. the acks of several
results, or tasks) in one ``ResponseBatch``; the Welcome tells workers that
this server reads ``RequestBatch`` (a result with the credit it frees). A
batch means exactly its messages, in order.

Acks wait a little for company: result acks with nothing else queued (to a
worker that takes batches) are held up to ``_ACK_LINGER_SECONDS`` for the
next message of another kind (typically the worker's next task) and queued
just before it, so both go in one batch. Under load they have company
anyway; at a moderate rate each ack would otherwise be a write of its own
(a completion through grpc's poller thread, a wake-up of this loop) and a
read on the worker, for every job. Nothing waits on an ack but the worker's
bookkeeping (the results it would send again on a new stream); a worker
that drains gets its acks at once, and so does one whose stream ends.

Leases belong to the worker id, not to the stream (see
:mod:`avtomatika.engine.registry`). When a stream ends, for whatever reason (EOF,
silence, a network error), the worker has ``WORKER_RECONNECT_GRACE_SECONDS``
to open a new one and keep its leases; after that every task still leased to
it goes back to the queue as a new attempt, so no task is lost to a
disconnect. A second stream for the same id replaces the first: the old one
gets a Drain and is closed, and the new one takes over its leases.

The time from pushing a cancel to the worker's CancelAck is measured here and
sent on the registry's ``cancel_acked`` signal (metrics observe it as
``avtomatika_cancel_ack_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import grpc

from avtomatika.access.authenticator import Authenticator
from avtomatika.access.peer import presented
from avtomatika.batches import Batcher
from avtomatika.clock import now_ms
from avtomatika.engine.core import Engine
from avtomatika.engine.registry import WorkerChange
from avtomatika.engine.results import undeliverable
from avtomatika.errors import InvalidArgument, Unauthenticated, Unavailable
from avtomatika.grpc.peer import names_of
from avtomatika.grpc.status import abort, rpc_errors
from avtomatika.logs.scope import identify
from avtomatika.payload import message_limit
from avtomatika.services.worker_api import (
    AGENT_LENGTH,
    WorkerApi,
    certificate_refusal,
    registration_problem,
)
from avtomatika.v1 import worker_pb2, worker_service_pb2_grpc
from avtomatika.v1.task_pb2 import Task, TaskResult
from avtomatika.v1.worker_pb2 import WorkerInfo
from avtomatika.v1.worker_service_pb2 import (
    CancelTask,
    ConnectRequest,
    ConnectResponse,
    Drain,
    Heartbeat,
    HeartbeatRequest,
    HeartbeatResponse,
    Hello,
    NextTaskRequest,
    NextTaskResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    ReportEventRequest,
    ReportEventResponse,
    ResponseBatch,
    ResultAck,
    SubmitResultRequest,
    SubmitResultResponse,
    TaskAssignment,
    Welcome,
)

__all__ = ["WorkerStreamService"]

log = logging.getLogger(__name__)

_MISSED_HEARTBEATS = 3
# How long handling a worker's batch may run before it yields to the loop:
# short enough for dispatch latency, long enough that results still pile up
# into batches (yielding after every message halved the batching gain).
_BATCH_SLICE_SECONDS = 0.001
# How long one claim of the feeder waits before it starts afresh.
_CLAIM_REFRESH_SECONDS = 2.0
# Results of one batch settled concurrently, at most.
_RESULTS_AT_ONCE = 32
# Tasks one claim leases at most, whatever the worker's credits: a claim is
# one script, which holds Redis (every instance's) while it runs.
_MOST_PER_CLAIM = 64
# Messages read ahead of their handling, at most (each up to the server's
# message limit, MAX_PAYLOAD_BYTES plus its headroom).
_READ_AHEAD = 64
# How long acks with nothing else to go with wait for a message of another
# kind (to a batching worker): at 100 tasks/s a worker's next task comes
# within 10 ms, and a worker with nothing more to do gets its acks this late.
_ACK_LINGER_SECONDS = 0.02
# What a worker whose Hello does not say receives at most: gRPC's default.
_GRPC_DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024


class WorkerStreamService(worker_service_pb2_grpc.WorkerServiceServicer):
    """Serves worker streams for an engine."""

    def __init__(self, engine: Engine, auth: Authenticator, polling: WorkerApi) -> None:
        self._engine = engine
        self._auth = auth
        self._polling = polling
        self._open = 0
        self._none_open = asyncio.Event()
        self._none_open.set()

    async def streams_closed(self) -> None:
        """Until every stream has ended and cleaned up after itself. grpc's
        ``Server.stop`` returns before that: it closes a cancelled stream's
        generator in a task of its own, whose clean-up (the worker's leases
        re-queued) needs the store that stopping closes next."""
        await self._none_open.wait()

    async def Connect(
        self,
        request_iterator: AsyncIterator[ConnectRequest],
        context: grpc.aio.ServicerContext[ConnectRequest, ConnectResponse],
    ) -> AsyncIterator[ConnectResponse]:
        session = await self._greet(request_iterator, context)
        messages = session.serve()
        self._open += 1
        self._none_open.clear()
        try:
            async for message in messages:
                yield message
        except Unavailable as exc:
            # The shared store is down: the worker reconnects (with backoff)
            # and sends again the results it got no ack for.
            await abort(context, exc)
        finally:
            # grpc may close this generator while it waits at a yield (the
            # peer went away mid-write). `async for` leaves the session's
            # generator open then, and its cleanup (the worker gone, its
            # tasks re-queued) would wait for the garbage collector.
            try:
                await messages.aclose()
            finally:
                self._open -= 1
                if not self._open:
                    self._none_open.set()

    async def _greet(
        self,
        request_iterator: AsyncIterator[ConnectRequest],
        context: grpc.aio.ServicerContext[ConnectRequest, ConnectResponse],
    ) -> _Session:
        """The session of a stream whose token and Hello are good; else the
        stream is aborted (raises)."""
        raw = dict(context.invocation_metadata() or ()).get("x-worker-token")
        token = raw if isinstance(raw, str) else None
        if not self._auth.worker(token):
            await abort(context, Unauthenticated("missing or invalid x-worker-token"))
        interval = self._engine.config.worker_heartbeat_interval_seconds
        try:
            async with asyncio.timeout(interval * _MISSED_HEARTBEATS):
                first = await anext(request_iterator, None)
        except TimeoutError:
            # No error of ours: the call timed out, as gRPC's own deadlines do.
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no Hello received")
        if first is None or first.WhichOneof("kind") != "hello":
            await abort(context, InvalidArgument("the first message must be a Hello"))
        problem = _check_hello(first.hello)
        if problem:
            await abort(context, InvalidArgument(problem))
        worker_id = first.hello.registration.worker_id
        if not self._auth.worker_may_claim(token, worker_id):
            await abort(
                context,
                Unauthenticated(f"this x-worker-token may not register as worker {worker_id!r}"),
            )
        if not self._auth.certificate_may_claim(names_of(context), worker_id):
            await abort(context, Unauthenticated(certificate_refusal(worker_id)))
        identify(f"worker:{worker_id}")
        return _Session(self._engine, first.hello, request_iterator, _agent(context))

    # The unary RPCs: the legacy REST worker API's use cases over gRPC, for
    # workers that poll rather than hold a stream (the same books: a worker
    # may register over one and poll over the other).

    async def RegisterWorker(
        self,
        request: RegisterWorkerRequest,
        context: grpc.aio.ServicerContext[RegisterWorkerRequest, RegisterWorkerResponse],
    ) -> RegisterWorkerResponse:
        async with _worker_call(context):
            await self._polling.register(
                _worker_token(context), request.registration, agent=_agent(context)
            )
            return RegisterWorkerResponse(status="registered")

    async def Heartbeat(
        self,
        request: HeartbeatRequest,
        context: grpc.aio.ServicerContext[HeartbeatRequest, HeartbeatResponse],
    ) -> HeartbeatResponse:
        """A full heartbeat, as a REST heartbeat with a body: the worker's
        status and the tasks it runs (those it leaves out go back to the
        queue; those cancelled come back in ``cancel_task_ids``)."""
        async with _worker_call(context):
            cancel = await self._polling.heartbeat(
                _worker_token(context), request, request.worker_id, agent=_agent(context)
            )
            return HeartbeatResponse(status="ok", cancel_task_ids=cancel or [])

    async def NextTask(
        self,
        request: NextTaskRequest,
        context: grpc.aio.ServicerContext[NextTaskRequest, NextTaskResponse],
    ) -> NextTaskResponse:
        """A long-poll of at most ``WORKER_POLL_TIMEOUT_SECONDS``: the next
        task, or an empty response when none came."""
        async with _worker_call(context):
            task = await self._polling.next_task(_worker_token(context), request.worker_id)
            if task is None:
                return NextTaskResponse()
            if context.done():
                # The caller gave up (its deadline) while the task came.
                await self._polling.give_back(request.worker_id, task.task_id)
                return NextTaskResponse()
            return NextTaskResponse(task=_assignment(task))

    async def SubmitResult(
        self,
        request: SubmitResultRequest,
        context: grpc.aio.ServicerContext[SubmitResultRequest, SubmitResultResponse],
    ) -> SubmitResultResponse:
        async with _worker_call(context):
            verdict = await self._polling.submit_result(_worker_token(context), request.result)
            if verdict.accepted:
                return SubmitResultResponse(status="accepted", transition=verdict.transition)
            return SubmitResultResponse(
                status="ignored", reason=verdict.reason, message=verdict.message
            )

    async def ReportEvent(
        self,
        request: ReportEventRequest,
        context: grpc.aio.ServicerContext[ReportEventRequest, ReportEventResponse],
    ) -> ReportEventResponse:
        async with _worker_call(context):
            if not request.task_id:
                raise InvalidArgument("task_id is required (a non-empty string)")
            if request.event_type != "progress":
                return ReportEventResponse(
                    status="ignored",
                    reason="unsupported",
                    message=f"event type {request.event_type!r} is not used here",
                )
            recorded = await self._polling.report_progress(
                _worker_token(context),
                request.worker_id,
                request.task_id,
                request.progress,
                request.message,
            )
            if not recorded:
                return ReportEventResponse(
                    status="ignored",
                    reason="stale",
                    message=f"task {request.task_id!r} is not running on this worker",
                )
            return ReportEventResponse(status="event_accepted")


def _agent(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """What the worker says it is: the call's user-agent metadata (grpc
    libraries send their own name and version there; an SDK adds its own)."""
    agent = dict(context.invocation_metadata() or ()).get("user-agent")
    return agent[:AGENT_LENGTH] if isinstance(agent, str) else ""


@contextlib.asynccontextmanager
async def _worker_call(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """Around a unary worker RPC: its client certificate's names current
    for the use case (TLS_BIND_WORKER_IDENTITY), its errors as statuses."""
    with presented(names_of(context)):
        async with rpc_errors(context):
            yield


def _worker_token(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    token = dict(context.invocation_metadata() or ()).get("x-worker-token")
    return token if isinstance(token, str) else None


def _check_hello(hello: Hello) -> str:
    problem = registration_problem(hello.registration)
    if problem is not None:
        return problem
    if not hello.registration.skills:
        return "a worker needs at least one skill"
    return ""


class _Session:
    """One live stream; the worker registry's :class:`CancelSink` and
    :class:`DrainSink` for it."""

    def __init__(
        self,
        engine: Engine,
        hello: Hello,
        requests: AsyncIterator[ConnectRequest],
        agent: str = "",
    ) -> None:
        self._engine = engine
        self._requests = requests
        self.worker_id = hello.registration.worker_id
        self._skills = list(dict.fromkeys(hello.registration.skills))
        self._interval = engine.config.worker_heartbeat_interval_seconds
        self._outbound: asyncio.Queue[ConnectResponse | None] = asyncio.Queue()
        self._batches = hello.accepts_batches
        # A task bigger than this would tear the worker's stream down (its
        # channel refuses the message): it fails instead of being sent.
        self._receive_limit = hello.max_receive_message_bytes or _GRPC_DEFAULT_RECEIVE_BYTES
        # What the worker says it still holds from earlier streams (None:
        # it does not say, and keeps every lease).
        self._reported: set[str] | None = (
            set(hello.held_task_ids) if hello.reports_held_tasks else None
        )
        self._batcher = Batcher(self._outbound)
        # Acks waiting for company (see _queue_acks), and the timer that
        # sends them anyway.
        self._lingering: list[ConnectResponse] = []
        self._linger_timer: asyncio.TimerHandle | None = None
        self._heard = 0.0
        self._credits = hello.initial_credits
        self._can_take = asyncio.Event()
        self._draining = False
        # Replaced by the worker's shared lease set once registered.
        self._held: set[str] = set()
        self._slot_freed = asyncio.Event()
        self._cancels_sent: dict[str, float] = {}
        self._feeder: asyncio.Task[None] | None = None
        # How the stream ended, for the disconnect line.
        self._ended = "the stream ended"
        self._info = WorkerInfo(
            registration=hello.registration,
            status=worker_pb2.WORKER_STATUS_IDLE,
            transport=worker_pb2.WORKER_TRANSPORT_GRPC,
            agent=agent,
        )
        self._update_gate()

    # CancelSink
    def push_cancel(self, task_id: str, job_id: str, reason: str) -> bool:
        # A local duration, so the monotonic clock (not shared state).
        self._cancels_sent.setdefault(task_id, time.monotonic())
        self._send(
            ConnectResponse(cancel=CancelTask(task_id=task_id, job_id=job_id, reason=reason))
        )
        return True

    # DrainSink
    def push_drain(self, reason: str) -> bool:
        self._drain()
        self._send(ConnectResponse(drain=Drain(reason=reason)))
        return True

    def close_replaced(self) -> None:
        """A newer stream for this worker id took over: drain and end this one."""
        self._ended = "replaced by a newer stream"
        self.push_drain("replaced by a newer stream for this worker id")
        self._send(None)

    async def serve(self) -> AsyncGenerator[ConnectResponse, None]:
        """Run the session; yields what must be written to the stream."""
        registry = self._engine.workers
        joined = registry.connect(self._info, self)
        self._held = joined.leases
        if isinstance(joined.replaced, _Session):
            log.info("worker %s opened a second stream; closing the first", self.worker_id)
            joined.replaced.close_replaced()
        if self._reported is not None:
            # Before the feeder starts: nothing is leased on this stream yet.
            lost = await self._engine.requeue_unheld(self.worker_id, self._reported)
            self._held.difference_update(lost)
        self._update_leases()
        self._update_gate()
        self._outbound.put_nowait(
            ConnectResponse(
                welcome=Welcome(
                    worker_id=self.worker_id,
                    heartbeat_interval_ms=int(self._interval * 1000),
                    accepts_batches=True,
                    max_receive_message_bytes=message_limit(self._engine.config.max_payload_bytes),
                    max_payload_bytes=self._engine.config.max_payload_bytes,
                )
            )
        )
        self._heard = asyncio.get_running_loop().time()
        reader = asyncio.create_task(self._read(), name=f"worker-{self.worker_id}-read")
        watchdog = asyncio.create_task(self._watch(), name=f"worker-{self.worker_id}-watch")
        self._feeder = feeder = asyncio.create_task(
            self._feed(), name=f"worker-{self.worker_id}-feed"
        )
        loops = [
            reader,
            watchdog,
            self._feeder,
            asyncio.create_task(self._beat(), name=f"worker-{self.worker_id}-beat"),
        ]
        # The reader's end (EOF, error) or the watchdog's (silence) ends the
        # stream: it puts a None sentinel in the outbound queue. So does the
        # feeder's failure (a claim Redis did not answer); its other ends
        # (drained, replaced) leave the stream to finish its tasks.
        for ender in (reader, watchdog):
            ender.add_done_callback(lambda _: self._send(None))
        feeder.add_done_callback(self._end_if_failed)
        try:
            # The Welcome goes on its own: a worker learns from it whether
            # this server batches.
            while (message := await self._outbound.get()) is not None:
                yield message
                if self._batches:
                    break
            else:
                _raise_unavailable(reader, feeder)
                return
            while batch := await self._batcher.next():
                if len(batch) == 1:
                    yield batch[0]
                else:
                    yield ConnectResponse(batch=ResponseBatch(messages=batch))
            _raise_unavailable(reader, feeder)
        finally:
            if self._linger_timer is not None:
                self._linger_timer.cancel()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            # Without a grace period (or at shutdown) the leases go back now;
            # otherwise the registry re-queues them if the worker stays away.
            silent = watchdog.done() and not watchdog.cancelled()
            gone = registry.disconnect(self.worker_id, self, self._ended, dropped=silent)
            for task_id in gone:
                reason = "worker disconnected"
                if await self._engine.requeue_task(task_id, self.worker_id, reason):
                    log.info("worker %s left; task %s re-queued", self.worker_id, task_id)

    def _send(self, message: ConnectResponse | None) -> None:
        """Queue a message other than an ack (None: the end) for the writer,
        after the acks lingering, which were ready first."""
        self._flush_acks()
        self._outbound.put_nowait(message)

    def _queue_acks(self, acks: list[ConnectResponse]) -> None:
        """Queue acks for the writer; when nothing else is queued, to a
        batching worker that is not draining, they linger instead until the
        next message is sent (see :meth:`_send`) or the timer runs out. The
        writer is not even woken for them meanwhile."""
        if not (self._batches and not self._draining and self._outbound.empty()):
            for ack in acks:
                self._outbound.put_nowait(ack)
            return
        self._lingering.extend(acks)
        if self._linger_timer is None:
            loop = asyncio.get_running_loop()
            self._linger_timer = loop.call_later(_ACK_LINGER_SECONDS, self._flush_acks)

    def _flush_acks(self) -> None:
        """Queue the acks lingering, if any, for the writer."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        for ack in self._lingering:
            self._outbound.put_nowait(ack)
        self._lingering.clear()

    def _end_if_failed(self, loop: asyncio.Task[None]) -> None:
        if not loop.cancelled() and loop.exception() is not None:
            self._send(None)

    async def _read(self) -> None:
        """Handle what the worker sends, in order. A receiver reads on while a
        message is being handled, and whatever arrived meanwhile is handled
        next as one batch: a worker that sends each result in a message of
        its own still has its results settled together (their commits share
        Redis round trips), instead of one settle, and one read, at a time."""
        arrived: asyncio.Queue[ConnectRequest | None] = asyncio.Queue()
        room = asyncio.Semaphore(_READ_AHEAD)
        receiver = asyncio.create_task(
            self._receive(arrived, room), name=f"worker-{self.worker_id}-receive"
        )
        try:
            batches = Batcher(arrived)
            while messages := await batches.next():
                for _ in messages:
                    room.release()
                if len(messages) == 1:
                    await self._handle(messages[0])
                else:
                    await self._handle_batch(_flattened(messages))
            await receiver  # the error that ended the reading, if one did
        finally:
            receiver.cancel()

    async def _receive(
        self, arrived: asyncio.Queue[ConnectRequest | None], room: asyncio.Semaphore
    ) -> None:
        """Read the stream into ``arrived``, at most ``_READ_AHEAD`` messages
        ahead of their handling (so a worker cannot fill memory faster than
        it is served); ``None`` follows the last, however the reading ends."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await room.acquire()
                message = await anext(self._requests, None)
                if message is None:
                    return
                self._heard = loop.time()
                self._engine.workers.touch(self.worker_id)
                arrived.put_nowait(message)
        finally:
            arrived.put_nowait(None)

    async def _watch(self) -> None:
        """Return once the worker has been silent for three heartbeat
        intervals. One sleep per interval, rather than a timer per message."""
        loop = asyncio.get_running_loop()
        silence = self._interval * _MISSED_HEARTBEATS
        # A deadline that every message moves: nothing to wait on but time.
        while (remaining := self._heard + silence - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
        self._ended = f"silent for {_MISSED_HEARTBEATS} heartbeat intervals"

    async def _handle(self, message: ConnectRequest) -> None:
        kind = message.WhichOneof("kind")
        if kind == "batch":
            await self._handle_batch(message.batch.messages)
        elif kind == "credit":
            self._handle_credit(message.credit.credits)
        elif kind == "result":
            await self._settle_all([message.result])
        elif kind == "progress":
            p = message.progress
            await self._engine.report_progress(self.worker_id, p.task_id, p.progress, p.message)
        elif kind == "cancel_ack":
            task_id = message.cancel_ack.task_id
            sent = self._cancels_sent.pop(task_id, None)
            if sent is not None:
                self._engine.workers.cancel_acked.send(time.monotonic() - sent)
            if not await self._engine.holds(self.worker_id, task_id):
                self._release(task_id)
                self._update_gate()
        elif kind == "drain":
            self._drain()
            change = WorkerChange("draining", self.worker_id, reason="the worker is stopping")
            self._engine.workers.changes.send(change)
        # heartbeat: reading it was the point.

    async def _handle_batch(self, messages: Sequence[ConnectRequest]) -> None:
        """The messages of a batch in order, except that results are settled
        together (up to ``_RESULTS_AT_ONCE``; on a shared store their reads
        and commits then share round trips), the credits among them applied
        once they are (a credit frees the slot of the result before it).
        Acks go out in the order of the results."""
        loop = asyncio.get_running_loop()
        slice_ends = loop.time() + _BATCH_SLICE_SECONDS
        results: list[TaskResult] = []
        credits = 0
        for inner in messages:
            kind = inner.WhichOneof("kind")
            if kind == "credit":
                credits += inner.credit.credits
                continue
            if kind == "result":
                results.append(inner.result)  # a repeat settles after the first
                if len(results) < _RESULTS_AT_ONCE:
                    continue
            await self._settle_all(results)
            results = []
            if credits:
                self._handle_credit(credits)
                credits = 0
            if kind in ("batch", "hello"):
                log.warning("worker %s sent a batch holding a %s; skipped", self.worker_id, kind)
            elif kind != "result":
                await self._handle(inner)
            if loop.time() >= slice_ends:
                # A big batch must not hold the loop: let steps and claims
                # run (dispatch latency), then go on.
                await asyncio.sleep(0)
                slice_ends = loop.time() + _BATCH_SLICE_SECONDS
        await self._settle_all(results)
        if credits:
            self._handle_credit(credits)

    async def _settle_all(self, results: list[TaskResult]) -> None:
        """Settle ``results`` and queue their acks in order: those of
        different jobs concurrently, those of one job one after another
        (together they would only race for the job's next version)."""
        if not results:
            return
        acks: list[ConnectResponse | None] = [None] * len(results)

        async def settle_in_turn(indices: list[int]) -> None:
            for i in indices:
                acks[i] = await self._settle(results[i])

        by_job: dict[str, list[int]] = {}
        for i, result in enumerate(results):
            by_job.setdefault(result.job_id, []).append(i)
        if len(by_job) == 1:
            await settle_in_turn(list(range(len(results))))
        else:
            await asyncio.gather(*(settle_in_turn(indices) for indices in by_job.values()))
        settled = [ack for ack in acks if ack is not None]
        assert len(settled) == len(results)  # every result has its ack
        self._queue_acks(settled)
        self._update_gate()

    def _handle_credit(self, credits: int) -> None:
        self._credits += credits
        self._update_gate()

    async def _settle(self, result: TaskResult) -> ConnectResponse:
        """Apply one result; the ack to send."""
        result.worker_id = self.worker_id  # never trust the claimed id
        self._cancels_sent.pop(result.task_id, None)
        verdict = await self._engine.submit_result(result)
        # A rejected result (e.g. naming the wrong job) leaves the lease in
        # place: forget the task only once it is no longer ours, or a
        # disconnect would not re-queue it and the job would wait forever.
        if verdict.accepted or not await self._engine.holds(self.worker_id, result.task_id):
            self._release(result.task_id)
        return ConnectResponse(
            result_ack=ResultAck(
                task_id=result.task_id,
                accepted=verdict.accepted,
                reason=verdict.reason,
                transition=verdict.transition,
            )
        )

    async def _feed(self) -> None:
        while True:
            await self._can_take.wait()
            limit = self._info.registration.resources.max_concurrent_tasks
            if limit and len(self._held) >= limit:
                # A credit came before the result that frees a slot: no task
                # may go out until a slot is free (looked at again every few
                # seconds: an earlier stream of the worker shares the set).
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_CLAIM_REFRESH_SECONDS):
                        await self._slot_freed.wait()
                continue
            # A claim judges the worker as it was when it began; one that
            # found nothing starts afresh every few seconds. It takes as
            # many queued tasks as the worker has credits for: a backlog
            # drains in one claim, not one claim per task.
            free = min(self._credits, _MOST_PER_CLAIM)
            if limit:
                free = min(free, limit - len(self._held))
            tasks = await self._engine.next_tasks(
                self.worker_id, self._skills, _CLAIM_REFRESH_SECONDS, max(free, 1)
            )
            if tasks and not self._engine.workers.is_current(self.worker_id, self):
                # Replaced while claiming: this stream is closing and the
                # worker would never see the tasks, so they go straight back.
                for task in tasks:
                    await self._engine.requeue_task(
                        task.task_id, self.worker_id, "the worker's stream was replaced"
                    )
                return
            # No await between the claim and here: the leases are recorded
            # before anything can cancel this coroutine.
            unsendable: list[tuple[Task, int]] = []
            for task in tasks:
                self._held.add(task.task_id)
                self._info.active_task_ids.append(task.task_id)
                message = ConnectResponse(task=_assignment(task))
                size = message.ByteSize()
                if size > self._receive_limit:
                    unsendable.append((task, size))
                    continue
                self._credits -= 1
                self._send(message)
            self._update_gate()
            for task, size in unsendable:
                await self._fail_unsendable(task, size)

    async def _fail_unsendable(self, task: Task, size: int) -> None:
        """Fail a leased task too big for the worker's channel (it would
        refuse the message and end the stream, every attempt, and with it
        the other tasks it runs): the job learns why, the worker nothing."""
        log.warning(
            "task %s of job %s is %d bytes, over worker %s's limit of %d; failing it",
            task.task_id,
            task.job_id,
            size,
            self.worker_id,
            self._receive_limit,
        )
        message = (
            f"task {task.task_id} could not be delivered: it is {size} bytes, over the "
            f"{self._receive_limit} bytes worker {self.worker_id!r} receives (its gRPC "
            "max_receive_message_length); raise the worker's limit or pass big data as job "
            "files (S3)"
        )
        failure = undeliverable(
            TaskResult(task_id=task.task_id, job_id=task.job_id, worker_id=self.worker_id),
            message,
        )
        await self._settle(failure)  # its ack is not sent: the worker never had the task
        self._update_gate()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._send(ConnectResponse(heartbeat=Heartbeat(sent_at_ms=now_ms())))

    def _drain(self) -> None:
        """Take no more tasks on this stream, for good. The feeder may be
        waiting for a task already: cancel it (a claim is cancel-safe)."""
        self._draining = True
        self._flush_acks()
        self._update_gate()
        if self._feeder is not None:
            self._feeder.cancel()

    def _update_gate(self) -> None:
        if self._credits > 0 and not self._draining:
            self._can_take.set()
        else:
            self._can_take.clear()
        busy = bool(self._held)
        self._info.status = (
            worker_pb2.WORKER_STATUS_DRAINING
            if self._draining
            else worker_pb2.WORKER_STATUS_BUSY
            if busy
            else worker_pb2.WORKER_STATUS_IDLE
        )
        if len(self._info.active_task_ids) != len(self._held):
            # The lease set is shared with an earlier stream of the worker,
            # which may have settled a task: list the leases afresh.
            self._update_leases()

    def _update_leases(self) -> None:
        """List the leases in the worker's record (the dispatcher counts them)."""
        del self._info.active_task_ids[:]
        self._info.active_task_ids.extend(sorted(self._held))

    def _release(self, task_id: str) -> None:
        """The task is no longer this worker's."""
        if task_id in self._held:
            self._held.discard(task_id)
            self._slot_freed.set()
            try:
                self._info.active_task_ids.remove(task_id)
            except ValueError:
                self._update_leases()


def _flattened(messages: Sequence[ConnectRequest]) -> list[ConnectRequest]:
    """Messages read one after another, as one batch: the contents of the
    worker's own batches in place, its mid-stream Hellos left out (they are
    ignored wherever they come)."""
    flat: list[ConnectRequest] = []
    for message in messages:
        kind = message.WhichOneof("kind")
        if kind == "batch":
            flat.extend(message.batch.messages)
        elif kind != "hello":
            flat.append(message)
    return flat


def _assignment(task: Task) -> TaskAssignment:
    return TaskAssignment(
        task_id=task.task_id,
        job_id=task.job_id,
        type=task.type,
        params=task.params,
        attempt=task.attempt,
        result_deadline_ms=task.result_deadline_ms,
        tracing_context=task.tracing_context,
    )


def _raise_unavailable(*loops: asyncio.Task[None]) -> None:
    """Raise the :class:`Unavailable` that ended one of a stream's ``loops``
    (a result or a claim the store did not take), if one did: the stream
    then ends UNAVAILABLE, and the worker reconnects and reports again."""
    for loop in loops:
        if loop.done() and not loop.cancelled():
            failure = loop.exception()
            if isinstance(failure, Unavailable):
                raise failure
