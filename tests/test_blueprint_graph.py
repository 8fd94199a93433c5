"""``GET /api/v1/blueprints/{name}/graph``: the state machine as Graphviz DOT,
read from the handlers' code: every state a node, the start and end states
marked, every edge labelled with the outcome that takes it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.blueprint import graph as blueprint_graph
from avtomatika.blueprint.graph import to_dot
from tests.support.blueprints import ordered_blueprint, review_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator

# -- a small DOT reader: enough to hold the output to the DOT grammar's shape
# (one digraph, balanced braces, terminated statements) and to look nodes and
# edges up by name.

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:\\.|[^"\\])*")|(?P<arrow>->)|(?P<punct>[{}\[\];,=])'
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*|-?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)))"
)


@dataclass
class Dot:
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def edge_labels(self, source: str, target: str) -> set[str]:
        return {
            attributes.get("label", "")
            for s, t, attributes in self.edges
            if (s, t) == (source, target)
        }


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        assert match is not None, f"not DOT at {text[position:][:30]!r}"
        assert match.lastgroup is not None
        tokens.append(match[match.lastgroup])
        position = match.end()
    return tokens


def _unquote(token: str) -> str:
    if token.startswith('"'):
        return re.sub(r'\\(["\\])', r"\1", token[1:-1])
    return token


def parse_dot(text: str) -> Dot:
    tokens = _tokens(text)
    assert tokens[0] == "digraph", tokens[:3]
    assert tokens[2] == "{"
    assert tokens[-1] == "}"
    assert tokens.count("digraph") == 1
    dot = Dot(_unquote(tokens[1]))
    position = 3

    def attribute_list() -> dict[str, str]:
        nonlocal position
        attributes: dict[str, str] = {}
        if tokens[position] != "[":
            return attributes
        position += 1
        while tokens[position] != "]":
            key, equals, value = tokens[position : position + 3]
            assert equals == "=", tokens[position : position + 3]
            attributes[key] = _unquote(value)
            position += 3
            if tokens[position] == ",":
                position += 1
        position += 1
        return attributes

    while position < len(tokens) - 1:
        first = tokens[position]
        assert first not in "{}[];,=", f"unexpected {first!r}"
        position += 1
        if tokens[position] == "->":
            target = _unquote(tokens[position + 1])
            position += 2
            dot.edges.append((_unquote(first), target, attribute_list()))
        elif tokens[position] == "=":
            dot.attributes[first] = _unquote(tokens[position + 1])
            position += 2
        elif first not in ("node", "edge", "graph"):
            dot.nodes[_unquote(first)] = attribute_list()
        else:
            attribute_list()
        assert tokens[position] == ";", f"statement not terminated at {tokens[position]!r}"
        position += 1
    return dot


async def get_graph(http: aiohttp.ClientSession, name: str) -> Dot:
    response = await http.get(f"/api/v1/blueprints/{name}/graph")
    text = await response.text()
    assert response.status == 200, text
    assert response.content_type == "text/vnd.graphviz"
    return parse_dot(text)


def entry_points(dot: Dot) -> dict[str, str]:
    """Point nodes -> the state their arrow enters."""
    points = {name for name, attributes in dot.nodes.items() if attributes.get("shape") == "point"}
    return {source: target for source, target, _ in dot.edges if source in points}


async def test_the_graph_draws_every_state_marks_start_and_end_and_labels_edges(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([review_blueprint()])
    dot = await get_graph(http_client(orchestrator), "review")

    assert dot.name == "review"
    states = {"start", "route", "collect", "approve", "done", "failed"}
    assert set(dot.nodes) - set(entry_points(dot)) == states
    assert list(entry_points(dot).values()) == ["start"]
    assert "bold" in dot.nodes["start"]["style"]
    assert dot.nodes["done"]["peripheries"] == dot.nodes["failed"]["peripheries"] == "2"
    assert "peripheries" not in dot.nodes["approve"]
    assert dot.nodes["collect"]["shape"] == "hexagon"

    assert dot.edge_labels("start", "route") == {""}
    assert dot.edge_labels("route", "collect") == {"aggregate, when initial_data.kind == 'urgent'"}
    assert dot.edge_labels("route", "approve") == {"success", "needs_review"}
    assert dot.edge_labels("collect", "approve") == {"success"}
    assert dot.edge_labels("approve", "done") == {"approved"}
    assert dot.edge_labels("approve", "failed") == {"rejected"}
    # A branch's own transitions are not the parent's: no such node or edge.
    assert "ignored-by-parallel" not in dot.nodes


async def test_the_graph_endpoint_parses_no_source_per_request(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    orchestrator = await start_orchestrator([review_blueprint()])
    expected = await get_graph(http_client(orchestrator), "review")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a handler's source was read while serving")

    # The handlers were read when the blueprint was registered.
    monkeypatch.setattr(blueprint_graph, "_function_node", refuse)
    assert await get_graph(http_client(orchestrator), "review") == expected


async def test_the_graph_of_an_unknown_blueprint_is_404_json(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([review_blueprint()])
    response = await http_client(orchestrator).get("/api/v1/blueprints/nope/graph")

    assert response.status == 404
    assert "'nope'" in (await response.json())["error"]


async def test_the_graph_needs_a_client_token(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([review_blueprint()])
    response = await http_client(orchestrator, token=None).get("/api/v1/blueprints/review/graph")

    assert response.status == 401
    assert "error" in await response.json()


async def test_names_and_labels_with_quotes_dots_and_backslashes_survive_quoting(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("odd.names-1", api_endpoint="jobs/odd", api_version="v1")

    @bp.handler_for("step.one-a", is_start=True)
    async def one(actions: ActionFactory) -> None:
        actions.dispatch_task("t", transitions={'say "hi"': "end\\state", "digraph": "end\\state"})

    @bp.handler_for("step.one-a").when('context.initial_data.text == "a \\"b\\""')
    async def quoted(actions: ActionFactory) -> None:
        actions.transition_to("end\\state")

    @bp.handler_for("end\\state", is_end=True, outcome="finished")
    async def end() -> None:
        return None

    orchestrator = await start_orchestrator([bp])
    dot = await get_graph(http_client(orchestrator), "odd.names-1")

    assert dot.name == "odd.names-1"
    assert dot.nodes["end\\state"]["label"] == "end\\state"
    assert dot.edge_labels("step.one-a", "end\\state") == {
        'say "hi"',
        "digraph",
        'when initial_data.text == "a \\"b\\""',
    }


async def test_a_state_with_computed_transitions_is_drawn_dashed(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    bp = StateMachineBlueprint("computed", api_endpoint="jobs/computed", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        actions.transition_to(initial_data["next"])

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    orchestrator = await start_orchestrator([bp])
    dot = await get_graph(http_client(orchestrator), "computed")

    assert "dashed" in dot.nodes["start"]["style"]
    assert "style" not in dot.nodes["done"]
    assert [(s, t) for s, t, _ in dot.edges if s == "start"] == []


def test_the_text_does_not_depend_on_declaration_order() -> None:
    assert to_dot(ordered_blueprint(["start", "a", "b", "z"])) == to_dot(
        ordered_blueprint(["z", "b", "a", "start"])
    )
