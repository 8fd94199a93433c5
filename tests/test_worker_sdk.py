"""The worker SDK against a real grpc.aio server on port 0, scripted by each test.

The in-test servicer plays the orchestrator's side of ``WorkerService.Connect``:
it welcomes the worker, records everything the worker sends, acknowledges
results, and pushes whatever the test tells it to (tasks, cancels, drains,
failures). The assertions are about the wire: what the worker sent, in which
order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

import avtomatika.worker
from avtomatika.payload import from_payload, to_payload
from avtomatika.v1 import worker_service_pb2_grpc
from avtomatika.v1.task_pb2 import ErrorCode, TaskResult, TaskResultStatus
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
from avtomatika.worker import (
    ConnectionSettings,
    GpuInfo,
    Resources,
    TaskContext,
    TaskFailure,
    TaskOutcome,
    Worker,
    WorkerRejected,
)
from avtomatika.worker._backoff import Backoff

TOKEN = "worker-secret"
WAIT = 5.0  # seconds any single expected event may take before the test fails

FAST = ConnectionSettings(
    connect_timeout=WAIT,
    reconnect_initial_delay=0.01,
    reconnect_max_delay=0.05,
    close_timeout=WAIT,
    result_flush_timeout=WAIT,
)

Params = dict[str, Any]
_ServerItem = ConnectResponse | grpc.StatusCode | None


class Stream:
    """One worker stream, as the scripted server sees it."""

    def __init__(self, hello: Hello, token: str) -> None:
        self.hello = hello
        self.token = token
        self.received: asyncio.Queue[ConnectRequest] = asyncio.Queue()
        self.heartbeats = 0
        self.batches = 0
        """RequestBatch messages received (their contents go to ``received``)."""
        self.hung_up = asyncio.Event()
        # None ends the RPC with OK, a StatusCode aborts it with that code.
        self.outbox: asyncio.Queue[_ServerItem] = asyncio.Queue()

    def send(self, response: ConnectResponse) -> None:
        self.outbox.put_nowait(response)

    def assign(self, task_id: str, task_type: str = "echo", params: Any = None) -> None:
        self.send(
            ConnectResponse(
                task=TaskAssignment(
                    task_id=task_id,
                    job_id=f"job-{task_id}",
                    type=task_type,
                    params=to_payload({} if params is None else params),
                    attempt=1,
                )
            )
        )

    def cancel(self, task_id: str, reason: str) -> None:
        self.send(
            ConnectResponse(
                cancel=CancelTask(task_id=task_id, job_id=f"job-{task_id}", reason=reason)
            )
        )

    def end(self, code: grpc.StatusCode | None = None) -> None:
        self.outbox.put_nowait(code)

    async def next(self, kind: str) -> ConnectRequest:
        """The worker's next message other than a heartbeat, which must be a ``kind``."""
        async with asyncio.timeout(WAIT):
            while (message := await self.received.get()).WhichOneof("kind") == "heartbeat":
                pass
        assert message.WhichOneof("kind") == kind, message
        return message

    async def next_kind(self) -> str | None:
        """The kind of the worker's next message, heartbeats aside."""
        async with asyncio.timeout(WAIT):
            while (message := await self.received.get()).WhichOneof("kind") == "heartbeat":
                pass
        return message.WhichOneof("kind")

    async def result(self) -> TaskResult:
        return (await self.next("result")).result

    def pending_kinds(self) -> list[str | None]:
        """Kinds of the messages received and not yet consumed, heartbeats aside."""
        kinds = []
        while not self.received.empty():
            kinds.append(self.received.get_nowait().WhichOneof("kind"))
        return [kind for kind in kinds if kind != "heartbeat"]


class ScriptedServer(worker_service_pb2_grpc.WorkerServiceServicer):
    """A WorkerService whose Connect streams the test drives."""

    def __init__(
        self,
        *,
        heartbeat_interval_ms: int = 60_000,
        send_heartbeats: bool = False,
        auto_ack: bool = True,
        accepts_batches: bool = False,
    ) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.send_heartbeats = send_heartbeats
        self.auto_ack = auto_ack
        self.accepts_batches = accepts_batches
        self.refuse: grpc.StatusCode | None = None
        self.refused = 0
        self.refusal = asyncio.Condition()
        self.streams: asyncio.Queue[Stream] = asyncio.Queue()
        self.address = ""
        self._server = grpc.aio.server()
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(self, self._server)

    async def start(self) -> None:
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.address = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._server.stop(grace=None)

    async def next_stream(self) -> Stream:
        async with asyncio.timeout(WAIT):
            return await self.streams.get()

    async def wait_refused(self, count: int) -> None:
        """Until ``count`` connection attempts in all were refused."""
        async with asyncio.timeout(WAIT), self.refusal:
            await self.refusal.wait_for(lambda: self.refused >= count)

    async def Connect(
        self,
        request_iterator: AsyncIterator[ConnectRequest],
        context: grpc.aio.ServicerContext[ConnectRequest, ConnectResponse],
    ) -> AsyncIterator[ConnectResponse]:
        metadata = dict(context.invocation_metadata() or ())
        token = str(metadata.get("x-worker-token", ""))
        if token != TOKEN:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad worker token")
        if self.refuse is not None:
            async with self.refusal:
                self.refused += 1
                self.refusal.notify_all()
            await context.abort(self.refuse, "refusing connections")
        first = await anext(request_iterator)
        assert first.WhichOneof("kind") == "hello"
        stream = Stream(first.hello, token)
        self.streams.put_nowait(stream)
        helpers = [asyncio.create_task(self._pump(request_iterator, stream))]
        if self.send_heartbeats:
            helpers.append(asyncio.create_task(self._beat(stream)))
        try:
            yield ConnectResponse(
                welcome=Welcome(
                    worker_id=first.hello.registration.worker_id,
                    heartbeat_interval_ms=self.heartbeat_interval_ms,
                    accepts_batches=self.accepts_batches,
                )
            )
            while (item := await stream.outbox.get()) is not None:
                if isinstance(item, grpc.StatusCode):
                    await context.abort(item, "scripted failure")
                yield item
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _pump(self, requests: AsyncIterator[ConnectRequest], stream: Stream) -> None:
        async for received in requests:
            # A batch stands for its messages: the tests see those.
            if received.WhichOneof("kind") == "batch":
                stream.batches += 1
                messages = list(received.batch.messages)
            else:
                messages = [received]
            for message in messages:
                if message.WhichOneof("kind") == "heartbeat":
                    stream.heartbeats += 1
                stream.received.put_nowait(message)
                if message.WhichOneof("kind") == "result" and self.auto_ack:
                    ack = ResultAck(
                        task_id=message.result.task_id, accepted=True, transition="next"
                    )
                    stream.send(ConnectResponse(result_ack=ack))
        # The worker hung up: end the RPC, as the real server does.
        stream.hung_up.set()
        stream.end()

    async def _beat(self, stream: Stream) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_ms / 1000)
            stream.send(ConnectResponse(heartbeat=Heartbeat(sent_at_ms=1)))

    async def RegisterWorker(
        self,
        request: RegisterWorkerRequest,
        context: grpc.aio.ServicerContext[RegisterWorkerRequest, RegisterWorkerResponse],
    ) -> RegisterWorkerResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def Heartbeat(
        self,
        request: HeartbeatRequest,
        context: grpc.aio.ServicerContext[HeartbeatRequest, HeartbeatResponse],
    ) -> HeartbeatResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def NextTask(
        self,
        request: NextTaskRequest,
        context: grpc.aio.ServicerContext[NextTaskRequest, NextTaskResponse],
    ) -> NextTaskResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def SubmitResult(
        self,
        request: SubmitResultRequest,
        context: grpc.aio.ServicerContext[SubmitResultRequest, SubmitResultResponse],
    ) -> SubmitResultResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def ReportEvent(
        self,
        request: ReportEventRequest,
        context: grpc.aio.ServicerContext[ReportEventRequest, ReportEventResponse],
    ) -> ReportEventResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")


StartServer = Callable[..., Awaitable[ScriptedServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    servers: list[ScriptedServer] = []

    async def start(**options: Any) -> ScriptedServer:
        server = ScriptedServer(**options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> ScriptedServer:
    return await start_server()


def make_worker(*addresses: str, max_concurrency: int = 1, **options: Any) -> Worker:
    worker = Worker(
        worker_id="w-1",
        addresses=list(addresses),
        token=options.pop("token", TOKEN),
        max_concurrency=max_concurrency,
        settings=options.pop("settings", FAST),
        **options,
    )

    @worker.skill("echo")
    async def echo(params: Params, task: TaskContext) -> Params:
        return {"echo": params}

    return worker


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Run the worker for the block; stop it (cancelling what still runs) after."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        await worker.stop(grace_seconds=0)
        await task


class Gates:
    """Handlers that block until the test releases them, by task id."""

    def __init__(self) -> None:
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.cancelled: asyncio.Queue[str] = asyncio.Queue()
        self.running = 0
        self.peak = 0
        self._gates: dict[str, asyncio.Event] = {}

    def _gate(self, task_id: str) -> asyncio.Event:
        return self._gates.setdefault(task_id, asyncio.Event())

    def release(self, task_id: str) -> None:
        self._gate(task_id).set()

    async def next_started(self) -> str:
        async with asyncio.timeout(WAIT):
            return await self.started.get()

    async def next_cancelled(self) -> str:
        async with asyncio.timeout(WAIT):
            return await self.cancelled.get()

    async def handler(self, params: Params, task: TaskContext) -> Params:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started.put_nowait(task.task_id)
        try:
            await self._gate(task.task_id).wait()
        except asyncio.CancelledError:
            self.cancelled.put_nowait(task.task_id)
            raise
        finally:
            self.running -= 1
        return {"done": task.task_id}


def gated_worker(*addresses: str, max_concurrency: int = 1, **options: Any) -> tuple[Worker, Gates]:
    worker = make_worker(*addresses, max_concurrency=max_concurrency, **options)
    gates = Gates()
    worker.add_skill("hold", gates.handler)
    return worker, gates


# --- the Hello -------------------------------------------------------------------------


async def test_hello_declares_the_worker_and_grants_max_concurrency_credits(
    server: ScriptedServer,
) -> None:
    worker = make_worker(
        server.address,
        max_concurrency=3,
        worker_type="gpu-box",
        resources=Resources(
            cpu_cores=8,
            ram_gb=32,
            gpu=GpuInfo(model="RTX 4090", vram_gb=24),
            installed_models={"sd": "1.5"},
        ),
        labels={"zone": "eu"},
    )

    @worker.skill("resize", cost=0.25)
    async def resize(params: Params, task: TaskContext) -> None:
        return None

    async with running(worker):
        stream = await server.next_stream()

    registration = stream.hello.registration
    assert stream.token == TOKEN
    assert stream.hello.initial_credits == 3
    assert registration.worker_id == "w-1"
    assert list(registration.skills) == ["echo", "resize"]
    assert registration.worker_type == "gpu-box"
    assert registration.resources.max_concurrent_tasks == 3
    assert registration.resources.cpu_cores == 8
    assert registration.resources.gpu_info.model == "RTX 4090"
    assert [(m.name, m.version) for m in registration.resources.installed_models] == [("sd", "1.5")]
    assert dict(registration.cost_per_skill) == {"resize": 0.25}
    assert dict(registration.labels) == {"zone": "eu"}
    # This SDK reads the server's ResponseBatch.
    assert stream.hello.accepts_batches


async def test_a_bad_token_makes_run_raise_worker_rejected(server: ScriptedServer) -> None:
    worker = make_worker(server.address, token="wrong")

    with pytest.raises(WorkerRejected) as rejected:
        async with asyncio.timeout(WAIT):
            await worker.run()

    assert rejected.value.code == "UNAUTHENTICATED"
    assert rejected.value.address == server.address


# --- results ---------------------------------------------------------------------------


async def test_a_returned_dict_is_a_success_result_followed_by_a_credit(
    server: ScriptedServer,
) -> None:
    worker = make_worker(server.address)
    async with running(worker):
        stream = await server.next_stream()
        # A 17-digit id would not survive google.protobuf.Struct; JSON bytes keep it.
        stream.assign("t-1", "echo", {"id": 12345678901234567, "text": "hi"})
        result = await stream.result()
        credit = await stream.next("credit")

    assert (result.task_id, result.job_id, result.worker_id) == ("t-1", "job-t-1", "w-1")
    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS
    assert from_payload(result.data) == {"echo": {"id": 12345678901234567, "text": "hi"}}
    assert not result.HasField("error")
    assert credit.credit.credits == 1


async def test_progress_is_reported_on_the_stream(server: ScriptedServer) -> None:
    worker = make_worker(server.address)

    @worker.skill("slow")
    async def slow(params: Params, task: TaskContext) -> None:
        await task.report_progress(0.5, "half way")

    async with running(worker):
        stream = await server.next_stream()
        stream.assign("t-1", "slow")
        progress = (await stream.next("progress")).progress
        result = await stream.result()

    assert (progress.task_id, progress.job_id) == ("t-1", "job-t-1")
    assert (progress.progress, progress.message) == (0.5, "half way")
    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS
    assert from_payload(result.data) == {}


async def _failure_of(server: ScriptedServer, error: BaseException) -> TaskResult:
    worker = make_worker(server.address)

    @worker.skill("fail")
    async def fail(params: Params, task: TaskContext) -> None:
        raise error

    async with running(worker):
        stream = await server.next_stream()
        stream.assign("t-1", "fail")
        return await stream.result()


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (TaskFailure.transient("busy"), ErrorCode.ERROR_CODE_TRANSIENT),
        (TaskFailure("PERMANENT_ERROR", "busy"), ErrorCode.ERROR_CODE_PERMANENT),
        (TaskFailure.invalid_input("busy"), ErrorCode.ERROR_CODE_INVALID_INPUT),
        (TaskFailure("QUOTA_EXCEEDED", "busy"), ErrorCode.ERROR_CODE_UNSPECIFIED),
    ],
)
async def test_task_failure_is_a_failure_result_with_its_code(
    server: ScriptedServer, failure: TaskFailure, code: ErrorCode.ValueType
) -> None:
    result = await _failure_of(server, failure)

    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_FAILURE
    assert result.error.code == code
    assert result.error.code_name == failure.code
    assert result.error.message == "busy"


async def test_task_failure_details_travel_as_json(server: ScriptedServer) -> None:
    result = await _failure_of(server, TaskFailure.permanent("no", details={"field": "url"}))

    assert from_payload(result.error.details) == {"field": "url"}


async def test_an_unexpected_exception_is_a_transient_failure(server: ScriptedServer) -> None:
    result = await _failure_of(server, KeyError("model"))

    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_FAILURE
    assert result.error.code == ErrorCode.ERROR_CODE_TRANSIENT
    assert result.error.code_name == "TRANSIENT_ERROR"
    assert result.error.message == "KeyError: 'model'"


@pytest.mark.parametrize(
    ("outcome", "status", "custom_status"),
    [
        (
            TaskOutcome("needs_review", {"score": 0.4}),
            TaskResultStatus.TASK_RESULT_STATUS_CUSTOM,
            "needs_review",
        ),
        (TaskOutcome("success", {"score": 0.4}), TaskResultStatus.TASK_RESULT_STATUS_SUCCESS, ""),
    ],
)
async def test_a_task_outcome_sets_the_status(
    server: ScriptedServer,
    outcome: TaskOutcome,
    status: TaskResultStatus.ValueType,
    custom_status: str,
) -> None:
    worker = make_worker(server.address)

    @worker.skill("judge")
    async def judge(params: Params, task: TaskContext) -> TaskOutcome:
        return outcome

    async with running(worker):
        stream = await server.next_stream()
        stream.assign("t-1", "judge")
        result = await stream.result()

    assert result.status == status
    assert result.custom_status == custom_status
    assert from_payload(result.data) == {"score": 0.4}


async def test_a_failure_outcome_keeps_its_data_and_error(server: ScriptedServer) -> None:
    worker = make_worker(server.address)

    @worker.skill("judge")
    async def judge(params: Params, task: TaskContext) -> TaskOutcome:
        return TaskOutcome("failure", {"partial": True}, TaskFailure.permanent("bad frame"))

    async with running(worker):
        stream = await server.next_stream()
        stream.assign("t-1", "judge")
        result = await stream.result()

    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_FAILURE
    assert (result.error.code_name, result.error.message) == ("PERMANENT_ERROR", "bad frame")
    assert from_payload(result.data) == {"partial": True}


async def test_a_handler_returning_a_non_object_fails_permanently(server: ScriptedServer) -> None:
    worker = make_worker(server.address)

    @worker.skill("listy")
    async def listy(params: Params, task: TaskContext) -> Any:
        return [1, 2]

    async with running(worker):
        stream = await server.next_stream()
        stream.assign("t-1", "listy")
        result = await stream.result()

    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_FAILURE
    assert result.error.code == ErrorCode.ERROR_CODE_PERMANENT
    assert "returned list" in result.error.message


async def test_params_that_are_not_an_object_are_invalid_input(server: ScriptedServer) -> None:
    worker = make_worker(server.address)
    async with running(worker):
        stream = await server.next_stream()
        stream.assign("t-1", "echo", [1, 2])
        result = await stream.result()

    assert result.error.code == ErrorCode.ERROR_CODE_INVALID_INPUT
    assert "must be a JSON object" in result.error.message


async def test_a_task_for_an_unknown_skill_fails_and_returns_its_credit(
    server: ScriptedServer,
) -> None:
    worker = make_worker(server.address)
    async with running(worker):
        stream = await server.next_stream()
        stream.assign("t-1", "paint")
        result = await stream.result()
        await stream.next("credit")

    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_FAILURE
    assert "no skill 'paint'" in result.error.message


# --- credits -----------------------------------------------------------------------------


async def test_credits_keep_concurrency_at_max_concurrency(server: ScriptedServer) -> None:
    worker, gates = gated_worker(server.address, max_concurrency=2)
    queued = [f"t-{n}" for n in range(6)]
    in_flight: list[str] = []
    async with running(worker):
        stream = await server.next_stream()
        credits = stream.hello.initial_credits
        # Play a server with six tasks queued: send while credits last, then
        # finish the oldest task and send again on the credit it returns.
        while queued or in_flight:
            while credits and queued:
                in_flight.append(queued.pop(0))
                stream.assign(in_flight[-1], "hold")
                credits -= 1
                assert await gates.next_started() == in_flight[-1]
            oldest = in_flight.pop(0)
            gates.release(oldest)
            assert (await stream.result()).task_id == oldest
            credits += (await stream.next("credit")).credit.credits

    assert gates.peak == 2


async def test_a_task_sent_without_credit_is_refused_not_run(server: ScriptedServer) -> None:
    worker, gates = gated_worker(server.address, max_concurrency=1)
    async with running(worker):
        stream = await server.next_stream()
        stream.assign("t-1", "hold")
        stream.assign("t-2", "hold")  # a misbehaving server: no credit left
        refused = await stream.result()
        assert await gates.next_started() == "t-1"
        gates.release("t-1")
        accepted = await stream.result()
        await stream.next("credit")

    assert refused.task_id == "t-2"
    assert refused.error.code == ErrorCode.ERROR_CODE_TRANSIENT
    assert "no free slot" in refused.error.message
    assert accepted.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS
    assert gates.peak == 1


# --- batches -------------------------------------------------------------------------------


@pytest.mark.parametrize(("accepts_batches", "batches"), [(False, 0), (True, 1)])
async def test_results_and_credits_queued_together_go_as_one_batch_if_the_server_reads_batches(
    start_server: StartServer, accepts_batches: bool, batches: int
) -> None:
    server = await start_server(accepts_batches=accepts_batches)
    worker, gates = gated_worker(server.address, max_concurrency=3)
    async with running(worker):
        stream = await server.next_stream()
        for n in range(3):
            stream.assign(f"t-{n}", "hold")
            await gates.next_started()
        # The handlers end in one turn of the loop, so their results and
        # credits are all queued before the writer wakes.
        for n in range(3):
            gates.release(f"t-{n}")
        kinds = [await stream.next_kind() for _ in range(6)]

    # In the order they were queued: each result, then the credit it frees;
    # to a server that does not read batches, every message alone.
    assert kinds == ["result", "credit"] * 3
    assert stream.batches == batches


async def test_a_batch_from_the_server_is_handled_message_by_message(
    server: ScriptedServer,
) -> None:
    worker = make_worker(server.address, max_concurrency=2)
    async with running(worker):
        stream = await server.next_stream()
        tasks = [
            ConnectResponse(
                task=TaskAssignment(
                    task_id=f"t-{n}", job_id=f"job-t-{n}", type="echo", params=to_payload({"n": n})
                )
            )
            for n in range(2)
        ]
        # Nested batches and Welcomes have no place in a batch: skipped.
        nested = ConnectResponse(batch=ResponseBatch(messages=[tasks[1]]))
        welcome = ConnectResponse(welcome=Welcome(worker_id="w-1"))
        stream.send(
            ConnectResponse(batch=ResponseBatch(messages=[tasks[0], nested, welcome, tasks[1]]))
        )
        results = [await stream.result()]
        await stream.next("credit")
        results.append(await stream.result())

    assert sorted(r.task_id for r in results) == ["t-0", "t-1"]
    assert all(r.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS for r in results)
    assert sorted(from_payload(r.data)["echo"]["n"] for r in results) == [0, 1]


# --- cancellation -------------------------------------------------------------------------


async def test_cancel_stops_the_handler_then_acks_reports_cancelled_and_returns_the_credit(
    server: ScriptedServer,
) -> None:
    worker, gates = gated_worker(server.address)
    async with running(worker):
        stream = await server.next_stream()
        stream.assign("t-1", "hold")
        await gates.next_started()
        stream.cancel("t-1", "job cancelled by client")
        assert await gates.next_cancelled() == "t-1"
        ack = await stream.next("cancel_ack")
        result = await stream.result()
        credit = await stream.next("credit")

    assert ack.cancel_ack.task_id == "t-1"
    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_CANCELLED
    assert result.error.message == "job cancelled by client"
    assert credit.credit.credits == 1


async def test_cancel_of_a_task_the_worker_does_not_run_is_only_acked(
    server: ScriptedServer,
) -> None:
    worker = make_worker(server.address)
    async with running(worker):
        stream = await server.next_stream()
        stream.cancel("t-9", "job cancelled")
        ack = await stream.next("cancel_ack")
        stream.assign("t-1")  # the stream goes on: the next message is t-1's result
        result = await stream.result()

    assert ack.cancel_ack.task_id == "t-9"
    assert result.task_id == "t-1"


# --- reconnection and failover -----------------------------------------------------------


async def test_the_worker_reconnects_when_the_server_drops_the_stream(
    server: ScriptedServer,
) -> None:
    worker = make_worker(server.address)
    async with running(worker):
        first = await server.next_stream()
        first.end(grpc.StatusCode.UNAVAILABLE)
        second = await server.next_stream()
        second.assign("t-1")
        result = await second.result()

    assert second.hello.initial_credits == 1
    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS


async def test_a_task_running_across_a_reconnect_keeps_its_slot_and_reports_on_the_new_stream(
    server: ScriptedServer,
) -> None:
    worker, gates = gated_worker(server.address, max_concurrency=2)
    async with running(worker):
        first = await server.next_stream()
        first.assign("t-1", "hold")
        await gates.next_started()
        first.end(grpc.StatusCode.UNAVAILABLE)
        second = await server.next_stream()
        gates.release("t-1")
        result = await second.result()
        credit = await second.next("credit")

    assert second.hello.initial_credits == 1  # one slot is still busy with t-1
    assert result.task_id == "t-1"
    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS
    assert credit.credit.credits == 1


async def test_a_result_finished_while_disconnected_goes_out_on_the_next_stream(
    server: ScriptedServer,
) -> None:
    worker, gates = gated_worker(server.address)
    async with running(worker):
        first = await server.next_stream()
        first.assign("t-1", "hold")
        await gates.next_started()
        server.refuse = grpc.StatusCode.UNAVAILABLE
        first.end(grpc.StatusCode.UNAVAILABLE)
        await server.wait_refused(1)
        gates.release("t-1")
        # Once one more attempt was refused, the handler has surely finished.
        await server.wait_refused(server.refused + 1)
        server.refuse = None
        second = await server.next_stream()
        result = await second.result()

    assert second.hello.initial_credits == 1
    assert result.task_id == "t-1"
    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS


async def test_a_replayed_lease_is_not_run_twice_and_its_credit_comes_back(
    server: ScriptedServer,
) -> None:
    worker, gates = gated_worker(server.address, max_concurrency=2)
    async with running(worker):
        first = await server.next_stream()
        first.assign("t-1", "hold")
        await gates.next_started()
        first.end(grpc.StatusCode.UNAVAILABLE)
        second = await server.next_stream()
        second.assign("t-1", "hold")  # the server hands the lease back
        credit = await second.next("credit")
        gates.release("t-1")
        result = await second.result()

    assert second.hello.initial_credits == 1
    assert credit.credit.credits == 1
    assert result.task_id == "t-1"
    assert gates.started.empty()  # started once, on the first stream


async def test_an_unacknowledged_result_is_sent_again_after_a_reconnect(
    start_server: StartServer,
) -> None:
    server = await start_server(auto_ack=False)
    worker = make_worker(server.address)
    async with running(worker):
        first = await server.next_stream()
        first.assign("t-1", "echo", {"n": 1})
        sent = await first.result()
        first.end(grpc.StatusCode.UNAVAILABLE)
        second = await server.next_stream()
        resent = await second.result()
        second.send(ConnectResponse(result_ack=ResultAck(task_id="t-1", accepted=True)))

    assert resent == sent
    assert second.hello.initial_credits == 1


async def test_the_worker_fails_over_to_the_next_address(start_server: StartServer) -> None:
    primary = await start_server()
    backup = await start_server()
    worker = make_worker(primary.address, backup.address)
    async with running(worker):
        await primary.next_stream()
        await primary.stop()
        stream = await backup.next_stream()
        stream.assign("t-1")
        result = await stream.result()

    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS


async def test_an_unreachable_first_address_is_skipped(start_server: StartServer) -> None:
    gone = await start_server()
    await gone.stop()
    live = await start_server()
    worker = make_worker(gone.address, live.address)
    async with running(worker):
        stream = await live.next_stream()

    assert stream.hello.registration.worker_id == "w-1"


async def test_a_silent_server_is_dropped_after_three_heartbeat_intervals(
    start_server: StartServer,
) -> None:
    server = await start_server(heartbeat_interval_ms=50)  # and it never sends one
    worker = make_worker(server.address)
    async with running(worker):
        first = await server.next_stream()
        await server.next_stream()

    assert first.heartbeats >= 1


async def test_a_server_that_sends_heartbeats_keeps_its_stream(start_server: StartServer) -> None:
    server = await start_server(heartbeat_interval_ms=50, send_heartbeats=True)
    worker = make_worker(server.address)
    async with running(worker):
        stream = await server.next_stream()
        # Eight intervals: more than twice the three that would end a silent stream.
        async with asyncio.timeout(WAIT):
            while stream.heartbeats < 8:
                await stream.received.get()

    assert server.streams.empty()


# --- drain and shutdown ---------------------------------------------------------------------


async def test_a_server_drain_finishes_running_tasks_without_new_credits_then_reconnects(
    server: ScriptedServer,
) -> None:
    worker, gates = gated_worker(server.address, max_concurrency=2)
    async with running(worker):
        first = await server.next_stream()
        first.assign("t-1", "hold")
        await gates.next_started()
        first.send(ConnectResponse(drain=Drain(reason="rolling restart")))
        # A cancel for an unknown task is acked at once: once that ack is
        # back, the worker has seen the drain sent before it.
        first.cancel("barrier", "sync")
        await first.next("cancel_ack")
        gates.release("t-1")
        result = await first.result()
        async with asyncio.timeout(WAIT):
            await first.hung_up.wait()
        second = await server.next_stream()

    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS
    assert "credit" not in first.pending_kinds()
    assert second.hello.initial_credits == 2


async def test_stop_drains_and_lets_running_tasks_finish_within_the_grace_period(
    server: ScriptedServer,
) -> None:
    worker, gates = gated_worker(server.address)
    run = asyncio.create_task(worker.run())
    stream = await server.next_stream()
    stream.assign("t-1", "hold")
    await gates.next_started()

    stopping = asyncio.create_task(worker.stop(grace_seconds=WAIT))
    drain = await stream.next("drain")
    gates.release("t-1")
    result = await stream.result()
    async with asyncio.timeout(WAIT):
        await stopping
        await run

    assert drain.drain.reason
    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_SUCCESS
    assert stream.hung_up.is_set()
    assert stream.pending_kinds() == []  # no credit after the result


async def test_stop_cancels_tasks_still_running_after_the_grace_period(
    server: ScriptedServer,
) -> None:
    worker, gates = gated_worker(server.address)
    run = asyncio.create_task(worker.run())
    stream = await server.next_stream()
    stream.assign("t-1", "hold")
    await gates.next_started()

    async with asyncio.timeout(WAIT):
        await worker.stop(grace_seconds=0.01)
        await run

    assert await gates.next_cancelled() == "t-1"
    await stream.next("drain")
    result = await stream.result()
    assert result.status == TaskResultStatus.TASK_RESULT_STATUS_CANCELLED
    assert result.error.message == "the worker shut down before the task finished"
    assert stream.pending_kinds() == []  # no cancel_ack (the server did not ask), no credit


async def test_stop_is_idempotent_and_a_worker_runs_once(server: ScriptedServer) -> None:
    worker = make_worker(server.address)
    run = asyncio.create_task(worker.run())
    await server.next_stream()

    async with asyncio.timeout(WAIT):
        await asyncio.gather(worker.stop(), worker.stop())
        await run
        await worker.stop()

    with pytest.raises(RuntimeError, match="runs once"):
        await worker.run()


async def test_a_worker_stopped_before_it_runs_never_connects(server: ScriptedServer) -> None:
    worker = make_worker(server.address)
    await worker.stop()

    await worker.run()

    assert server.streams.empty()


async def test_cancelling_run_tears_the_worker_down(server: ScriptedServer) -> None:
    worker, gates = gated_worker(server.address)
    run = asyncio.create_task(worker.run())
    stream = await server.next_stream()
    stream.assign("t-1", "hold")
    await gates.next_started()

    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    assert await gates.next_cancelled() == "t-1"
    async with asyncio.timeout(WAIT):
        await worker.stop()  # returns at once: the worker is down


# --- the API without a server -------------------------------------------------------------


def test_the_public_api_is_pinned() -> None:
    assert sorted(avtomatika.worker.__all__) == [
        "ConnectionSettings",
        "GpuInfo",
        "HandlerResult",
        "Resources",
        "SkillHandler",
        "TaskContext",
        "TaskFailure",
        "TaskOutcome",
        "TlsFiles",
        "Worker",
        "WorkerError",
        "WorkerRejected",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"worker_id": "w 1"}, "must match"),
        ({"addresses": []}, "at least one server address"),
        ({"max_concurrency": 0}, "at least 1"),
    ],
)
def test_worker_arguments_are_checked(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"worker_id": "w-1", "addresses": "localhost:1", "token": "t"}
    with pytest.raises(ValueError, match=message):
        Worker(**(arguments | options))


def test_a_skill_is_registered_once() -> None:
    worker = make_worker("localhost:1")

    with pytest.raises(ValueError, match="already registered"):
        worker.add_skill("echo", Gates().handler)


async def test_run_needs_a_skill() -> None:
    worker = Worker(worker_id="w-1", addresses="localhost:1", token=TOKEN)

    with pytest.raises(RuntimeError, match="at least one skill"):
        await worker.run()


def test_outcomes_are_checked() -> None:
    with pytest.raises(ValueError, match="only a 'failure' outcome"):
        TaskOutcome("success", error=TaskFailure.transient("x"))
    with pytest.raises(ValueError, match="cannot report 'cancelled'"):
        TaskOutcome("cancelled")
    with pytest.raises(ValueError, match="needs an error code"):
        TaskFailure("")


async def test_a_handler_can_be_called_with_a_hand_made_context() -> None:
    context = TaskContext(task_id="t-1", job_id="j-1", task_type="echo")

    await context.report_progress(1.0)
    with pytest.raises(ValueError, match=r"between 0\.0 and 1\.0"):
        await context.report_progress(1.5)
    assert context.seconds_left() is None


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.5, rng=random.Random(7))

    delays = [backoff.next_delay() for _ in range(6)]
    backoff.reset()

    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert base / 2 <= delay <= base
    assert 0.5 <= backoff.next_delay() <= 1.0
