"""The README's dependency injection example: a worker's result data is
merged into ``state_history``, and the next handler asks for its keys by name
(``output_path``, ``duration``), or reads them from ``context`` in the old
style. Both run through REST and an SDK worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from avtomatika import ActionFactory, JobContext, StateMachineBlueprint
from avtomatika.blueprint.state_machine import Handler
from avtomatika.worker import TaskContext
from tests.support import create_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores


Published = list[tuple[str, Any, Any]]


def new_style(published: Published) -> Handler:
    """README "Example: Dependency Injection"."""

    async def publish_handler(
        job_id: str, output_path: str, duration: int, actions: ActionFactory
    ) -> None:
        published.append((job_id, output_path, duration))
        actions.transition_to("complete")

    return publish_handler


def old_style(published: Published) -> Handler:
    """README "Backward Compatibility: The context Object"."""

    async def publish_handler_old_style(context: JobContext) -> None:
        output_path = context.state_history.get("output_path")
        duration = context.state_history.get("duration")
        published.append((context.job_id, output_path, duration))
        context.actions.transition_to("complete")

    return publish_handler_old_style


def video_blueprint(publish: Handler) -> StateMachineBlueprint:
    bp = StateMachineBlueprint("video_pipeline", api_endpoint="/jobs/video", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def transcode(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        actions.dispatch_task(
            task_type="video_transcoding",
            params={"input_path": initial_data.get("path")},
            transitions={"success": "publish_video"},
        )

    bp.handler_for("publish_video")(publish)

    @bp.handler_for("complete", is_end=True)
    async def complete() -> None:
        return None

    return bp


@pytest.mark.parametrize("style", [new_style, old_style], ids=["by-name", "context"])
async def test_worker_data_reaches_the_next_handler(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    style: Callable[[Published], Handler],
) -> None:
    published: Published = []
    orchestrator = await start_orchestrator([video_blueprint(style(published))])
    http = http_client(orchestrator)

    async def video_transcoding(params: Params, task: TaskContext) -> Params:
        assert params == {"input_path": "/raw/123.mov"}
        return {"output_path": "/videos/123.mp4", "duration": 95}

    async with serving(orchestrator, {"video_transcoding": video_transcoding}):
        job_id = await create_job(http, "jobs/video", {"path": "/raw/123.mov"})
        # The end state is "complete", not "finished": 1.0b13 fails the job there.
        job = await wait_for_status(http, job_id, "failed")

    assert published == [(job_id, "/videos/123.mp4", 95)]
    assert job["current_state"] == "complete"
    assert job["state_history"] == {"output_path": "/videos/123.mp4", "duration": 95}
