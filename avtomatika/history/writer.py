"""The history writer: engine events -> a bounded queue -> batched writes.

The engine publishes events synchronously after each commit; this service's
listener only puts them in a queue (``HISTORY_QUEUE_SIZE``) and returns, and
its own task writes them to the sink in batches. So history never slows a job
down, and a slow or unreachable database costs memory only up to the queue's
bound:

- queue full: the event is dropped and counted in :attr:`HistoryWriter.dropped`
  (for the metrics endpoint), with one warning when a burst of drops starts
  and one, saying how many were lost, when the writer has emptied the queue;
- database down: the batch is retried with exponential backoff while new
  events keep queueing (and, once the queue is full, are counted as dropped);
- stop: intake ends, then what is queued is flushed for up to
  ``SHUTDOWN_GRACE_SECONDS``; whatever could not be written by then is
  counted as dropped and logged.

Progress events are not kept: they are frequent, superseded by the next one,
and already on the job record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from avtomatika.backoff import backoff_delay
from avtomatika.config import Settings
from avtomatika.engine.events import E, EventBus, JobEvent
from avtomatika.errors import Unavailable
from avtomatika.history.sink import HistorySink, open_sink
from avtomatika.v1.history_pb2 import HistoryEvent

__all__ = ["HistoryWriter"]

log = logging.getLogger(__name__)

_BATCH_SIZE = 500
# Under load (a batch this big just went out), the next batch gathers for a
# while: one write of many events costs far less than many writes of few.
# A quiet writer writes at once.
_BUSY_BATCH = 16
_GATHER_SECONDS = 0.01
_RETRY_INITIAL_SECONDS = 0.1
_RETRY_MAX_SECONDS = 5.0


class HistoryWriter:
    """A service: subscribes to ``events`` at start, writes until stopped.

    ``sink`` overrides the backend chosen from ``HISTORY_DATABASE_URI``; the
    writer closes its sink when it stops either way.
    """

    def __init__(
        self,
        events: EventBus,
        settings: Settings,
        *,
        sink: HistorySink | None = None,
        retry_initial_seconds: float = _RETRY_INITIAL_SECONDS,
    ) -> None:
        self._bus = events
        self._settings = settings
        self._sink = sink
        self._retry_initial = retry_initial_seconds
        self._queue: asyncio.Queue[HistoryEvent] = asyncio.Queue(settings.history_queue_size)
        self._batch: list[HistoryEvent] = []  # being written, not yet in the sink
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._burst = 0
        self.dropped = 0
        """Events lost: queue full, or still unwritten when the writer stopped."""
        self.written = 0
        """Events handed to the sink."""

    @property
    def queued(self) -> int:
        """Events waiting to be written."""
        return self._queue.qsize() + len(self._batch)

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._sink is None:
            self._sink = await open_sink(self._settings)
        self._task = asyncio.create_task(self._run(self._sink), name="history-writer")
        self._unsubscribe = self._bus.subscribe(self._on_event)

    async def stop(self) -> None:
        """Stop intake, flush for up to the grace period, close the sink."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), self._settings.shutdown_grace_seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            lost = self.queued
            if lost:
                self.dropped += lost
                log.error("history: %d events could not be written before shutdown", lost)
            for _ in self._batch:
                self._queue.task_done()
            self._batch = []
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()
        sink, self._sink = self._sink, None
        if sink is not None:
            await sink.close()

    async def flush(self) -> None:
        """Wait until every event queued so far is written (or dropped)."""
        await self._queue.join()

    async def list_for_job(self, job_id: str) -> list[HistoryEvent]:
        """The events of ``job_id`` written so far, oldest first."""
        if self._sink is None:
            raise Unavailable("job history is not available while the orchestrator is stopped")
        return await self._sink.list_for_job(job_id)

    def _on_event(self, item: JobEvent) -> None:
        if item.event.type == E.HISTORY_EVENT_TYPE_PROGRESS:
            return
        try:
            self._queue.put_nowait(item.event)
        except asyncio.QueueFull:
            self.dropped += 1
            if not self._burst:
                log.warning(
                    "history: the write queue is full (HISTORY_QUEUE_SIZE=%d); dropping events "
                    "until it drains",
                    self._settings.history_queue_size,
                )
            self._burst += 1

    async def _run(self, sink: HistorySink) -> None:
        while True:
            self._batch = [await self._queue.get()]
            while len(self._batch) < _BATCH_SIZE and not self._queue.empty():
                self._batch.append(self._queue.get_nowait())
            await self._write(sink, self._batch)
            written = len(self._batch)
            for _ in self._batch:
                self._queue.task_done()
            self._batch = []
            if self._burst and self._queue.empty():
                log.warning("history: the write queue drained; %d events were dropped", self._burst)
                self._burst = 0
            if written >= _BUSY_BATCH:
                await asyncio.sleep(_GATHER_SECONDS)

    async def _write(self, sink: HistorySink, batch: list[HistoryEvent]) -> None:
        failures = 0
        while True:
            try:
                await sink.append(batch)
            except Unavailable as exc:
                if failures == 0:
                    log.warning("history: write failed, retrying with backoff: %s", exc)
                delay = backoff_delay(failures, base=self._retry_initial, cap=_RETRY_MAX_SECONDS)
                failures += 1
                await asyncio.sleep(delay)
                continue
            except Exception:
                # A batch the sink can never take (a bug) must not stop the
                # writer for good: drop it, loudly.
                log.exception("history: dropping a batch of %d events", len(batch))
                self.dropped += len(batch)
                return
            self.written += len(batch)
            if failures:
                log.warning("history: writing again after %d failed attempts", failures)
            return
