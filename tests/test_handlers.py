"""Handlers: arguments injected by name, one action per run, state_history
written through, and every mistake ending the job in ``error`` with a
message that says where and why."""

from __future__ import annotations

from typing import Any

import pytest

from avtomatika import ActionFactory, ClientInfo, JobContext, StateMachineBlueprint
from avtomatika.access.authenticator import DEFAULT_CLIENT_ID
from tests.support import create_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator


async def end() -> None:
    """An end state's handler: reaching it finishes the job."""


async def run_job(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    bp: StateMachineBlueprint,
    status: str,
    initial_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one job of ``bp`` until it reaches ``status``; its JSON."""
    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, f"jobs/{bp.name}", initial_data)
    return await wait_for_status(http, job_id, status)


async def test_a_handler_that_raises_is_retried_then_quarantined(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bp = StateMachineBlueprint("raises", api_endpoint="jobs/raises", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("explode")

    @bp.handler_for("explode")
    async def explode(
        state_history: dict[str, Any], actions: ActionFactory, on_fire: bool = True
    ) -> None:
        state_history["half"] = "written"
        if on_fire:
            raise ValueError("the model is on fire")
        actions.transition_to("done")

    bp.handler_for("done", is_end=True, outcome="finished")(end)

    job = await run_job(start_orchestrator, http_client, bp, "quarantined")

    assert "'explode'" in job["error"]
    assert "ValueError" in job["error"]
    assert "gave up after 3 retries" in job["error"]
    assert "the model is on fire" in job["error"]
    assert job["current_state"] == "explode"
    # A failed step writes nothing: not even what it put in state_history.
    assert job["state_history"] == {}
    # The operator gets each failure's traceback, down to the handler's line.
    failures = [r for r in caplog.records if r.exc_info and job["id"] in r.getMessage()]
    assert len(failures) == 4  # the first run and its three retries
    assert all(r.levelname == "WARNING" for r in failures)
    assert "in explode" in caplog.text


async def test_a_parameter_nothing_can_provide_fails_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("needy", api_endpoint="jobs/needy", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory, api_key: str) -> None:
        actions.transition_to("done")

    bp.handler_for("done", is_end=True, outcome="finished")(end)

    job = await run_job(start_orchestrator, http_client, bp, "failed", {"other": 1})

    assert "'api_key'" in job["error"]
    assert "'start'" in job["error"]


async def test_an_optional_parameter_nothing_provides_keeps_its_default(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("optional", api_endpoint="jobs/optional", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(state_history: dict[str, Any], actions: ActionFactory, size: int = 7) -> None:
        state_history["size"] = size
        actions.transition_to("done")

    bp.handler_for("done", is_end=True, outcome="finished")(end)

    job = await run_job(start_orchestrator, http_client, bp, "finished")

    assert job["state_history"] == {"size": 7}


async def test_arguments_are_injected_by_name(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("injected", api_endpoint="jobs/injected", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(
        job_id: str,
        current_state: str,
        initial_data: dict[str, Any],
        state_history: dict[str, Any],
        actions: ActionFactory,
    ) -> None:
        state_history["seen"] = {
            "job_id": job_id,
            "current_state": current_state,
            "initial_data": initial_data,
        }
        state_history["shared"] = "from state_history"
        state_history["tokens"] = 3
        actions.transition_to("second")

    @bp.handler_for("second")
    async def second(
        user_id: int,
        tokens: int,
        shared: str,
        state_history: dict[str, Any],
        actions: ActionFactory,
    ) -> None:
        # Keys of initial_data and of state_history, by name; state_history
        # wins when both have the key.
        state_history["second_saw"] = {"user_id": user_id, "tokens": tokens, "shared": shared}
        actions.transition_to("done")

    bp.handler_for("done", is_end=True, outcome="finished")(end)

    initial = {"user_id": 12345678901234567, "shared": "from initial_data"}
    job = await run_job(start_orchestrator, http_client, bp, "finished", initial)

    history = job["state_history"]
    assert history["seen"] == {
        "job_id": job["id"],
        "current_state": "start",
        "initial_data": initial,
    }
    assert history["second_saw"] == {
        "user_id": 12345678901234567,
        "tokens": 3,
        "shared": "from state_history",
    }


async def test_state_history_written_by_handlers_persists_step_by_step(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("history", api_endpoint="jobs/history", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(state_history: dict[str, Any], actions: ActionFactory) -> None:
        state_history["steps"] = ["start"]
        state_history["scratch"] = True
        actions.transition_to("middle")

    @bp.handler_for("middle")
    async def middle(
        steps: list[str], state_history: dict[str, Any], actions: ActionFactory
    ) -> None:
        state_history["steps"] = [*steps, "middle"]
        del state_history["scratch"]
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done(steps: list[str], state_history: dict[str, Any]) -> None:
        state_history["steps"] = [*steps, "done"]

    job = await run_job(start_orchestrator, http_client, bp, "finished")

    assert job["state_history"] == {"steps": ["start", "middle", "done"]}


async def test_a_handler_taking_two_actions_fails_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("greedy", api_endpoint="jobs/greedy", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("done")
        actions.dispatch_task("echo", transitions={"success": "done"})

    bp.handler_for("done", is_end=True, outcome="finished")(end)

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/greedy")
    job = await wait_for_status(http, job_id, "failed")

    assert "one action" in job["error"]
    assert job["current_state"] == "start"
    assert await orchestrator.engine.storage.queue_depths() == {}


async def test_a_handler_taking_no_action_fails_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("idle", api_endpoint="jobs/idle", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory, act: bool = False) -> None:
        if act:
            actions.transition_to("done")

    bp.handler_for("done", is_end=True, outcome="finished")(end)

    job = await run_job(start_orchestrator, http_client, bp, "failed")

    assert "'start'" in job["error"]
    assert "no action" in job["error"]


async def test_an_end_state_taking_an_action_fails_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("restless", api_endpoint="jobs/restless", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done(actions: ActionFactory) -> None:
        actions.transition_to("start")

    job = await run_job(start_orchestrator, http_client, bp, "failed")

    assert "'done'" in job["error"]


async def test_a_transition_to_a_state_without_handler_fails_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("lost", api_endpoint="jobs/lost", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(target: str, actions: ActionFactory) -> None:
        # The target comes from the request, so no check at registration
        # can catch it.
        if target == "done":
            actions.transition_to("done")
        else:
            actions.transition_to(target)

    bp.handler_for("done", is_end=True, outcome="finished")(end)

    job = await run_job(start_orchestrator, http_client, bp, "failed", {"target": "nowhere"})

    assert "'nowhere'" in job["error"]
    assert job["current_state"] == "start"


async def test_a_dispatch_leading_to_a_state_without_handler_fails_the_job(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("dangling", api_endpoint="jobs/dangling", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(target: str, actions: ActionFactory) -> None:
        actions.dispatch_task("echo", transitions={"success": "done", "failure": target})

    bp.handler_for("done", is_end=True, outcome="finished")(end)

    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/dangling", {"target": "nowhere"})
    job = await wait_for_status(http, job_id, "failed")

    assert "'nowhere'" in job["error"]
    assert await orchestrator.engine.storage.queue_depths() == {}


async def test_context_and_client_are_injected(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("contextual", api_endpoint="jobs/contextual", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(context: JobContext, client: ClientInfo) -> None:
        context.state_history["seen"] = {
            "job_id": context.job_id,
            "state": context.current_state,
            "initial_data": context.initial_data,
            "client": client.id,
        }
        context.actions.transition_to("done")

    bp.handler_for("done", is_end=True, outcome="finished")(end)

    job = await run_job(start_orchestrator, http_client, bp, "finished", {"k": "v"})

    assert job["state_history"]["seen"] == {
        "job_id": job["id"],
        "state": "start",
        "initial_data": {"k": "v"},
        "client": DEFAULT_CLIENT_ID,
    }
