"""Small blueprints shared by several tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from avtomatika import ActionFactory, JobContext, StateMachineBlueprint


def echo_blueprint(
    name: str = "echo",
    input_schema: dict[str, Any] | None = None,
    task_type: str = "echo",
    **dispatch: Any,
) -> StateMachineBlueprint:
    """start -> dispatch a ``task_type`` task with the initial data -> done
    (end); ``input_schema`` is the blueprint's, if given."""
    bp = StateMachineBlueprint(
        name, api_endpoint=f"/jobs/{name}", api_version="v1", input_schema=input_schema
    )
    transitions = dispatch.pop("transitions", {"success": "done"})

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        actions.dispatch_task(task_type, params=initial_data, transitions=transitions, **dispatch)

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    for target in set(transitions.values()) - {"done"}:
        bp.handler_for(target, is_end=True, outcome="finished")(done)
    return bp


def fan_out_blueprint(
    branches: int, task_type: str = "work", aggregated: dict[str, int] | None = None
) -> StateMachineBlueprint:
    """``fan`` (``jobs/fan``): start -> ``branches`` parallel ``task_type``
    tasks with params ``{"n": n}`` -> an aggregator that keeps the sorted
    ``n`` of the results in ``state_history["ns"]`` (counting its runs per
    job in ``aggregated``) -> done (end)."""
    bp = StateMachineBlueprint("fan", api_endpoint="jobs/fan", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        tasks = [{"type": task_type, "params": {"n": n}} for n in range(branches)]
        actions.dispatch_parallel(tasks=tasks, aggregate_into="join")

    @bp.aggregator_for("join")
    async def join(job_id: str, aggregation_results: dict[str, Any],
                   state_history: dict[str, Any], actions: ActionFactory) -> None:  # fmt: skip
        if aggregated is not None:
            aggregated[job_id] = aggregated.get(job_id, 0) + 1
        state_history["ns"] = sorted(r["data"]["n"] for r in aggregation_results.values())
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


def instant_blueprint() -> StateMachineBlueprint:
    """start -> done, no worker involved."""
    bp = StateMachineBlueprint("instant", api_endpoint="/jobs/instant", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


def review_blueprint(name: str = "review") -> StateMachineBlueprint:
    """One handler per kind of action, and a conditional state whose default
    handler is declared after its ``.when`` handler."""
    bp = StateMachineBlueprint(name, api_endpoint=f"jobs/{name}", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("route")

    @bp.handler_for("route").when("context.initial_data.kind == 'urgent'")
    async def urgent(actions: ActionFactory) -> None:
        actions.dispatch_parallel(
            [{"type": "ocr", "transitions": {"success": "ignored-by-parallel"}}],
            aggregate_into="collect",
        )

    @bp.handler_for("route")
    async def normal(actions: ActionFactory) -> None:
        actions.dispatch_task(
            "scan",
            transitions={"success": "approve", "needs_review": "approve", "failure": "failed"},
        )

    @bp.aggregator_for("collect")
    async def collect(actions: ActionFactory) -> None:
        actions.run_blueprint("child", {}, {"success": "approve", "failure": "failed"})

    @bp.handler_for("approve")
    async def approve(context: JobContext) -> None:
        context.actions.await_human_approval(
            "slack", "ok?", transitions={"approved": "done", "rejected": "failed"}
        )

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    bp.handler_for("failed", is_end=True)(done)
    return bp


def approval_blueprint(
    name: str = "review",
    approved: str = "finished",
    rejected: str = "rejected",
    *,
    timeout: float | None = None,
    expired: str = "expired",
) -> StateMachineBlueprint:
    """``jobs/<name>``: ``ask`` waits for a human; each decision leads to an
    end state of its own, both finishing the job. With ``timeout`` (seconds)
    the wait expires into ``expired``, an end state that fails the job."""
    bp = StateMachineBlueprint(name, api_version="v1", api_endpoint=f"jobs/{name}")
    transitions = {"approved": approved, "rejected": rejected}
    if timeout is not None:
        transitions["timeout"] = expired

    @bp.handler_for("ask", is_start=True)
    async def ask(actions: ActionFactory) -> None:
        actions.await_human_approval(
            integration="console", message="ship it?", transitions=transitions, timeout=timeout
        )

    @bp.handler_for(approved, is_end=True, outcome="finished")
    @bp.handler_for(rejected, is_end=True, outcome="finished")
    async def done() -> None:
        return None

    if timeout is not None:
        bp.handler_for(expired, is_end=True, outcome="failed")(done)
    return bp


def ordered_blueprint(order: list[str]) -> StateMachineBlueprint:
    """``ordered``: start -> a or b -> z (end), its states declared in
    ``order`` (a drawing must not depend on it)."""
    bp = StateMachineBlueprint("ordered")

    async def first(actions: ActionFactory) -> None:
        actions.dispatch_task("t", transitions={"success": "b", "failure": "a"})

    async def middle(actions: ActionFactory) -> None:
        actions.transition_to("z")

    async def last() -> None:
        return None

    handlers: dict[str, tuple[Callable[..., Awaitable[None]], bool, bool]] = {
        "start": (first, True, False),
        "a": (middle, False, False),
        "b": (middle, False, False),
        "z": (last, False, True),
    }
    for state in order:
        handler, is_start, is_end = handlers[state]
        bp.handler_for(state, is_start=is_start, is_end=is_end)(handler)
    return bp
