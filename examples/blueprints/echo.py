"""An example blueprint: ask an ``echo`` worker to echo the initial data, then
finish. Create a job with::

    curl -X POST localhost:8080/api/v1/jobs/echo -H 'X-Client-Token: ...' \
         -H 'Content-Type: application/json' -d '{"initial_data": {"text": "hi"}}'
"""

from typing import Any

from avtomatika import ActionFactory, StateMachineBlueprint

echo = StateMachineBlueprint("echo", api_endpoint="/jobs/echo", api_version="v1")


@echo.handler_for("start", is_start=True)
async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
    actions.dispatch_task(
        task_type="echo",
        params=initial_data,
        transitions={"success": "done"},
    )


@echo.handler_for("done", is_end=True, outcome="finished")
async def done(state_history: dict[str, Any]) -> None:
    """The worker's output is in state_history; nothing more to do."""
