"""Removing a job's files once it ends (``S3_AUTO_CLEANUP``, on by default).

A listener on the engine's event bus queues the ids of ended jobs; one task
deletes their files, so the engine never waits on S3. Deletions still queued
at shutdown get up to ``SHUTDOWN_GRACE_SECONDS`` to finish. A failed deletion
is logged and not retried: the files stay until a bucket lifecycle rule or an
operator removes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from avtomatika.engine.events import E, EventBus, JobEvent
from avtomatika.errors import AvtomatikaError
from avtomatika.files.s3 import S3Files

__all__ = ["FileCleanup"]

log = logging.getLogger(__name__)


class FileCleanup:
    """Deletes ``jobs/{job_id}/`` when the job ends. A service."""

    def __init__(self, files: S3Files, events: EventBus, grace_seconds: float) -> None:
        self._files = files
        self._events = events
        self._grace = grace_seconds
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._unsubscribe: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Follow the event bus and start deleting. Idempotent."""
        if self._task is not None:
            return
        self._unsubscribe = self._events.subscribe(self._on_event, [E.HISTORY_EVENT_TYPE_JOB_ENDED])
        self._task = asyncio.create_task(self._run(), name="avtomatika-file-cleanup")

    async def stop(self) -> None:
        """Stop following, finish what is queued within the grace period. Idempotent."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        task, self._task = self._task, None
        if task is None:
            return
        self._queue.put_nowait(None)  # after every id already queued
        try:
            await asyncio.wait_for(asyncio.shield(task), self._grace)
        except TimeoutError:
            log.warning("file cleanup: %d job(s) left undeleted at shutdown", self._queue.qsize())
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_event(self, item: JobEvent) -> None:
        if item.event.type == E.HISTORY_EVENT_TYPE_JOB_ENDED:
            self._queue.put_nowait(item.event.job_id)

    async def _run(self) -> None:
        while (job_id := await self._queue.get()) is not None:
            try:
                deleted = await self._files.delete_job(job_id)
            except AvtomatikaError as exc:
                log.warning("file cleanup: could not delete the files of job %s: %s", job_id, exc)
            else:
                if deleted:
                    log.debug("file cleanup: deleted %d file(s) of job %s", deleted, job_id)
