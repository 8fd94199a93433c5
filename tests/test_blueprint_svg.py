"""``GET /api/v1/blueprints/{name}/graph?format=svg`` (and gRPC's
``GetBlueprintGraphRequest.format``): the state machine drawn as SVG, each
state a ``<g class="state" data-state>`` and each transition a
``<g class="transition" data-from data-to>``, the same edges as the DOT
text, laid out in columns by distance from the start state, every name
escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.blueprint.graph import read_graph
from avtomatika.blueprint.layout import lay_out
from avtomatika.blueprint.svg import to_svg
from tests.support.blueprints import ordered_blueprint, review_blueprint
from tests.support.client_api import ApiError, ConnectApi
from tests.support.orchestrator import StartOrchestrator

_SVG = "{http://www.w3.org/2000/svg}"


def groups(svg: ET.Element, kind: str) -> list[ET.Element]:
    return [g for g in svg.iter(f"{_SVG}g") if g.get("class") == kind]


def drawn_edges(svg: ET.Element) -> list[tuple[str | None, str | None, str | None]]:
    return sorted(
        (g.get("data-from"), g.get("data-to"), g.get("data-outcome"))
        for g in groups(svg, "transition")
    )


def box_x(svg: ET.Element, state: str) -> float:
    (group,) = [g for g in groups(svg, "state") if g.get("data-state") == state]
    rect = group.find(f"{_SVG}rect")
    assert rect is not None
    return float(rect.get("x", "nan"))


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_the_svg_draws_every_state_and_the_same_edges_as_the_dot(
    start_orchestrator: StartOrchestrator, connect_api: ConnectApi, transport: str
) -> None:
    blueprint = review_blueprint()
    orchestrator = await start_orchestrator([blueprint])
    api = connect_api(transport, orchestrator)

    svg = ET.fromstring(await api.graph("review", "svg"))

    assert svg.tag == f"{_SVG}svg"
    assert svg.get("data-blueprint") == "review"
    states = {g.get("data-state") for g in groups(svg, "state")}
    assert states == {"start", "route", "collect", "approve", "done", "failed"}
    expected = sorted((e.source, e.target, e.outcome) for e in read_graph(blueprint).edges)
    assert drawn_edges(svg) == expected
    starts = [g.get("data-state") for g in groups(svg, "state") if g.get("data-start")]
    assert starts == ["start"]
    ends = {g.get("data-state"): g.get("data-ends-as") for g in groups(svg, "state")}
    assert ends["done"] == "finished"
    assert ends["failed"] == "failed"
    assert ends["approve"] is None
    # Columns by distance from the start state: start, route, then the rest.
    assert box_x(svg, "start") < box_x(svg, "route") < box_x(svg, "approve")
    assert box_x(svg, "approve") < box_x(svg, "done")
    # The DOT text stays the default.
    assert (await api.graph("review")).startswith("digraph")
    assert (await api.graph("review", "dot")).startswith("digraph")


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_an_unknown_format_is_refused_naming_the_formats(
    start_orchestrator: StartOrchestrator, connect_api: ConnectApi, transport: str
) -> None:
    orchestrator = await start_orchestrator([review_blueprint()])
    api = connect_api(transport, orchestrator)

    with pytest.raises(ApiError) as refused:
        await api.graph("review", "png")
    assert refused.value.kind == "invalid_argument"
    assert "'png'" in refused.value.message
    assert "svg" in refused.value.message
    with pytest.raises(ApiError) as missing:
        await api.graph("nope", "svg")
    assert missing.value.kind == "not_found"


async def test_names_and_labels_are_text_never_markup(
    start_orchestrator: StartOrchestrator, connect_api: ConnectApi
) -> None:
    hostile = '<script>alert("x")</script>'
    image = "<img src=x onerror=alert(1)>&amp;'"
    # Blueprint names are restricted to [A-Za-z0-9_.-]; state names and
    # outcomes are any text.
    bp = StateMachineBlueprint("hostile", api_endpoint="jobs/hostile", api_version="v1")

    @bp.handler_for(hostile, is_start=True)
    async def start(actions: ActionFactory) -> None:
        # A literal dict: the graph reads transitions from the source.
        actions.dispatch_task(
            "t",
            transitions={"<img src=x onerror=alert(1)>&amp;'": "line\nbreak", "ok": "line\nbreak"},
        )

    @bp.handler_for("line\nbreak", is_end=True, outcome="finished")
    async def end() -> None:
        return None

    orchestrator = await start_orchestrator([bp])
    text = await connect_api("rest", orchestrator).graph(bp.name, "svg")
    svg = ET.fromstring(text)

    # Nothing but the drawing's own elements: no script, no img.
    tags = {element.tag.removeprefix(_SVG) for element in svg.iter()}
    assert tags <= {"svg", "title", "g", "circle", "path", "polygon", "rect", "text"}
    assert "<script" not in text
    assert "<img" not in text
    assert {g.get("data-state") for g in groups(svg, "state")} == {hostile, "line\nbreak"}
    assert drawn_edges(svg) == [(hostile, "line\nbreak", image), (hostile, "line\nbreak", "ok")]
    labels = {t.text for g in groups(svg, "transition") for t in g.iter(f"{_SVG}text")}
    assert labels == {image, "ok"}
    assert svg.findtext(f"{_SVG}title") == "hostile"


def test_a_target_without_handler_is_drawn_and_marked() -> None:
    # What registration refuses is still drawable: the drawing is of the
    # handlers' code as it is.
    bp = StateMachineBlueprint("broken")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("nowhere")

    svg = ET.fromstring(to_svg(bp))

    missing = [g for g in groups(svg, "state") if g.get("data-missing")]
    assert [g.get("data-state") for g in missing] == ["nowhere"]
    assert drawn_edges(svg) == [("start", "nowhere", "")]


def test_the_drawing_does_not_depend_on_declaration_order() -> None:
    assert to_svg(ordered_blueprint(["start", "a", "b", "z"])) == to_svg(
        ordered_blueprint(["z", "b", "a", "start"])
    )


def test_the_order_within_a_column_uncrosses_edges() -> None:
    # Declared order would put a1 beside b2 and a2 beside b1: two crossing
    # edges that swapping one column undoes.
    edges = [("s", "a1"), ("s", "a2"), ("a1", "b1"), ("a2", "b2")]
    layout = lay_out(["s", "a1", "a2", "b2", "b1"], "s", edges, lambda _: 80.0)

    boxes = layout.boxes
    assert [boxes[n].rank for n in ("s", "a1", "a2", "b1", "b2")] == [0, 1, 1, 2, 2]
    above = boxes["a1"].y < boxes["a2"].y
    assert above == (boxes["b1"].y < boxes["b2"].y)
    left, top, width, height = layout.bounds
    for box in boxes.values():
        assert left <= box.x <= box.x + box.width <= left + width
        assert top <= box.y <= box.y + box.height <= top + height


def test_every_curve_and_box_stays_inside_the_drawing() -> None:
    # Forward, back, within a column, to itself, and two in parallel.
    edges = [("s", "a"), ("s", "b"), ("a", "b"), ("b", "s"), ("a", "a"), ("a", "c"), ("a", "c")]
    layout = lay_out(["s", "a", "b", "c"], "s", edges, lambda name: 60.0 + 10 * len(name))

    assert len(layout.curves) == len(edges)
    left, top, width, height = layout.bounds
    for curve in layout.curves:
        for x, y in (curve.start, curve.control1, curve.control2, curve.end, *curve.arrowhead):
            assert left <= x <= left + width
            assert top <= y <= top + height
    # The two parallel curves are apart, so are their labels.
    first, second = [c for c in layout.curves if (c.source, c.target) == ("a", "c")]
    assert first.label_at != second.label_at


def test_parallel_transitions_are_apart_and_their_labels_do_not_meet() -> None:
    # Two outcomes leading to the same state (a conditional edge and the
    # default one draw the same way): two curves, two labels, none on top of
    # the other, and a label too long to show whole keeps it as a tooltip.
    long = "needs_a_second_look_by_someone_from_the_legal_team"
    bp = StateMachineBlueprint("parallel")

    @bp.handler_for("route", is_start=True)
    async def route(actions: ActionFactory) -> None:
        # A literal dict: the graph reads transitions from the source.
        actions.dispatch_task(
            "t",
            transitions={
                "success": "transcode",
                "needs_a_second_look_by_someone_from_the_legal_team": "transcode",
            },
        )

    @bp.handler_for("transcode", is_end=True)
    async def transcode() -> None:
        return None

    svg = ET.fromstring(to_svg(bp))

    edges = groups(svg, "transition")
    assert len(edges) == 2
    paths = {g.find(f"{_SVG}path").get("d") for g in edges}  # type: ignore[union-attr]
    assert len(paths) == 2
    boxes = []
    for g in edges:
        (label,) = groups(g, "label")
        rect = label.find(f"{_SVG}rect")
        assert rect is not None
        x, y = float(rect.get("x", "nan")), float(rect.get("y", "nan"))
        boxes.append(
            (x, y, x + float(rect.get("width", "nan")), y + float(rect.get("height", "nan")))
        )
    (a_left, a_top, a_right, a_bottom), (b_left, b_top, b_right, b_bottom) = boxes
    assert a_right <= b_left or b_right <= a_left or a_bottom <= b_top or b_bottom <= a_top
    shown = {t.text for g in edges for t in g.iter(f"{_SVG}text")}
    assert "success" in shown
    assert long not in shown
    titles = {t.text for g in edges for t in g.iter(f"{_SVG}title")}
    assert titles == {long}
