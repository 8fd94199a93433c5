"""A step whose handler cannot suspend (an ``async def`` without ``await``,
as many start and end states' are) runs in the commit that makes it ready:
the job's creation, or the result that leads to its state. One commit, no
trip through the ready queue. Seen from outside, a new job is stored already
past its start, a result takes the job straight to where the next step leaves
it, and the history still tells every state it passed through. A handler
that awaits runs on its own, as every step did before; one that raises is
retried like any step."""

from __future__ import annotations

import asyncio
import functools
from typing import Any
from unittest.mock import AsyncMock

import pytest

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.blueprint.state_machine import never_suspends
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.follow import EventStream
from tests.support.history import ended, history_until
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


def dispatching(name: str) -> StateMachineBlueprint:
    """A blueprint whose start sends an ``x`` task; success leads to ``next``."""
    bp = StateMachineBlueprint(name, api_endpoint=f"jobs/{name}", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task(task_type="x", params={}, transitions={"success": "next"})

    return bp


async def nothing() -> None:
    """An end state's handler with nothing to do."""


def starting(name: str, start: Any) -> StateMachineBlueprint:
    """A blueprint whose start handler is ``start``, which may move on to
    the end state ``done``."""
    bp = StateMachineBlueprint(name, api_endpoint=f"jobs/{name}", api_version="v1")
    bp.handler_for("start", is_start=True)(start)
    bp.handler_for("done", is_end=True, outcome="finished")(nothing)
    return bp


async def x_worker(grpc_channel: GrpcChannel, orchestrator: Any) -> RawWorker:
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["x"])
    return worker


def test_only_an_async_def_without_await_never_suspends() -> None:
    async def end(state_history: dict[str, Any]) -> None:
        state_history["closed"] = True

    async def awaiting() -> None:
        await asyncio.sleep(0)

    async def with_block(lock: asyncio.Lock) -> None:
        async with lock:
            pass

    async def looping(items: Any) -> None:
        async for _ in items:
            pass

    async def comprehension(items: Any) -> list[Any]:
        return [item async for item in items]

    def not_a_coroutine() -> None:
        pass

    class Holder:
        async def end(self) -> None:
            pass

        async def awaiting(self) -> None:
            await asyncio.sleep(0)

    assert never_suspends(end)
    assert never_suspends(Holder().end)
    for handler in (awaiting, with_block, looping, comprehension, not_a_coroutine):
        assert not never_suspends(handler), handler.__name__
    assert not never_suspends(Holder().awaiting)
    # What is not plainly an async def may suspend: it runs on its own.
    assert not never_suspends(AsyncMock())
    assert not never_suspends(functools.partial(end, {}))
    assert not never_suspends(functools.wraps(end)(lambda **kw: end(**kw)))


async def test_an_end_state_that_cannot_suspend_finishes_the_job_with_the_result(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    bp = dispatching("at_once")

    @bp.handler_for("next", is_end=True, outcome="finished")
    async def close(state_history: dict[str, Any]) -> None:
        state_history["closed"] = True

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/at_once")
    await wait_for_status(http, job_id, "waiting_for_worker")
    stream = EventStream(await http.get(f"/api/v1/jobs/{job_id}/events"))
    assert (await stream.next() or ("", {}))[1]["status"] == "waiting_for_worker"

    worker = await x_worker(grpc_channel, orchestrator)
    task = await worker.next_task()
    ack = await worker.succeed(task, {"out": 1})
    assert ack.result_ack.accepted

    # One change after the result: finished. The job was never seen running
    # its end state, because no commit left it there.
    changes = []
    while (item := await stream.next()) is not None:
        changes.append(item[1])
    assert [(c["status"], c["current_state"]) for c in changes] == [("finished", "next")]
    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"out": 1, "closed": True}
    events = await history_until(http, job_id, ended)
    assert [(e["type"], e["state"]) for e in events][-4:] == [
        ("task_finished", "start"),
        ("state_left", "start"),
        ("state_entered", "next"),
        ("job_ended", "next"),
    ]


async def test_a_step_that_awaits_runs_on_its_own_after_the_result(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    bp = dispatching("awaits")
    release = asyncio.Event()

    @bp.handler_for("next", is_end=True, outcome="finished")
    async def close() -> None:
        await release.wait()

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/awaits")
    worker = await x_worker(grpc_channel, orchestrator)
    task = await worker.next_task()
    # The result is acknowledged while the step it made ready still waits.
    ack = await worker.succeed(task, {"out": 1})
    assert ack.result_ack.accepted
    job = await wait_for_status(http, job_id, "running")
    assert job["current_state"] == "next"
    release.set()
    await wait_for_status(http, job_id, "finished")


async def test_a_step_run_with_the_result_that_raises_is_retried_like_any_step(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    bp = dispatching("raises_once")
    calls: list[int] = []

    @bp.handler_for("next", is_end=True, outcome="finished")
    async def close(state_history: dict[str, Any]) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("not yet")
        state_history["closed"] = len(calls)

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/raises_once")
    worker = await x_worker(grpc_channel, orchestrator)
    task = await worker.next_task()
    assert (await worker.succeed(task, {"out": 1})).result_ack.accepted

    job = await wait_for_status(http, job_id, "finished")
    assert calls == [0, 1]
    # The result counts once; the failed step wrote nothing.
    assert job["state_history"] == {"out": 1, "closed": 2}
    events = await history_until(http, job_id, ended)
    kinds = [(e["type"], e["state"]) for e in events]
    assert kinds.count(("task_finished", "start")) == 1
    assert kinds.count(("state_entered", "next")) == 1
    retried = [e for e in events if e["type"] == "task_retried"]
    assert len(retried) == 1
    assert "not yet" in retried[0]["message"]


async def test_a_step_run_with_the_result_that_moves_on_leaves_every_state_in_the_history(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    bp = dispatching("moves_on")

    @bp.handler_for("next")
    async def route(actions: ActionFactory) -> None:
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        """Reached through the executor: the step at once runs only one."""

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/moves_on")
    worker = await x_worker(grpc_channel, orchestrator)
    task = await worker.next_task()
    assert (await worker.succeed(task, {"out": 1})).result_ack.accepted

    await wait_for_status(http, job_id, "finished")
    events = await history_until(http, job_id, ended)
    assert [(e["type"], e["state"]) for e in events][-6:] == [
        ("task_finished", "start"),
        ("state_left", "start"),
        ("state_entered", "next"),
        ("state_left", "next"),
        ("state_entered", "done"),
        ("job_ended", "done"),
    ]


async def test_a_start_that_cannot_suspend_runs_as_the_job_is_created(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = dispatching("starts_at_once")

    @bp.handler_for("next", is_end=True, outcome="finished")
    async def done() -> None:
        pass

    # The one executor is kept busy by a step that waits: a start it had to
    # run would leave the job pending.
    blocker = StateMachineBlueprint("blocker", api_endpoint="jobs/blocker", api_version="v1")
    release = asyncio.Event()

    @blocker.handler_for("start", is_start=True)
    async def hold(actions: ActionFactory) -> None:
        await release.wait()
        actions.transition_to("done")

    blocker.handler_for("done", is_end=True, outcome="finished")(done)

    orchestrator = await start_orchestrator([bp, blocker], executor_concurrency=1)
    http = http_client(orchestrator)
    held = await create_job(http, "jobs/blocker")
    job_id = await create_job(http, "jobs/starts_at_once")
    response = await http.get(f"/api/v1/jobs/{job_id}")
    assert (await response.json())["status"] == "waiting_for_worker"
    events = await history_until(http, job_id, lambda events: len(events) >= 3)
    assert [(e["type"], e["state"]) for e in events] == [
        ("job_created", None),
        ("state_entered", "start"),
        ("task_dispatched", "start"),
    ]
    release.set()
    await wait_for_status(http, held, "finished")


async def test_a_start_run_at_creation_that_raises_is_retried_like_any_step(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    calls: list[int] = []

    async def start(actions: ActionFactory) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("not yet")
        actions.transition_to("done")

    bp = starting("start_raises", start)
    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/start_raises")  # created all the same
    job = await wait_for_status(http, job_id, "finished")
    assert calls == [0, 1]
    assert job["retry_count"] == 0  # entering "done" starts its count afresh
    events = await history_until(http, job_id, ended)
    assert [e["type"] for e in events][:3] == ["job_created", "state_entered", "task_retried"]


async def test_a_start_that_awaits_runs_after_the_job_is_created(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    release = asyncio.Event()

    async def start(actions: ActionFactory) -> None:
        await release.wait()
        actions.transition_to("done")

    bp = starting("start_awaits", start)
    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/start_awaits")
    response = await http.get(f"/api/v1/jobs/{job_id}")
    assert (await response.json())["status"] == "pending"
    release.set()
    await wait_for_status(http, job_id, "finished")
