"""How an end state ends a job: 1.0b13's rule by default (``finished`` only
for an end state named ``finished``, ``failed`` for any other), or the
outcome the state declares; the webhook, the metric and a parent's
transition follow the status. Registration warns about an end state whose
name says neither and that declares nothing."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.blueprint.graph import to_dot
from avtomatika.engine.core import Engine
from avtomatika.errors import BlueprintError
from tests.support import create_job, get_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.webhooks import FAST_RETRIES, Receiver, create_job_with_webhook

pytestmark = pytest.mark.both_stores


def ending_in(end_state: str, outcome: str | None = None) -> StateMachineBlueprint:
    """start -> ``end_state`` (declaring ``outcome``, if given)."""
    bp = StateMachineBlueprint("ends", api_version="v1", api_endpoint="jobs/ends")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to(end_state)

    @bp.handler_for(end_state, is_end=True, outcome=outcome)
    async def end() -> None:
        return None

    return bp


@pytest.mark.parametrize(
    ("end_state", "outcome", "status"),
    [
        ("finished", None, "finished"),
        ("failed", None, "failed"),
        ("done", None, "failed"),  # 1.0b13: any name but "finished" fails
        ("published", "finished", "finished"),
        ("finished", "failed", "failed"),  # a declaration beats the name
        ("rejected", "failed", "failed"),
    ],
)
async def test_an_end_state_ends_the_job_by_its_name_or_its_declared_outcome(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    receiver: Receiver,
    end_state: str,
    outcome: str | None,
    status: str,
) -> None:
    orchestrator = await start_orchestrator([ending_in(end_state, outcome)], **FAST_RETRIES)
    http = http_client(orchestrator)

    job_id = await create_job_with_webhook(http, "jobs/ends", receiver.url)
    job = await wait_for_status(http, job_id, status)
    hook = (await receiver.next()).json()

    # The handler ran and chose this end: no error, whichever the status.
    assert (job["current_state"], job["error"]) == (end_state, None)
    assert (hook["event"], hook["status"]) == (f"job_{status}", status)
    assert await jobs_ended(http, "ends", status) == 1


async def jobs_ended(http: aiohttp.ClientSession, blueprint: str, status: str) -> float:
    """``avtomatika_jobs_ended_total`` of ``blueprint`` and ``status``."""
    text = await (await http.get("/_public/metrics")).text()
    labels = {"blueprint": blueprint, "status": status}
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "avtomatika_jobs_ended_total" and sample.labels == labels
    )


def child_ending_in(end_state: str, outcome: str | None) -> StateMachineBlueprint:
    child = ending_in(end_state, outcome)
    child.name, child.api_endpoint, child.api_version = "child", None, None
    return child


@pytest.mark.parametrize(
    ("end_state", "outcome", "child_status", "parent_state"),
    [
        ("done", None, "failed", "child_failed"),
        ("done", "finished", "finished", "child_succeeded"),
        ("finished", None, "finished", "child_succeeded"),
    ],
)
async def test_a_childs_end_state_picks_its_parents_transition(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    end_state: str,
    outcome: str | None,
    child_status: str,
    parent_state: str,
) -> None:
    parent = StateMachineBlueprint("parent", api_version="v1", api_endpoint="jobs/parent")

    @parent.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.run_blueprint(
            "child", {}, transitions={"success": "child_succeeded", "failure": "child_failed"}
        )

    @parent.handler_for("child_succeeded", is_end=True, outcome="finished")
    @parent.handler_for("child_failed", is_end=True, outcome="finished")
    async def end() -> None:
        return None

    orchestrator = await start_orchestrator([child_ending_in(end_state, outcome), parent])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/parent")
    job = await wait_for_status(http, job_id, "finished")

    [child_id] = job["child_job_ids"]
    assert job["current_state"] == parent_state
    assert (await get_job(http, child_id))["status"] == child_status


async def noop() -> None:
    return None


@pytest.mark.parametrize("outcome", ["success", "FINISHED", "", "cancelled"])
def test_an_outcome_other_than_finished_or_failed_is_refused_naming_the_state(
    outcome: str,
) -> None:
    bp = StateMachineBlueprint("bad")

    with pytest.raises(BlueprintError, match=r"state 'published' declares outcome"):
        bp.handler_for("published", is_end=True, outcome=outcome)


def test_an_outcome_on_a_state_that_is_not_an_end_state_is_refused() -> None:
    bp = StateMachineBlueprint("bad")

    with pytest.raises(BlueprintError, match=r"state 'middle' .* is not an end state"):
        bp.handler_for("middle", outcome="finished")


def test_handlers_of_one_end_state_cannot_declare_different_outcomes() -> None:
    bp = StateMachineBlueprint("bad")
    bp.handler_for("end", is_end=True, outcome="finished").when("context.initial_data.x == 1")(noop)

    with pytest.raises(BlueprintError, match=r"state 'end' declares outcome 'failed'"):
        bp.handler_for("end", is_end=True, outcome="failed")(noop)


def test_registration_warns_about_an_end_state_whose_outcome_only_its_name_decides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bp = StateMachineBlueprint("mixed")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("done")
        actions.transition_to("published")
        actions.transition_to("finished")
        actions.transition_to("failed")

    for state in ("done", "finished", "failed"):
        bp.handler_for(state, is_end=True)(noop)
    bp.handler_for("published", is_end=True, outcome="finished")(noop)

    with caplog.at_level(logging.WARNING, logger="avtomatika.engine.core"):
        Engine().register_blueprint(bp)

    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "'mixed'" in message
    assert "end state 'done' fails its jobs" in message
    assert "outcome='finished'" in message


def test_the_graph_marks_how_each_end_state_ends_the_job() -> None:
    bp = StateMachineBlueprint("drawn")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("done")
        actions.transition_to("published")

    bp.handler_for("done", is_end=True)(noop)
    bp.handler_for("published", is_end=True, outcome="finished")(noop)

    dot = to_dot(bp)

    [done] = [line for line in dot.splitlines() if line.strip().startswith('"done"')]
    [published] = [line for line in dot.splitlines() if line.strip().startswith('"published"')]
    assert 'xlabel="failed"' in done
    assert 'xlabel="finished"' in published
