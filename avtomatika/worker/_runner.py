"""The tasks a worker is running, and the flow control around them.

Tasks outlive streams: a handler keeps running while the worker reconnects,
and its result goes out on whichever stream is open when it ends. Results
stay in ``_unacked`` until the server acknowledges them and are sent again on
every new stream until then, so a result is never lost to a dropped stream
(the server's lease check makes a repeat harmless).

Credits are the concurrency limit. The invariant, on the attached stream:
``credits the server still holds + running tasks == max_concurrency``,
except while draining, when no credit is given back. A new stream starts
with ``max_concurrency - running`` credits, so tasks carried over from the
last stream keep their slots.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from avtomatika.v1.task_pb2 import TaskResult
from avtomatika.v1.worker_service_pb2 import (
    CancelAck,
    CancelTask,
    ConnectRequest,
    Credit,
    Drain,
    ResultAck,
    TaskAssignment,
    TaskProgress,
    Welcome,
)
from avtomatika.worker import _results
from avtomatika.worker._references import resolve_params
from avtomatika.worker._session import Session
from avtomatika.worker.errors import TaskFailure
from avtomatika.worker.task import SkillHandler, TaskContext

__all__ = ["Spawn", "TaskRunner"]

log = logging.getLogger("avtomatika.worker")

#: Starts a coroutine as a task the caller owns (``TaskGroup.create_task``).
Spawn = Callable[[Coroutine[Any, Any, TaskResult]], asyncio.Task[TaskResult]]


@dataclass
class _Running:
    assignment: TaskAssignment
    task: asyncio.Task[TaskResult] | None = None
    cancel_reason: str | None = None
    cancelled_by_server: bool = False


class TaskRunner:
    """Runs assigned tasks and reports them on the attached session."""

    def __init__(
        self,
        *,
        worker_id: str,
        handlers: Mapping[str, SkillHandler],
        max_concurrency: int,
        spawn: Spawn,
        result_limit: int = 0,
    ) -> None:
        self._worker_id = worker_id
        # The largest result data sent (0: any): what the channel can send,
        # or the server's MAX_PAYLOAD_BYTES once its Welcome says it.
        self._result_limit = result_limit
        self._handlers = handlers
        self._max_concurrency = max_concurrency
        self._spawn = spawn
        self._running: dict[str, _Running] = {}
        self._unacked: dict[str, TaskResult] = {}
        self._session: Session | None = None
        self._credits = 0
        self._drain_reason: str | None = None
        self._abandoned = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._acked = asyncio.Event()
        self._acked.set()

    # --- lifecycle, driven by the worker ---------------------------------------

    def attach(self, session: Session) -> int:
        """Make ``session`` the stream to report on; returns its initial credits.

        Queues what the new stream must carry after the Hello: the drain
        notice when stopping, and every result not yet acknowledged.
        """
        self._session = session
        self._credits = 0 if self.draining else self._max_concurrency - len(self._running)
        if self._drain_reason is not None:
            session.send(ConnectRequest(drain=Drain(reason=self._drain_reason)))
        for result in self._unacked.values():
            session.send(ConnectRequest(result=result))
        return self._credits

    def detach(self, session: Session) -> None:
        """The stream ended; report nothing more on it."""
        if self._session is session:
            self._session = None

    @property
    def draining(self) -> bool:
        """The worker is stopping: it takes no more tasks."""
        return self._drain_reason is not None

    def drain(self, reason: str) -> None:
        """Take no more tasks; tell the server so."""
        if self._drain_reason is not None:
            return
        self._drain_reason = reason
        if self._session is not None:
            self._session.send(ConnectRequest(drain=Drain(reason=reason)))

    def abandon(self) -> None:
        """The worker is being torn down: report nothing more, anywhere."""
        self._abandoned = True
        self._session = None

    def cancel_all(self, reason: str) -> None:
        """Cancel every running task; each reports a CANCELLED result."""
        for running in list(self._running.values()):
            self._cancel(running, reason)

    async def wait_idle(self) -> None:
        """Until no task is running."""
        await self._idle.wait()

    async def wait_acked(self) -> None:
        """Until the server has acknowledged every result."""
        await self._acked.wait()

    def held(self) -> list[str]:
        """Tasks this worker still holds: running, or done with a result
        the server has not acknowledged (the Hello of a new stream lists
        them, so the server re-queues any other task leased to it)."""
        return sorted({*self._running, *self._unacked})

    @property
    def unacked(self) -> int:
        """How many results await the server's acknowledgement."""
        return len(self._unacked)

    # --- SessionListener ---------------------------------------------------------

    def on_welcome(self, session: Session, welcome: Welcome) -> None:
        if welcome.worker_id and welcome.worker_id != self._worker_id:
            log.warning("the server registered worker %s as %s", self._worker_id, welcome.worker_id)
            self._worker_id = welcome.worker_id
        if welcome.max_payload_bytes:
            self._result_limit = welcome.max_payload_bytes
        log.info(
            "connected to %s as %s with skills [%s]",
            session.address,
            self._worker_id,
            ", ".join(self._handlers),
        )

    def on_task(self, session: Session, task: TaskAssignment) -> None:
        if task.task_id in self._running:
            # A server replaying a lease this worker still runs: the task goes
            # on as it is, and the credit the replay consumed comes back.
            log.info("task %s was assigned again; it is already running", task.task_id)
            if self._credits > 0:
                self._credits -= 1
                self._give_credit(session)
            return
        if self._credits <= 0:
            log.error("the server sent task %s without a credit; refusing it", task.task_id)
            refusal = TaskFailure.transient("the worker had no free slot (no credit was granted)")
            self._report(session, _results.failure_result(task, self._worker_id, refusal))
            return
        self._credits -= 1
        handler = self._handlers.get(task.type)
        if handler is None:
            unknown = TaskFailure.transient(f"this worker has no skill {task.type!r}")
            self._report(session, _results.failure_result(task, self._worker_id, unknown))
            self._give_credit(session)
            return
        running = _Running(task)
        self._running[task.task_id] = running
        self._idle.clear()
        context = TaskContext(
            task_id=task.task_id,
            job_id=task.job_id,
            task_type=task.type,
            attempt=task.attempt,
            worker_id=self._worker_id,
            deadline_ms=task.result_deadline_ms or None,
            tracing_context=dict(task.tracing_context),
            progress_reporter=lambda progress, message: self._progress(task, progress, message),
        )
        running.task = self._spawn(self._execute(task, handler, context))
        running.task.add_done_callback(lambda done: self._finished(running, done))

    def on_cancel(self, session: Session, cancel: CancelTask) -> None:
        running = self._running.get(cancel.task_id)
        if running is None:
            # Not running here (finished, or never received): nothing to
            # stop. The ack tells the server so; a finished task's result
            # has been or will be sent anyway.
            session.send(ConnectRequest(cancel_ack=CancelAck(task_id=cancel.task_id)))
            return
        self._cancel(running, cancel.reason or "cancelled by the server", by_server=True)

    def on_drain(self, session: Session, drain: Drain) -> None:
        log.info("%s asked the worker to drain: %s", session.address, drain.reason)
        self._hang_up_if_drained()

    def on_result_ack(self, session: Session, ack: ResultAck) -> None:
        if self._unacked.pop(ack.task_id, None) is None:
            return
        if not ack.accepted:
            log.info("the server ignored the result of task %s: %s", ack.task_id, ack.reason)
        if not self._unacked:
            self._acked.set()
        self._hang_up_if_drained()

    # --- tasks ---------------------------------------------------------------------

    async def _execute(
        self, task: TaskAssignment, handler: SkillHandler, context: TaskContext
    ) -> TaskResult:
        try:
            params = await resolve_params(_results.decode_params(task))
            returned = await handler(params, context)
        except TaskFailure as failure:
            return _results.failure_result(task, self._worker_id, failure)
        except Exception as exc:
            log.exception("the %r handler failed on task %s", task.type, task.task_id)
            return _results.exception_result(task, self._worker_id, exc)
        return _results.handler_result(task, self._worker_id, returned)

    def _cancel(self, running: _Running, reason: str, *, by_server: bool = False) -> None:
        # A task that is already done has its result; the cancel came too late.
        if running.task is None or running.task.done():
            return
        running.cancelled_by_server |= by_server
        if running.cancel_reason is None:
            running.cancel_reason = reason
            running.task.cancel(reason)

    def _finished(self, running: _Running, task: asyncio.Task[TaskResult]) -> None:
        assignment = running.assignment
        del self._running[assignment.task_id]
        if not self._running:
            self._idle.set()
        if self._abandoned or (not task.cancelled() and task.exception() is not None):
            # The worker is being torn down (run() was cancelled, or a
            # BaseException escaped the handler): nobody is left to report to.
            return
        if running.cancel_reason is not None:
            # Whatever the handler did after the cancel (even returning), the
            # task stopped because it was cancelled.
            result = _results.cancelled_result(assignment, self._worker_id, running.cancel_reason)
        elif task.cancelled():
            unexpected = TaskFailure.transient("the handler raised CancelledError by itself")
            result = _results.failure_result(assignment, self._worker_id, unexpected)
        else:
            result = task.result()
        size = len(result.data.data)
        if self._result_limit and size > self._result_limit:
            # Sent, it would end the stream (or be refused) on every
            # reconnect: the job learns why instead.
            too_big = TaskFailure.invalid_input(
                f"the {assignment.type!r} handler's result data is {size} bytes, over the "
                f"{self._result_limit} bytes the server accepts (MAX_PAYLOAD_BYTES); return "
                "big outputs as job files (S3)"
            )
            result = _results.failure_result(assignment, self._worker_id, too_big)
        session = self._session
        if session is not None and running.cancelled_by_server:
            session.send(ConnectRequest(cancel_ack=CancelAck(task_id=assignment.task_id)))
        self._report(session, result)
        if session is not None:
            self._give_credit(session)
        self._hang_up_if_drained()

    def _report(self, session: Session | None, result: TaskResult) -> None:
        # Kept until acknowledged; without a session it goes out on the next.
        self._unacked[result.task_id] = result
        self._acked.clear()
        if session is not None:
            session.send(ConnectRequest(result=result))

    def _give_credit(self, session: Session) -> None:
        if self.draining or session.drained:
            return
        self._credits += 1
        session.send(ConnectRequest(credit=Credit(credits=1)))

    def _progress(self, task: TaskAssignment, progress: float, message: str) -> None:
        if self._session is None or task.task_id not in self._running:
            return
        self._session.send(
            ConnectRequest(
                progress=TaskProgress(
                    task_id=task.task_id, job_id=task.job_id, progress=progress, message=message
                )
            )
        )

    def _hang_up_if_drained(self) -> None:
        # The server drained this stream and everything on it is settled:
        # hang up so the worker reconnects, to the next address first.
        session = self._session
        if session is not None and session.drained and not self._running and not self._unacked:
            session.close()
