"""Job events for the followers of other instances.

A client following a job (``GET /api/v1/jobs/{id}?wait=``, Server-Sent
Events) waits on the instance it asked, while the job may change on any. So
every instance relays what followers need of its own job events over
``Keys.events_channel``: per event the job id and either the job's record
after it or "re-read" (events that carry no record, such as progress). The
other instances hand them to their :class:`~avtomatika.engine.followers.JobFollowers`;
history, webhooks and metrics never see relayed events, so each event is
handled once, where it happened.

The events of one event-loop turn travel in one message (a commit publishes
several events with the same record, sent once), decoded on arrival only
for the jobs someone follows there. Pub/sub may lose messages across an
outage: when the subscription comes back every follower re-reads its job.

Wire format (big-endian): ``u16`` length + origin instance id, then entries
of ``u8`` kind (0 re-read, 1 record), ``u16`` length + job id, and for a
record ``u32`` length + Job bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import Protocol

from avtomatika.engine.events import EventBus, JobEvent
from avtomatika.storage.redis import Keys, Pipelined, Subscriber, run_forever
from avtomatika.v1.job_pb2 import Job

__all__ = ["FollowerSink", "JobRelay", "decode", "encode"]

log = logging.getLogger(__name__)

_U8, _U16, _U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
_REREAD, _RECORD = 0, 1


class FollowerSink(Protocol):
    """Where relayed events go: :class:`~avtomatika.engine.followers.JobFollowers`."""

    def follows(self, job_id: str) -> bool: ...

    def following(self) -> bool: ...

    def notify(self, job_id: str, job: Job | None) -> None: ...

    def refresh_all(self) -> None: ...


def encode(origin: str, entries: list[tuple[str, Job | None]]) -> bytes:
    """One message: ``entries`` of (job id, record or None) from ``origin``."""
    name = origin.encode()
    parts = [_U16.pack(len(name)), name]
    for job_id, job in entries:
        key = job_id.encode()
        parts += [_U8.pack(_REREAD if job is None else _RECORD), _U16.pack(len(key)), key]
        if job is not None:
            record = job.SerializeToString()
            parts += [_U32.pack(len(record)), record]
    return b"".join(parts)


def decode(
    data: bytes, wanted: Callable[[str], bool] = lambda _: True
) -> tuple[str, list[tuple[str, Job | None]]]:
    """The origin and entries of a message; records of jobs not ``wanted``
    are skipped undecoded. Raises ValueError when ``data`` is malformed."""
    try:
        view = memoryview(data)
        (size,) = _U16.unpack_from(view, 0)
        at = 2 + size
        origin = bytes(view[2:at]).decode()
        entries: list[tuple[str, Job | None]] = []
        while at < len(view):
            (kind,) = _U8.unpack_from(view, at)
            (size,) = _U16.unpack_from(view, at + 1)
            job_id = bytes(view[at + 3 : at + 3 + size]).decode()
            at += 3 + size
            if kind == _REREAD:
                if wanted(job_id):
                    entries.append((job_id, None))
                continue
            if kind != _RECORD:
                raise ValueError(f"malformed relay message: unknown entry kind {kind}")
            (size,) = _U32.unpack_from(view, at)
            record = view[at + 4 : at + 4 + size]
            if len(record) != size:
                raise ValueError("malformed relay message: truncated record")
            at += 4 + size
            if wanted(job_id):
                entries.append((job_id, Job.FromString(bytes(record))))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed relay message: {exc}") from None
    except ValueError:
        raise
    except Exception as exc:  # protobuf's DecodeError
        raise ValueError(f"malformed job record: {exc}") from None
    return origin, entries


class JobRelay:
    """Sends this instance's job events and delivers the others' to local
    followers. A service: :meth:`start` subscribes to the event bus."""

    def __init__(
        self,
        client: Pipelined,
        keys: Keys,
        instance_id: str,
        events: EventBus,
        followers: FollowerSink,
        subscriber: Subscriber,
    ) -> None:
        """Listens on ``subscriber`` (not started yet) from now on."""
        self._client = client
        self._channel = keys.events_channel
        self.instance_id = instance_id
        self._events = events
        self._followers = followers
        self._batch: list[tuple[str, Job | None]] = []
        # The record last batched per job: the events of one commit share it.
        self._last: dict[str, Job | None] = {}
        self._pending = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        # The sender also stops on this flag: redis-py may swallow a cancel
        # that lands mid-publish.
        self._running = False
        self._unsubscribe: Callable[[], None] | None = None
        # Every instance gets its own messages back: recognised by their
        # first bytes, before anything is decoded.
        name = instance_id.encode()
        self._own = _U16.pack(len(name)) + name
        subscriber.on(self._channel, self._on_message)
        subscriber.on_reconnect(followers.refresh_all)

    async def start(self) -> None:
        if self._sender is None:
            self._running = True
            self._unsubscribe = self._events.subscribe(self._on_event)
            self._sender = asyncio.create_task(self._send_forever(), name="avtomatika-relay")

    async def stop(self) -> None:
        """Unsubscribe and send what is pending (best effort)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        sender, self._sender = self._sender, None
        self._running = False
        if sender is not None:
            self._pending.set()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        with contextlib.suppress(Exception):
            await self._send()

    def _on_event(self, item: JobEvent) -> None:
        if item.record_unchanged:
            return  # nothing for followers elsewhere to see
        job_id = item.event.job_id
        if job_id in self._last and self._last[job_id] is item.job:
            return  # same commit (or a second re-read) in this batch
        self._last[job_id] = item.job
        self._batch.append((job_id, item.job))
        self._pending.set()

    async def _send_forever(self) -> None:
        async def send_when_pending() -> None:
            await self._pending.wait()
            # In an outage the batch is lost like any pub/sub message:
            # followers elsewhere re-read their jobs when their subscription
            # is back.
            await self._send()

        await run_forever("job event relay", send_when_pending, running=lambda: self._running)

    async def _send(self) -> None:
        batch, self._batch = self._batch, []
        self._last.clear()
        self._pending.clear()
        if batch:
            await self._client.execute("PUBLISH", self._channel, encode(self.instance_id, batch))

    def _on_message(self, data: bytes) -> None:
        if data.startswith(self._own) or not self._followers.following():
            return  # our own (delivered locally already), or nobody to wake
        try:
            _, entries = decode(data, self._followers.follows)
        except ValueError as exc:
            log.warning("a relayed job event was ignored: %s", exc)
            return
        for job_id, job in entries:
            self._followers.notify(job_id, job)
