"""One ``WorkerService.Connect`` stream, from Hello to hang-up.

A session is the transport only: it writes what it is given, hands what the
server sends to a :class:`SessionListener`, keeps the stream alive with
heartbeats and declares it dead after three silent heartbeat intervals. Tasks
and results outlive it; the worker opens a new session when one ends.

Four coroutines share it:

- the writer is the only one to write (grpc.aio allows one write at a time);
  it sends the Hello, waits for the Welcome, then drains the outbox;
- the reader dispatches the server's messages;
- the heart sends a heartbeat every interval;
- the watchdog ends the session when the Welcome, or later any message, is
  overdue.

Every stream message costs a write here and a read on the server, each
resuming a coroutine when it completes; under load their number, not their
size, limits the stream. So when several messages are queued (say a result
and the credit it frees) and the server's Welcome says it reads batches, the
writer sends them as one ``RequestBatch``; the Hello says this worker reads
the server's ``ResponseBatch``. A batch means exactly its messages, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import grpc

from avtomatika.batches import Batcher
from avtomatika.v1 import worker_service_pb2_grpc
from avtomatika.v1.worker_service_pb2 import (
    CancelTask,
    ConnectRequest,
    ConnectResponse,
    Drain,
    Heartbeat,
    Hello,
    RequestBatch,
    ResultAck,
    TaskAssignment,
    Welcome,
)
from avtomatika.worker.config import ConnectionSettings

__all__ = ["Session", "SessionEnd", "SessionListener"]

log = logging.getLogger("avtomatika.worker")

_MISSED_HEARTBEATS = 3

_StreamCall = grpc.aio.StreamStreamCall[ConnectRequest, ConnectResponse]


class SessionListener(Protocol):
    """Receives what the server sends on a session."""

    def on_welcome(self, session: Session, welcome: Welcome) -> None: ...
    def on_task(self, session: Session, task: TaskAssignment) -> None: ...
    def on_cancel(self, session: Session, cancel: CancelTask) -> None: ...
    def on_drain(self, session: Session, drain: Drain) -> None: ...
    def on_result_ack(self, session: Session, ack: ResultAck) -> None: ...


@dataclass(frozen=True)
class SessionEnd:
    """How a session ended."""

    address: str
    reason: str
    welcomed: bool
    """The server accepted the Hello."""
    drained: bool
    """The server asked the worker to drain on this stream."""
    code: grpc.StatusCode | None = None
    """The RPC's status, when it failed."""


class Session:
    """One Connect stream to one address."""

    def __init__(
        self,
        address: str,
        *,
        token: str,
        settings: ConnectionSettings,
        listener: SessionListener,
    ) -> None:
        self.address = address
        self.drained = False
        self._token = token
        self._settings = settings
        self._listener = listener
        # None in the outbox is the hang-up marker: everything queued before
        # it is still written, then the worker half-closes the stream.
        self._outbox: asyncio.Queue[ConnectRequest | None] = asyncio.Queue()
        self._closing = False
        self._welcomed = asyncio.Event()
        self._ended = asyncio.Event()
        self._reason = ""
        self._code: grpc.StatusCode | None = None
        self._heartbeat_interval = 0.0
        self._deadline: asyncio.Timeout | None = None
        self._server_batches = False
        self._batcher = Batcher(self._outbox)

    def send(self, message: ConnectRequest) -> None:
        """Queue a message; dropped once the session is ending."""
        if not self._closing and not self._ended.is_set():
            self._outbox.put_nowait(message)

    def close(self) -> None:
        """Hang up gracefully: write what is queued, then half-close."""
        if self._closing:
            return
        self._closing = True
        if self._welcomed.is_set():
            self._outbox.put_nowait(None)
        else:
            self._end("closed before the server welcomed the worker")

    async def run(self, hello: Hello) -> SessionEnd:
        """Open the stream, serve it until it ends, and say how it ended."""
        credentials = self._settings.channel_credentials()
        if credentials is not None:
            channel = grpc.aio.secure_channel(
                self.address, credentials, options=self._settings.grpc_options
            )
        else:
            channel = grpc.aio.insecure_channel(self.address, options=self._settings.grpc_options)
        try:
            stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
            call = stub.Connect(None, metadata=(("x-worker-token", self._token),))
            try:
                await self._serve(call, hello)
            finally:
                call.cancel()
        finally:
            await channel.close(grace=None)
        return SessionEnd(
            address=self.address,
            reason=self._reason,
            welcomed=self._welcomed.is_set(),
            drained=self.drained,
            code=self._code,
        )

    async def _serve(self, call: _StreamCall, hello: Hello) -> None:
        async with asyncio.TaskGroup() as group:
            loops = [
                group.create_task(self._watch()),
                group.create_task(self._write(call, hello)),
                group.create_task(self._read(call)),
                group.create_task(self._beat()),
            ]
            await self._ended.wait()
            for loop in loops:
                loop.cancel()

    def _end(self, reason: str, error: grpc.aio.AioRpcError | None = None) -> None:
        # The first reason wins: it is the cause, later ones are consequences.
        if self._ended.is_set():
            return
        self._reason = reason
        if error is not None:
            self._code = error.code()
        self._ended.set()

    async def _write(self, call: _StreamCall, hello: Hello) -> None:
        try:
            opening = ConnectRequest(hello=hello)
            opening.hello.accepts_batches = True
            opening.hello.max_receive_message_bytes = self._settings.receive_limit
            await call.write(opening)
            await self._welcomed.wait()
            while batch := await self._batcher.next(batching=self._server_batches):
                if len(batch) == 1:
                    await call.write(batch[0])
                else:
                    await call.write(ConnectRequest(batch=RequestBatch(messages=batch)))
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            self._end(_describe(exc), exc)
            return
        except asyncio.InvalidStateError:
            self._end("the stream ended while the worker was writing")
            return
        # Hung up: the server ends the stream when it has read everything.
        try:
            async with asyncio.timeout(self._settings.close_timeout):
                await self._ended.wait()
        except TimeoutError:
            self._end("the server did not end the stream after the worker hung up")

    async def _read(self, call: _StreamCall) -> None:
        try:
            while isinstance(response := await call.read(), ConnectResponse):
                self._dispatch(response)
                self._heard_from_server()
        except grpc.aio.AioRpcError as exc:
            self._end(_describe(exc), exc)
            return
        self._end("the server ended the stream")

    def _dispatch(self, response: ConnectResponse) -> None:
        kind = response.WhichOneof("kind")
        if not self._welcomed.is_set():
            if kind != "welcome":
                self._end(f"protocol error: the server sent {kind!r} before its Welcome")
                return
            interval_ms = response.welcome.heartbeat_interval_ms
            self._heartbeat_interval = interval_ms / 1000
            self._server_batches = response.welcome.accepts_batches
            self._welcomed.set()
            self._listener.on_welcome(self, response.welcome)
        elif kind == "task":
            self._listener.on_task(self, response.task)
        elif kind == "cancel":
            self._listener.on_cancel(self, response.cancel)
        elif kind == "result_ack":
            self._listener.on_result_ack(self, response.result_ack)
        elif kind == "drain":
            self.drained = True
            self._listener.on_drain(self, response.drain)
        elif kind == "batch":
            for inner in response.batch.messages:
                inner_kind = inner.WhichOneof("kind")
                if inner_kind in ("batch", "welcome"):
                    log.warning("%s sent a batch holding a %s; skipped", self.address, inner_kind)
                    continue
                self._dispatch(inner)
        # heartbeat: receiving it was the point; a repeated Welcome or a kind
        # from a newer server is ignored.

    async def _beat(self) -> None:
        await self._welcomed.wait()
        if not self._heartbeat_interval:
            return
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            self.send(ConnectRequest(heartbeat=Heartbeat(sent_at_ms=int(time.time() * 1000))))

    async def _watch(self) -> None:
        # One deadline: first for the Welcome, then pushed back by every
        # message from the server (see _heard_from_server).
        try:
            async with asyncio.timeout(self._settings.connect_timeout) as deadline:
                self._deadline = deadline
                await self._ended.wait()
        except TimeoutError:
            if self._welcomed.is_set():
                silence = _MISSED_HEARTBEATS * self._heartbeat_interval
                self._end(f"the server was silent for {silence:g}s")
            else:
                self._end(f"no Welcome within {self._settings.connect_timeout:g}s")

    def _heard_from_server(self) -> None:
        if self._deadline is None:
            return
        if not self._heartbeat_interval:
            # The server sends no heartbeats: rely on the transport to notice
            # a dead peer.
            self._deadline.reschedule(None)
        else:
            silence = _MISSED_HEARTBEATS * self._heartbeat_interval
            self._deadline.reschedule(asyncio.get_running_loop().time() + silence)


def _describe(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details()}"
