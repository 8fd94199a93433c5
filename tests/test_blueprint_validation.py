"""Registration rejects a blueprint that cannot work, with a message naming
the blueprint, the state and the problem: no start state or several, a
literal transition to a state without handler, states nothing reaches. A
transition computed at run time never causes a false rejection."""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from avtomatika import ActionFactory, OrchestratorEngine, StateMachineBlueprint
from avtomatika.blueprint.loader import load_blueprints
from avtomatika.errors import BlueprintError, ConfigError
from tests.support import create_job, wait_for_status
from tests.support.blueprints import echo_blueprint, review_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator

Handler = Callable[..., Any]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "blueprints"


async def end() -> None:
    """An end state's handler."""


def blueprint_with_start(start: Handler, name: str = "lost") -> StateMachineBlueprint:
    """``start`` (the given handler) and two end states, ``done`` and ``hidden``."""
    bp = StateMachineBlueprint(name, api_endpoint=f"jobs/{name}", api_version="v1")
    bp.handler_for("start", is_start=True)(start)
    bp.handler_for("done", is_end=True, outcome="finished")(end)
    bp.handler_for("hidden", is_end=True, outcome="finished")(end)
    return bp


@pytest.fixture
async def orchestrator(start_orchestrator: StartOrchestrator) -> OrchestratorEngine:
    return await start_orchestrator()


# -- dangling targets: every way of naming a state --


async def transition_by_position(actions: ActionFactory) -> None:
    actions.transition_to("nowhere")


async def transition_by_keyword(actions: ActionFactory) -> None:
    actions.transition_to(state="nowhere")


async def dispatch_by_keyword(actions: ActionFactory) -> None:
    actions.dispatch_task("t", transitions={"success": "hidden", "failure": "nowhere"})


async def dispatch_by_position(actions: ActionFactory) -> None:
    actions.dispatch_task("t", {}, {"success": "nowhere"})


async def approval_by_position(actions: ActionFactory) -> None:
    actions.await_human_approval("slack", "ok?", {"approved": "hidden", "rejected": "nowhere"})


async def child_by_keyword(actions: ActionFactory) -> None:
    actions.run_blueprint("child", {}, transitions={"success": "nowhere"})


async def parallel_by_keyword(actions: ActionFactory) -> None:
    actions.dispatch_parallel([], aggregate_into="nowhere")


async def parallel_by_position(actions: ActionFactory) -> None:
    actions.dispatch_parallel([{"type": "t"}], "nowhere")


async def computed_and_dangling(target: str, actions: ActionFactory) -> None:
    # One computed target does not hide a literal dangling one.
    actions.dispatch_task("t", transitions={"success": target, "failure": "nowhere"})


@pytest.mark.parametrize(
    "start",
    [
        transition_by_position,
        transition_by_keyword,
        dispatch_by_keyword,
        dispatch_by_position,
        approval_by_position,
        child_by_keyword,
        parallel_by_keyword,
        parallel_by_position,
        computed_and_dangling,
    ],
)
async def test_a_literal_transition_to_a_state_without_handler_is_rejected(
    orchestrator: OrchestratorEngine, start: Handler
) -> None:
    with pytest.raises(BlueprintError) as caught:
        orchestrator.register_blueprint(blueprint_with_start(start))

    assert caught.value.message == (
        "blueprint 'lost': state 'start' leads to 'nowhere', which has no handler"
    )
    assert "lost" not in orchestrator.blueprints


async def end_transition(actions: ActionFactory) -> None:
    actions.transition_to("done")


class Router:
    async def start(self, actions: ActionFactory) -> None:
        actions.transition_to("nowhere")


def logged(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await handler(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize(
    "start",
    [
        lambda actions: actions.transition_to("nowhere"),
        logged(transition_by_position),
        Router().start,
        functools.partial(transition_by_keyword),
    ],
    ids=["lambda", "wrapped", "method", "partial"],
)
async def test_handlers_of_any_shape_are_read(
    orchestrator: OrchestratorEngine, start: Handler
) -> None:
    with pytest.raises(BlueprintError, match="state 'start' leads to 'nowhere'"):
        orchestrator.register_blueprint(blueprint_with_start(start))


async def test_a_conditional_handler_s_dangling_target_is_rejected(
    orchestrator: OrchestratorEngine,
) -> None:
    bp = blueprint_with_start(end_transition)

    @bp.handler_for("start").when("context.initial_data.fast == True")
    async def fast(actions: ActionFactory) -> None:
        actions.transition_to("shortcut")

    with pytest.raises(BlueprintError, match="state 'start' leads to 'shortcut', which has no"):
        orchestrator.register_blueprint(bp)


async def test_dispatch_parallel_into_a_state_without_aggregator_is_rejected(
    orchestrator: OrchestratorEngine,
) -> None:
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_parallel([{"type": "t"}], aggregate_into="done")

    with pytest.raises(BlueprintError) as caught:
        orchestrator.register_blueprint(blueprint_with_start(start))

    assert "state 'start' aggregates into 'done', which has no aggregator" in caught.value.message


async def test_a_status_named_aggregate_is_an_ordinary_transition(
    orchestrator: OrchestratorEngine,
) -> None:
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task("t", transitions={"aggregate": "done", "success": "hidden"})

    orchestrator.register_blueprint(blueprint_with_start(start))


# -- unreachable states --


async def test_states_the_start_state_cannot_reach_are_rejected(
    orchestrator: OrchestratorEngine,
) -> None:
    bp = blueprint_with_start(end_transition, name="islands")

    @bp.handler_for("lagoon")
    async def lagoon(actions: ActionFactory) -> None:
        actions.transition_to("hidden")

    with pytest.raises(BlueprintError) as caught:
        orchestrator.register_blueprint(bp)

    assert caught.value.message.startswith(
        "blueprint 'islands' has unreachable states: 'hidden', 'lagoon'"
    )


async def test_an_unreachable_handler_with_computed_targets_does_not_excuse_itself(
    orchestrator: OrchestratorEngine,
) -> None:
    bp = blueprint_with_start(end_transition)

    @bp.handler_for("orphan")
    async def orphan(target: str, actions: ActionFactory) -> None:
        actions.transition_to(target)

    with pytest.raises(BlueprintError, match="unreachable states: 'hidden', 'orphan'"):
        orchestrator.register_blueprint(bp)


# -- computed targets: never a false rejection --

ROUTES = {"success": "hidden"}
OPTIONS: dict[str, Any] = {"transitions": ROUTES}


async def computed_variable(target: str, actions: ActionFactory) -> None:
    actions.transition_to(target)


async def computed_f_string(actions: ActionFactory, prefix: str = "") -> None:
    actions.transition_to(f"{prefix}hidden")


async def transitions_built_elsewhere(actions: ActionFactory) -> None:
    actions.dispatch_task("t", transitions=ROUTES)


async def transitions_with_a_computed_value(target: str, actions: ActionFactory) -> None:
    actions.await_human_approval("slack", "ok?", {"approved": "done", "rejected": target})


async def transitions_spread(actions: ActionFactory) -> None:
    actions.run_blueprint("child", {}, transitions={"success": "done", **ROUTES})


async def arguments_spread(actions: ActionFactory) -> None:
    actions.run_blueprint("child", {}, **OPTIONS)


async def aliased_method(actions: ActionFactory) -> None:
    go = actions.transition_to
    go("hidden")


def route(actions: ActionFactory) -> None:
    actions.transition_to("hidden")


async def helper_decides(actions: ActionFactory) -> None:
    route(actions)


def bare_decorator(handler: Handler) -> Handler:
    # No functools.wraps: the handler's own code is out of sight.
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await handler(*args, **kwargs)

    return wrapper


@bare_decorator
async def hidden_behind_a_wrapper(actions: ActionFactory) -> None:
    actions.transition_to("hidden")


# Two lambdas on one line: which one is the handler cannot be told apart.
one_of_two_lambdas = (lambda actions: actions.transition_to("hidden"), lambda actions: None)[0]


def without_source() -> Handler:
    namespace: dict[str, Any] = {}
    exec("async def start(actions):\n    actions.transition_to('hidden')\n", namespace)
    handler: Handler = namespace["start"]
    return handler


@pytest.mark.parametrize(
    "start",
    [
        computed_variable,
        computed_f_string,
        transitions_built_elsewhere,
        transitions_with_a_computed_value,
        transitions_spread,
        arguments_spread,
        aliased_method,
        helper_decides,
        hidden_behind_a_wrapper,
        one_of_two_lambdas,
        without_source(),
    ],
    ids=lambda handler: handler.__name__,
)
async def test_a_state_reached_only_by_a_computed_transition_is_accepted(
    orchestrator: OrchestratorEngine, start: Handler
) -> None:
    orchestrator.register_blueprint(blueprint_with_start(start))

    assert "lost" in orchestrator.blueprints


async def test_a_computed_transition_is_followed_at_run_time(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([blueprint_with_start(computed_variable)])
    http = http_client(orchestrator)

    job_id = await create_job(http, "jobs/lost", {"target": "hidden"})
    job = await wait_for_status(http, job_id, "finished")

    assert job["current_state"] == "hidden"


# -- start states, names, handlers --


async def test_a_blueprint_without_a_start_state_is_rejected(
    orchestrator: OrchestratorEngine,
) -> None:
    bp = StateMachineBlueprint("headless")
    bp.handler_for("done", is_end=True, outcome="finished")(end)

    with pytest.raises(BlueprintError) as caught:
        orchestrator.register_blueprint(bp)

    assert caught.value.message == "blueprint 'headless' needs exactly one start state, found none"


async def test_a_blueprint_with_two_start_states_is_rejected(
    orchestrator: OrchestratorEngine,
) -> None:
    bp = StateMachineBlueprint("hydra")
    bp.handler_for("a", is_start=True)(end_transition)
    bp.handler_for("b", is_start=True)(end_transition)
    bp.handler_for("done", is_end=True, outcome="finished")(end)

    with pytest.raises(BlueprintError) as caught:
        orchestrator.register_blueprint(bp)

    assert caught.value.message == "blueprint 'hydra' needs exactly one start state, found 'a', 'b'"


async def test_two_blueprints_with_one_name_are_rejected(
    orchestrator: OrchestratorEngine,
) -> None:
    orchestrator.register_blueprint(blueprint_with_start(computed_variable, name="twin"))

    with pytest.raises(BlueprintError, match="a blueprint named 'twin' is already registered"):
        orchestrator.register_blueprint(blueprint_with_start(computed_variable, name="twin"))


def test_a_second_default_handler_for_a_state_is_rejected_where_it_is_declared() -> None:
    bp = blueprint_with_start(end_transition, name="doubled")

    with pytest.raises(BlueprintError) as caught:
        bp.handler_for("start")(transition_by_position)

    assert "blueprint 'doubled': state 'start' already has a default handler" in str(caught.value)


# -- valid blueprints --


async def test_a_blueprint_using_every_kind_of_action_is_accepted(
    orchestrator: OrchestratorEngine,
) -> None:
    bp = review_blueprint()

    orchestrator.register_blueprint(bp)

    assert orchestrator.blueprints["review"] is bp


async def test_the_example_and_shared_blueprints_are_accepted(
    orchestrator: OrchestratorEngine,
) -> None:
    load_blueprints(EXAMPLES, orchestrator.register_blueprint)
    shared = [echo_blueprint("shared"), echo_blueprint("other", transitions={"failure": "again"})]

    for bp in shared:
        orchestrator.register_blueprint(bp)

    assert {"echo", "shared", "other"} <= set(orchestrator.blueprints)


# -- BLUEPRINTS_DIR: the same checks at start-up --

VALID_FILE = """
from avtomatika import StateMachineBlueprint

orders = StateMachineBlueprint("orders", api_endpoint="jobs/orders", api_version="v1")
child = StateMachineBlueprint("check")


@orders.handler_for("start", is_start=True)
async def start(actions):
    actions.transition_to("route")


@orders.handler_for("route").when("context.initial_data.size > 10")
async def big(actions):
    actions.dispatch_parallel(
        [{"type": "pack"}, {"type": "pack"}], aggregate_into="packed"
    )


@orders.handler_for("route")
async def small(actions):
    actions.dispatch_task("pack", transitions={"success": "approve", "too_heavy": "check"})


@orders.aggregator_for("packed")
async def packed(aggregation_results, actions):
    actions.transition_to("approve")


@orders.handler_for("check")
async def check(actions):
    actions.run_blueprint("check", {}, transitions={"success": "approve", "failure": "refused"})


@orders.handler_for("approve")
async def approve(actions):
    actions.await_human_approval("email", "ship?", {"yes": "shipped", "no": "refused"})


@orders.handler_for("shipped", is_end=True, outcome="finished")
@orders.handler_for("refused", is_end=True, outcome="finished")
async def finished():
    pass


@child.handler_for("start", is_start=True)
async def child_start(actions):
    actions.transition_to("done")


@child.handler_for("done", is_end=True, outcome="finished")
async def child_done():
    pass
"""


async def test_a_valid_blueprints_dir_loads(
    start_orchestrator: StartOrchestrator, tmp_path: Path
) -> None:
    (tmp_path / "orders.py").write_text(VALID_FILE)

    orchestrator = await start_orchestrator(blueprints_dir=tmp_path)

    assert set(orchestrator.blueprints) == {"orders", "check"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            """
            @bp.handler_for("start", is_start=True)
            async def start(actions):
                actions.dispatch_task("t", transitions={"success": "done", "failure": "gone"})
            """,
            "blueprint 'from_dir': state 'start' leads to 'gone', which has no handler",
        ),
        (
            """
            @bp.handler_for("start", is_start=True)
            async def start(actions):
                actions.transition_to("done")

            @bp.handler_for("limbo")
            async def limbo(actions):
                actions.transition_to("done")
            """,
            "blueprint 'from_dir' has unreachable states: 'limbo'",
        ),
    ],
    ids=["dangling", "unreachable"],
)
async def test_an_invalid_blueprint_in_blueprints_dir_stops_start_up(
    start_orchestrator: StartOrchestrator, tmp_path: Path, source: str, message: str
) -> None:
    header = (
        'from avtomatika import StateMachineBlueprint\nbp = StateMachineBlueprint("from_dir")\n'
    )
    footer = (
        '@bp.handler_for("done", is_end=True, outcome="finished")\nasync def done():\n    pass\n'
    )
    (tmp_path / "bad.py").write_text(header + textwrap.dedent(source) + footer)

    with pytest.raises(ConfigError) as caught:
        await start_orchestrator(blueprints_dir=tmp_path)

    # The error names the file first, then what is wrong with the blueprint.
    prefix = f"blueprint file {tmp_path / 'bad.py'}: "
    assert caught.value.message.startswith(prefix)
    assert caught.value.message.removeprefix(prefix).startswith(message)
