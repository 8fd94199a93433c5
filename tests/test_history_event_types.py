"""``GET /api/v1/jobs/{job_id}/history`` as 1.0b13 clients read it: each
event's ``event_type`` has 1.0b13's name where 1.0b13 had the event
(``state_started``, ``state_finished``, ``task_dispatched``,
``task_finished``, ``job_completed``, ``state_failed``,
``sub_blueprint_started``), our name otherwise, beside our ``type``; with
1.0b13's ``previous_state``, ``next_state`` and ``attempt_number``. On every
history backend: they all keep our events, so the names are the rendering's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.v1.task_pb2 import ErrorCode
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint, fan_out_blueprint
from tests.support.history import Events, ended, history_until
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def database_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """``HISTORY_DATABASE_URI`` for each backend (None: memory)."""
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


def sequence(events: Events) -> list[tuple[str, str | None]]:
    return [(e["event_type"], e["state"]) for e in events]


def first(events: Events, event_type: str) -> dict[str, Any]:
    return next(e for e in events if e["event_type"] == event_type)


async def test_a_linear_job(
    database_uri: str | None,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], history_database_uri=database_uri)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo", {"n": 1})
    await worker.succeed(await worker.next_task(), {"echoed": 1})

    events = await history_until(http, job_id, ended)

    assert sequence(events) == [
        ("job_created", None),
        ("state_started", "start"),
        ("task_dispatched", "start"),
        ("task_picked_up", "start"),  # 1.0b13 had no such event: our name
        ("task_finished", "start"),
        ("state_finished", "start"),
        ("state_started", "done"),
        ("job_completed", "done"),
    ]
    # Our names stay in "type".
    assert [e["type"] for e in events][1:3] == ["state_entered", "task_dispatched"]
    left = first(events, "state_finished")
    assert (left["previous_state"], left["next_state"]) == ("start", "done")
    assert first(events, "state_started")["attempt_number"] == 1
    assert first(events, "task_finished")["worker_id"] == "w-1"
    assert "context_snapshot" not in events[0]  # 1.0b13's copy of the job, token and all


async def test_a_parallel_job(
    database_uri: str | None,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
) -> None:
    orchestrator = await start_orchestrator(
        [fan_out_blueprint(2)], history_database_uri=database_uri
    )
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["work"], credits=2)
    job_id = await create_job(http, "jobs/fan")
    tasks = [await worker.next_task(), await worker.next_task()]
    for task in tasks:
        await worker.succeed(task, {"n": RawWorker.params(task)["n"]})

    events = await history_until(http, job_id, ended)

    assert sequence(events) == [
        ("job_created", None),
        ("state_started", "start"),
        ("task_dispatched", "start"),
        ("task_dispatched", "start"),
        ("task_picked_up", "start"),
        ("task_picked_up", "start"),
        ("task_finished", "start"),
        ("task_finished", "start"),
        ("state_finished", "start"),
        ("state_started", "join"),
        ("state_finished", "join"),
        ("state_started", "done"),
        ("job_completed", "done"),
    ]
    finished = [e["task_id"] for e in events if e["event_type"] == "task_finished"]
    assert finished == [task.task_id for task in tasks]
    assert [(e["previous_state"], e["next_state"]) for e in events if e["next_state"]] == [
        ("start", "join"),
        ("join", "done"),
    ]


async def test_a_failed_job(
    database_uri: str | None,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], history_database_uri=database_uri)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    await worker.fail(await worker.next_task(), ErrorCode.ERROR_CODE_INVALID_INPUT, "no input")

    events = await history_until(http, job_id, ended)

    # 1.0b13 logged nothing when a worker's error failed the job: our name.
    assert sequence(events) == [
        ("job_created", None),
        ("state_started", "start"),
        ("task_dispatched", "start"),
        ("task_picked_up", "start"),
        ("task_finished", "start"),
        ("job_ended", "start"),
    ]
    assert events[-1]["message"].startswith("failed: ")


def failing_at(end_state: str) -> StateMachineBlueprint:
    """start -> ``end_state`` (an end state that fails the job)."""
    bp = StateMachineBlueprint("short", api_endpoint="jobs/short", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to(end_state)

    @bp.handler_for(end_state, is_end=True)
    async def end() -> None:
        return None

    return bp


async def test_a_job_failed_by_its_end_state_completes_as_in_1_0b13(
    database_uri: str | None, start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator(
        [failing_at("failed")], history_database_uri=database_uri
    )
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/short")
    await wait_for_status(http, job_id, "failed")

    events = await history_until(http, job_id, ended)

    assert sequence(events) == [
        ("job_created", None),
        ("state_started", "start"),
        ("state_finished", "start"),
        ("state_started", "failed"),
        ("job_completed", "failed"),
    ]
    assert events[-1]["message"] == "failed"


async def test_a_handler_that_raises_is_a_state_failed_with_its_attempt(
    database_uri: str | None, start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("crashing", api_endpoint="jobs/crashing", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        raise RuntimeError("bug")
        actions.transition_to("finished")  # what it would do, were it not broken

    @bp.handler_for("finished", is_end=True)
    async def end() -> None:
        return None

    orchestrator = await start_orchestrator(
        [bp], history_database_uri=database_uri, job_max_retries=1
    )
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/crashing")

    events = await history_until(http, job_id, ended)

    assert sequence(events) == [
        ("job_created", None),
        ("state_started", "start"),
        ("state_failed", "start"),
        ("job_ended", "start"),  # quarantined: 1.0b13 had no event for it
    ]
    assert events[2]["attempt_number"] == 1
    assert events[2]["type"] == "task_retried"
    assert events[-1]["message"].startswith("quarantined: ")


async def test_a_parent_records_its_child_as_a_sub_blueprint_started(
    database_uri: str | None, start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    child = StateMachineBlueprint("child")

    @child.handler_for("start", is_start=True)
    async def child_start(actions: ActionFactory) -> None:
        actions.transition_to("finished")

    @child.handler_for("finished", is_end=True)
    async def child_end() -> None:
        return None

    parent = StateMachineBlueprint("parent", api_endpoint="jobs/parent", api_version="v1")

    @parent.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.run_blueprint("child", {}, transitions={"success": "finished"})

    @parent.handler_for("finished", is_end=True)
    async def end() -> None:
        return None

    orchestrator = await start_orchestrator([child, parent], history_database_uri=database_uri)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/parent")
    job = await wait_for_status(http, job_id, "finished")

    events = await history_until(http, job_id, ended)

    assert sequence(events) == [
        ("job_created", None),
        ("state_started", "start"),
        ("sub_blueprint_started", "start"),
        ("state_finished", "start"),
        ("state_started", "finished"),
        ("job_completed", "finished"),
    ]
    started = events[2]
    assert (started["type"], started["next_state"]) == ("sub_job_started", "child")
    assert started["details"] == {
        "child_job_id": job["child_job_ids"][0],
        "blueprint_name": "child",
    }
