"""Conditional routing with ``.when()``, from the 1.0b13 docs: the README's
``decision_step`` (default handler declared after the conditional one),
cookbook recipe 5 (``multilingual_flow``, no default handler), and a
condition on a worker's result in ``state_history``."""

from __future__ import annotations

import pytest

from avtomatika import ActionFactory, JobContext, StateMachineBlueprint
from avtomatika.worker import TaskContext
from tests.support import create_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores


def decision_blueprint() -> StateMachineBlueprint:
    """README "Conditional Transitions (.when())", in the order printed."""
    my_blueprint = StateMachineBlueprint("decision", api_endpoint="jobs/decision", api_version="v1")

    @my_blueprint.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("decision_step")

    @my_blueprint.handler_for("decision_step").when("context.initial_data.type == 'urgent'")
    async def handle_urgent(actions: ActionFactory) -> None:
        actions.transition_to("urgent_processing")

    @my_blueprint.handler_for("decision_step")
    async def handle_normal(actions: ActionFactory) -> None:
        actions.transition_to("normal_processing")

    @my_blueprint.handler_for("urgent_processing", is_end=True)
    @my_blueprint.handler_for("normal_processing", is_end=True)
    async def done() -> None:
        return None

    return my_blueprint


def multilingual_flow() -> StateMachineBlueprint:
    """Cookbook recipe 5: two conditional handlers and no default."""
    multilingual_pipeline = StateMachineBlueprint(
        name="multilingual_flow", api_version="v1", api_endpoint="jobs/multilingual_flow"
    )

    @multilingual_pipeline.handler_for("start", is_start=True)
    async def start_multilingual(context: JobContext, actions: ActionFactory) -> None:
        actions.transition_to("process_text")

    @multilingual_pipeline.handler_for("process_text").when("context.initial_data.language == 'en'")
    async def process_english_text(context: JobContext, actions: ActionFactory) -> None:
        actions.dispatch_task(
            task_type="process_en", params=context.initial_data, transitions={"success": "finished"}
        )

    @multilingual_pipeline.handler_for("process_text").when("context.initial_data.language == 'de'")
    async def process_german_text(context: JobContext, actions: ActionFactory) -> None:
        actions.dispatch_task(
            task_type="process_de", params=context.initial_data, transitions={"success": "finished"}
        )

    @multilingual_pipeline.handler_for("finished", is_end=True)
    async def multilingual_finished(context: JobContext, actions: ActionFactory) -> None:
        return None

    return multilingual_pipeline


@pytest.mark.parametrize(
    ("initial_data", "state"),
    [
        ({"type": "urgent"}, "urgent_processing"),
        ({"type": "routine"}, "normal_processing"),
        ({}, "normal_processing"),
    ],
)
async def test_decision_step_routes_on_initial_data(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    initial_data: dict[str, str],
    state: str,
) -> None:
    orchestrator = await start_orchestrator([decision_blueprint()])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/decision", initial_data)
    # Neither end state is named "finished": as in 1.0b13, the job fails there.
    job = await wait_for_status(http, job_id, "failed")

    assert job["current_state"] == state


async def test_multilingual_flow_sends_each_language_to_its_worker_skill(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([multilingual_flow()])
    http = http_client(orchestrator)

    async def process_en(params: Params, task: TaskContext) -> Params:
        return {"processed_by": "en", "text": params["text"]}

    async def process_de(params: Params, task: TaskContext) -> Params:
        return {"processed_by": "de", "text": params["text"]}

    async with serving(orchestrator, {"process_en": process_en, "process_de": process_de}):
        english = await create_job(http, "jobs/multilingual_flow", {"language": "en", "text": "A"})
        german = await create_job(http, "jobs/multilingual_flow", {"language": "de", "text": "B"})
        english_job = await wait_for_status(http, english, "finished")
        german_job = await wait_for_status(http, german, "finished")

    assert english_job["state_history"] == {"processed_by": "en", "text": "A"}
    assert german_job["state_history"] == {"processed_by": "de", "text": "B"}


async def test_multilingual_flow_fails_a_language_no_handler_takes(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([multilingual_flow()])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/multilingual_flow", {"language": "fr", "text": "salut"})
    job = await wait_for_status(http, job_id, "failed")

    # A clear blueprint error, at once: no retries of a placeholder handler.
    assert job["current_state"] == "process_text"
    assert "'process_text'" in job["error"]
    assert "no default handler" in job["error"]
    assert job["retry_count"] == 0


def scoring_blueprint() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("scoring", api_endpoint="jobs/scoring", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: Params, actions: ActionFactory) -> None:
        actions.dispatch_task("score", params=initial_data, transitions={"success": "route"})

    @bp.handler_for("route").when("context.state_history.score >= 0.8")
    async def accept(actions: ActionFactory) -> None:
        actions.transition_to("accepted")

    @bp.handler_for("route").when("context.state_history.flagged == True")
    async def escalate(actions: ActionFactory) -> None:
        actions.transition_to("escalated")

    @bp.handler_for("route")
    async def review(actions: ActionFactory) -> None:
        actions.transition_to("manual_review")

    @bp.handler_for("accepted", is_end=True, outcome="finished")
    @bp.handler_for("escalated", is_end=True, outcome="finished")
    @bp.handler_for("manual_review", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


@pytest.mark.parametrize(
    ("result", "state"),
    [
        ({"score": 0.93}, "accepted"),
        # Conditions are tried in declaration order: the first true one wins.
        ({"score": 0.95, "flagged": True}, "accepted"),
        ({"score": 0.2, "flagged": True}, "escalated"),
        ({"score": 0.2}, "manual_review"),
        # A value that cannot be compared makes the condition false.
        ({"score": "high"}, "manual_review"),
    ],
)
async def test_a_condition_can_read_the_workers_result(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    result: Params,
    state: str,
) -> None:
    orchestrator = await start_orchestrator([scoring_blueprint()])
    http = http_client(orchestrator)

    async def score(params: Params, task: TaskContext) -> Params:
        return params["result"]  # type: ignore[no-any-return]

    async with serving(orchestrator, {"score": score}):
        job_id = await create_job(http, "jobs/scoring", {"result": result})
        job = await wait_for_status(http, job_id, "finished")

    assert job["current_state"] == state
