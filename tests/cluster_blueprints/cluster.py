"""Blueprints the cluster tests load from ``BLUEPRINTS_DIR`` into every
``avtomatika serve`` process (``tests/test_cluster.py``)."""

from typing import Any

from avtomatika import ActionFactory, StateMachineBlueprint

echo = StateMachineBlueprint("echo", api_endpoint="/jobs/echo", api_version="v1")


@echo.handler_for("start", is_start=True)
async def echo_start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
    actions.dispatch_task("echo", params=initial_data, transitions={"success": "done"})


@echo.handler_for("done", is_end=True, outcome="finished")
async def echo_done() -> None:
    return None


approval = StateMachineBlueprint("approval", api_endpoint="/jobs/approval", api_version="v1")


@approval.handler_for("start", is_start=True)
async def approval_start(actions: ActionFactory) -> None:
    actions.await_human_approval(
        integration="test",
        message="approve me",
        transitions={"approved": "approved", "rejected": "rejected"},
    )


@approval.handler_for("approved", is_end=True, outcome="finished")
@approval.handler_for("rejected", is_end=True, outcome="finished")
async def approval_done() -> None:
    return None


hold = StateMachineBlueprint("hold", api_endpoint="/jobs/hold", api_version="v1")
"""A task that runs until it is cancelled."""


@hold.handler_for("start", is_start=True)
async def hold_start(actions: ActionFactory) -> None:
    actions.dispatch_task("hold", params={}, transitions={"success": "done"})


@hold.handler_for("done", is_end=True, outcome="finished")
async def hold_done() -> None:
    return None
