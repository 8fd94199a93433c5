"""A raw gRPC worker that speaks the Connect stream message by message, for
tests that need exact control over what a worker sends and when, and the
results it reports."""

from __future__ import annotations

from typing import Any

import grpc

from avtomatika.payload import from_payload, to_payload
from avtomatika.v1 import worker_service_pb2_grpc
from avtomatika.v1.task_pb2 import ErrorCode, TaskError, TaskResult, TaskResultStatus
from avtomatika.v1.worker_pb2 import WorkerRegistration, WorkerResources
from avtomatika.v1.worker_service_pb2 import (
    ConnectRequest,
    ConnectResponse,
    Credit,
    Hello,
    TaskAssignment,
)
from tests.support.tokens import WORKER_TOKEN


def hello_request(
    worker_id: str,
    skills: list[str],
    credits: int = 1,
    *,
    held: list[str] | None = None,
    accepts_batches: bool = False,
) -> ConnectRequest:
    """A worker's Hello: ``credits`` tasks at once, declared as its limit;
    ``held``, the tasks of earlier streams it still holds (None: it does not
    report them, as older workers)."""
    return ConnectRequest(
        hello=Hello(
            registration=WorkerRegistration(
                worker_id=worker_id,
                skills=skills,
                resources=WorkerResources(max_concurrent_tasks=credits),
            ),
            initial_credits=credits,
            held_task_ids=held or [],
            reports_held_tasks=held is not None,
            accepts_batches=accepts_batches,
        )
    )


class RawWorker:
    """One Connect stream driven explicitly by the test.

    ``token=None`` sends no ``x-worker-token`` metadata at all.
    """

    def __init__(
        self, channel: grpc.aio.Channel, worker_id: str, token: str | None = WORKER_TOKEN
    ) -> None:
        self.worker_id = worker_id
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        metadata = (("x-worker-token", token),) if token is not None else ()
        # No request iterator: the test writes each message itself.
        self.call = stub.Connect(None, metadata=metadata)

    async def hello(
        self,
        skills: list[str],
        credits: int = 1,
        held: list[str] | None = None,
        *,
        accepts_batches: bool = False,
    ) -> ConnectResponse:
        """Register (see :func:`hello_request`); the Welcome."""
        await self.send(
            hello_request(
                self.worker_id, skills, credits, held=held, accepts_batches=accepts_batches
            )
        )
        return await self.expect("welcome")

    async def send(self, message: ConnectRequest) -> None:
        """Write one message on the stream."""
        await self.call.write(message)

    async def receive(self) -> ConnectResponse | None:
        """The next message that is not a heartbeat; None when the stream ended."""
        while True:
            message = await self.call.read()
            if not isinstance(message, ConnectResponse):
                return None
            if message.WhichOneof("kind") != "heartbeat":
                return message

    async def expect(self, kind: str) -> ConnectResponse:
        """The next message that is not a heartbeat; it must be of ``kind``."""
        message = await self.receive()
        assert message is not None, "the stream ended"
        assert message.WhichOneof("kind") == kind, message
        return message

    async def next_task(self) -> TaskAssignment:
        """The next message, which must be a task."""
        return (await self.expect("task")).task

    async def succeed(self, task: TaskAssignment, data: Any) -> ConnectResponse:
        """Report success with ``data``; the ResultAck message."""
        return await self.report(success(task, data))

    async def fail(
        self, task: TaskAssignment, code: ErrorCode.ValueType, message: str = "boom"
    ) -> ConnectResponse:
        """Report failure with ``code``; the ResultAck message."""
        return await self.report(failure(task, code, message))

    async def report(self, result: TaskResult) -> ConnectResponse:
        """Send a result and return the server's ResultAck message."""
        await self.send(ConnectRequest(result=result))
        return await self.expect("result_ack")

    async def credit(self, n: int = 1) -> None:
        """Grant ``n`` more tasks."""
        await self.send(ConnectRequest(credit=Credit(credits=n)))

    async def close(self) -> None:
        """Half-close: the worker sends nothing more."""
        await self.call.done_writing()

    @staticmethod
    def params(task: TaskAssignment) -> Any:
        """A task's params as JSON."""
        return from_payload(task.params)


def success(task: TaskAssignment, data: Any = None) -> TaskResult:
    """A success result for ``task`` carrying ``data``."""
    result = TaskResult(
        task_id=task.task_id,
        job_id=task.job_id,
        status=TaskResultStatus.TASK_RESULT_STATUS_SUCCESS,
    )
    if data is not None:
        result.data.CopyFrom(to_payload(data))
    return result


def failure(task: TaskAssignment, code: ErrorCode.ValueType, message: str = "boom") -> TaskResult:
    """A failure result for ``task`` with an error ``code``."""
    return TaskResult(
        task_id=task.task_id,
        job_id=task.job_id,
        status=TaskResultStatus.TASK_RESULT_STATUS_FAILURE,
        error=TaskError(code=code, message=message),
    )


def custom(task: TaskAssignment, status: str, data: Any = None) -> TaskResult:
    """A result with a custom status (which picks a transition by name)."""
    result = TaskResult(
        task_id=task.task_id,
        job_id=task.job_id,
        status=TaskResultStatus.TASK_RESULT_STATUS_CUSTOM,
        custom_status=status,
    )
    if data is not None:
        result.data.CopyFrom(to_payload(data))
    return result
