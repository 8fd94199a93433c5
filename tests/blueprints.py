"""Small blueprints shared by several tests."""

from __future__ import annotations

from typing import Any

from avtomatika import ActionFactory, StateMachineBlueprint


def echo_blueprint(name: str = "echo", **dispatch: Any) -> StateMachineBlueprint:
    """start -> dispatch an ``echo`` task -> done (end)."""
    bp = StateMachineBlueprint(name, api_endpoint=f"/jobs/{name}", api_version="v1")
    transitions = dispatch.pop("transitions", {"success": "done"})

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        actions.dispatch_task("echo", params=initial_data, transitions=transitions, **dispatch)

    @bp.handler_for("done", is_end=True)
    async def done() -> None:
        return None

    for target in set(transitions.values()) - {"done"}:
        bp.handler_for(target, is_end=True)(done)
    return bp
