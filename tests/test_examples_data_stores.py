"""Data stores from the 1.0b13 docs: cookbook recipe 9's request counter
(``add_data_store``, shared by every job of the blueprint), the README's
``data_stores={"cache": client}`` with a client object used as it is, and an
``AsyncDictStore`` instance, through REST and an SDK worker."""

from __future__ import annotations

from typing import Any

import pytest

from avtomatika import ActionFactory, AsyncDictStore, JobContext, StateMachineBlueprint
from avtomatika.worker import TaskContext
from tests.support import create_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.sdk import Params, serving

pytestmark = pytest.mark.both_stores


def analytics_flow() -> StateMachineBlueprint:
    """Cookbook recipe 9."""
    analytics_bp = StateMachineBlueprint(
        name="analytics_flow", api_version="v1", api_endpoint="jobs/analytics"
    )
    analytics_bp.add_data_store("request_counter", {"total_requests": 0})

    @analytics_bp.handler_for("start", is_start=True)
    async def count_request(context: JobContext, actions: ActionFactory) -> None:
        current_count = await context.data_stores.request_counter.get("total_requests")
        new_count = current_count + 1
        await context.data_stores.request_counter.set("total_requests", new_count)
        context.state_history["request_number"] = new_count
        actions.transition_to("finished")

    @analytics_bp.handler_for("finished", is_end=True)
    async def show_result(context: JobContext, actions: ActionFactory) -> None:
        return None

    return analytics_bp


async def test_the_counter_is_shared_by_every_job_of_the_blueprint(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([analytics_flow()])
    http = http_client(orchestrator)

    numbers = []
    for _ in range(3):
        job_id = await create_job(http, "jobs/analytics")
        job = await wait_for_status(http, job_id, "finished")
        numbers.append(job["state_history"]["request_number"])

    assert numbers == [1, 2, 3]


class UserCache:
    """Stands in for the README's ``redis.asyncio.Redis`` client: any object
    is handed to handlers as it is, not copied or wrapped."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    async def get(self, key: str) -> str | None:
        self.reads.append(key)
        return {"user:123": "Ada"}.get(key)


def greeting_blueprint(cache: UserCache) -> StateMachineBlueprint:
    bp = StateMachineBlueprint(
        "blueprint_with_datastore",
        "jobs/greet",
        "v1",
        data_stores={"cache": cache, "templates": AsyncDictStore({"hello": "Hello, {}!"})},
    )

    @bp.handler_for("get_from_cache", is_start=True)
    async def cache_handler(data_stores: Any, user_id: int, actions: ActionFactory) -> None:
        user_data = await data_stores.cache.get(f"user:{user_id}")
        template = await data_stores.templates.get("hello")
        actions.dispatch_task(
            "send_greeting",
            params={"text": template.format(user_data)},
            transitions={"success": "sent"},
        )

    @bp.handler_for("sent", is_end=True)
    async def sent(data_stores: Any, delivered: str) -> None:
        await data_stores.templates.set("last_delivered", delivered)

    return bp


async def test_a_client_object_and_an_async_dict_store_reach_the_handlers(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    cache = UserCache()
    bp = greeting_blueprint(cache)
    orchestrator = await start_orchestrator([bp])
    http = http_client(orchestrator)

    async def send_greeting(params: Params, task: TaskContext) -> Params:
        return {"delivered": params["text"]}

    async with serving(orchestrator, {"send_greeting": send_greeting}):
        job_id = await create_job(http, "jobs/greet", {"user_id": 123})
        # Its end state is "sent", not "finished": 1.0b13 fails the job there.
        job = await wait_for_status(http, job_id, "failed")

    assert job["state_history"] == {"delivered": "Hello, Ada!"}
    assert cache.reads == ["user:123"]
    assert bp.data_stores["cache"] is cache
    assert await bp.data_stores["templates"].get("last_delivered") == "Hello, Ada!"
