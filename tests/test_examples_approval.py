"""Human approval, cookbook recipe 2 (``moderation_flow``): a worker
generates data, the job waits for a moderator's decision on
``POST /_public/webhooks/approval/{job_id}``, and the decision picks the
transition. The recipe as printed registers ``process_approved_data`` twice;
this is its fixed form."""

from __future__ import annotations

import aiohttp
import pytest

from avtomatika import ActionFactory, JobContext, OrchestratorEngine, StateMachineBlueprint
from avtomatika.worker import TaskContext
from tests.support import create_job, get_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores


def moderation_flow() -> StateMachineBlueprint:
    moderation_pipeline = StateMachineBlueprint(
        name="moderation_flow", api_version="v1", api_endpoint="jobs/moderation_flow"
    )

    @moderation_pipeline.handler_for("generate_data", is_start=True)
    async def generate_data_handler(context: JobContext, actions: ActionFactory) -> None:
        actions.dispatch_task(
            task_type="data_generation",
            params=context.initial_data,
            transitions={"success": "awaiting_approval", "failure": "failed"},
        )

    @moderation_pipeline.handler_for("awaiting_approval")
    async def await_approval_handler(context: JobContext, actions: ActionFactory) -> None:
        actions.await_human_approval(
            integration="telegram",
            message=f"Approval required for Job {context.job_id}",
            transitions={
                "approved": "process_approved_data",
                "rejected": "rejected_by_moderator",
            },
        )

    @moderation_pipeline.handler_for("process_approved_data")
    async def process_approved_handler(context: JobContext, actions: ActionFactory) -> None:
        context.state_history["published"] = context.state_history["draft"]
        actions.transition_to("finished")

    @moderation_pipeline.handler_for("finished", is_end=True)
    @moderation_pipeline.handler_for("rejected_by_moderator", is_end=True)
    @moderation_pipeline.handler_for("failed", is_end=True)
    async def done(context: JobContext, actions: ActionFactory) -> None:
        return None

    return moderation_pipeline


async def data_generation(params: Params, task: TaskContext) -> Params:
    return {"draft": f"a post about {params['topic']}"}


async def decide(
    orchestrator: OrchestratorEngine, job_id: str, body: object
) -> tuple[int, dict[str, str]]:
    """POST the approval webhook without any token: it is public."""
    async with aiohttp.ClientSession(f"http://127.0.0.1:{orchestrator.rest_port}") as public:
        response = await public.post(f"/_public/webhooks/approval/{job_id}", json=body)
        return response.status, await response.json()


async def moderated_job(orchestrator: OrchestratorEngine, http: aiohttp.ClientSession) -> str:
    """A job of the flow, waiting for the moderator."""
    async with serving(orchestrator, {"data_generation": data_generation}):
        job_id = await create_job(http, "jobs/moderation_flow", {"topic": "cats"})
        await wait_for_status(http, job_id, "waiting_for_human")
    return job_id


@pytest.mark.parametrize(
    ("decision", "state", "status", "history"),
    [
        (
            "approved",
            "finished",
            "finished",
            {"draft": "a post about cats", "published": "a post about cats"},
        ),
        # 1.0b13's rule: an end state not named "finished" fails the job.
        ("rejected", "rejected_by_moderator", "failed", {"draft": "a post about cats"}),
    ],
)
async def test_the_moderators_decision_picks_the_transition(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    decision: str,
    state: str,
    status: str,
    history: Params,
) -> None:
    orchestrator = await start_orchestrator([moderation_flow()])
    http = http_client(orchestrator)
    job_id = await moderated_job(orchestrator, http)

    assert await decide(orchestrator, job_id, {"decision": decision}) == (
        200,
        {"status": "approval_received", "job_id": job_id},
    )
    job = await wait_for_status(http, job_id, status)

    assert job["current_state"] == state
    assert job["state_history"] == history


async def test_a_decision_the_blueprint_does_not_offer_is_refused(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([moderation_flow()])
    http = http_client(orchestrator)
    job_id = await moderated_job(orchestrator, http)

    for body in ({"decision": "maybe"}, {"decision": ""}, {"verdict": "approved"}):
        code, answer = await decide(orchestrator, job_id, body)
        assert code == 400, answer
    code, answer = await decide(orchestrator, job_id, {"decision": "maybe"})
    assert "'approved'" in answer["error"]
    assert "'rejected'" in answer["error"]

    # Still waiting, and a valid decision still works.
    assert (await get_job(http, job_id))["status"] == "waiting_for_human"
    assert (await decide(orchestrator, job_id, {"decision": "approved"}))[0] == 200
    await wait_for_status(http, job_id, "finished")


async def test_only_the_first_decision_counts(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([moderation_flow()])
    http = http_client(orchestrator)
    job_id = await moderated_job(orchestrator, http)

    assert (await decide(orchestrator, job_id, {"decision": "rejected"}))[0] == 200
    code, answer = await decide(orchestrator, job_id, {"decision": "approved"})

    assert code == 409, answer
    job = await wait_for_status(http, job_id, "failed")  # its end state is not "finished"
    assert job["current_state"] == "rejected_by_moderator"


async def test_an_unknown_job_is_not_found(
    start_orchestrator: StartOrchestrator,
) -> None:
    orchestrator = await start_orchestrator([moderation_flow()])

    code, answer = await decide(orchestrator, "no-such-job", {"decision": "approved"})

    assert code == 404, answer


async def test_a_decision_for_a_cancelled_job_is_refused(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([moderation_flow()])
    http = http_client(orchestrator)
    job_id = await moderated_job(orchestrator, http)

    response = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert (await response.json()) == {"status": "cancellation_request_accepted"}
    code, answer = await decide(orchestrator, job_id, {"decision": "approved"})

    assert code == 409, answer
    job = await get_job(http, job_id)
    assert (job["status"], job["current_state"]) == ("cancelled", "awaiting_approval")
