"""A blueprint's state machine drawn as SVG, for
``GET /api/v1/blueprints/{name}/graph?format=svg`` and the web console.

The same edges as the DOT text (:func:`avtomatika.blueprint.graph.to_dot`),
laid out by :mod:`avtomatika.blueprint.layout`, with the same legend: a dot
and an arrow enter the start state, which is drawn bold; end states have a
double border (red when the job ends ``failed``); states whose transitions
are decided at run time have a dashed border; aggregate edges are dashed; a
target without handler is red.

The document is meant to be styled and scripted from outside: each state is
``<g class="state" data-state="NAME">`` and each transition
``<g class="transition" data-from="A" data-to="B">``, so a page can mark the
current and visited states with CSS classes. Colours are presentation
attributes (which any stylesheet overrides) and never ``style`` attributes,
so a page with a strict Content-Security-Policy can show it inline. Every
name and label is XML-escaped: blueprint and state names are the blueprint
author's text, never markup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

from avtomatika.blueprint.graph import read_graph
from avtomatika.blueprint.layout import STATE_HEIGHT, Curve, Layout, Point, lay_out
from avtomatika.blueprint.state_machine import FAILED, StateMachineBlueprint

__all__ = ["SVG_CONTENT_TYPE", "to_svg"]

SVG_CONTENT_TYPE = "image/svg+xml"

_FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
_STATE_FONT_SIZE = 12.0
_LABEL_FONT_SIZE = 10.0
# A monospace character is about 0.6 em wide: the boxes fit their names
# without measuring text, which a server cannot do.
_CHARACTER = 0.6
_PADDING = 14.0
_MIN_WIDTH = 72.0
_LONGEST_LABEL = 40
"""Characters of a label shown on the drawing; a longer one is cut."""
_INK = "#1f2933"
_EDGE = "#52606d"
_FAILED_INK = "#b42318"
_FILL = "#ffffff"
# Characters XML 1.0 does not allow at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def to_svg(blueprint: StateMachineBlueprint) -> str:
    """The state machine as a standalone SVG document, the same text for
    the same blueprint."""
    graph = read_graph(blueprint)
    states = blueprint.states
    missing = sorted({edge.target for edge in graph.edges} - set(states))
    names = [*sorted(states), *missing]
    starts = [name for name in sorted(states) if states[name].is_start]
    start = starts[0] if len(starts) == 1 else None
    layout = lay_out(
        names,
        start,
        [(edge.source, edge.target) for edge in graph.edges],
        lambda name: _state_width(_shown_name(name, name in missing)),
        [_label_width(_shown_label(edge.label)) for edge in graph.edges],
    )
    left, top, width, height = _bounds(layout, [edge.label for edge in graph.edges])
    lines = [
        '<svg xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="{_n(left)} {_n(top)} {_n(width)} {_n(height)}" '
        f'width="{_n(width)}" height="{_n(height)}" role="img" '
        f"aria-label={_attribute(f'state machine of blueprint {blueprint.name}')} "
        f'font-family="{_FONT}" data-blueprint={_attribute(blueprint.name)}>',
        f"<title>{_text(blueprint.name)}</title>",
    ]
    if layout.entry is not None:
        (cx, cy), tip = layout.entry
        lines.append(
            '<g class="entry">'
            f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="4" fill="{_INK}"/>'
            f'<path d="M{_point((cx + 4, cy))} L{_point((tip[0] - 8, tip[1]))}" '
            f'stroke="{_EDGE}" fill="none"/>'
            f"{_polygon((tip, (tip[0] - 9, tip[1] - 4.5), (tip[0] - 9, tip[1] + 4.5)))}"
            "</g>"
        )
    for edge, curve in zip(graph.edges, layout.curves, strict=True):
        dash = ' stroke-dasharray="5 4"' if edge.aggregate else ""
        label = _label(edge.label, curve) if edge.label else ""
        lines.append(
            f'<g class="transition" data-from={_attribute(edge.source)} '
            f"data-to={_attribute(edge.target)} data-outcome={_attribute(edge.outcome)}>"
            f'<path d="M{_point(curve.start)} C{_point(curve.control1)} '
            f'{_point(curve.control2)} {_point(curve.end)}" fill="none" stroke="{_EDGE}" '
            f'stroke-width="1.4"{dash}/>'
            f"{_polygon(curve.arrowhead)}{label}</g>"
        )
    for name in names:
        box = layout.boxes[name]
        state = states.get(name)
        ink = _FAILED_INK if state is None or (state.is_end and state.ends_as == FAILED) else _INK
        stroke = [f'stroke="{ink}"', f'stroke-width="{2.4 if state and state.is_start else 1.2}"']
        if state is None or name in graph.opaque:
            stroke.append('stroke-dasharray="4 3"')
        data = []
        if state is not None and state.is_start:
            data.append('data-start="true"')
        if state is not None and state.is_end:
            data.append(f"data-ends-as={_attribute(state.ends_as)}")
        if state is None:
            data.append('data-missing="true"')
        parts = [
            f'<g class="state" data-state={_attribute(name)}{"".join(" " + d for d in data)}>',
            f'<rect x="{_n(box.x)}" y="{_n(box.y)}" width="{_n(box.width)}" '
            f'height="{_n(box.height)}" rx="8" fill="{_FILL}" {" ".join(stroke)}/>',
        ]
        if state is not None and state.is_end:
            parts.append(
                f'<rect x="{_n(box.x + 3)}" y="{_n(box.y + 3)}" width="{_n(box.width - 6)}" '
                f'height="{_n(box.height - 6)}" rx="6" fill="none" stroke="{ink}" '
                'stroke-width="1"/>'
            )
        cx, cy = box.centre
        parts.append(
            f'<text x="{_n(cx)}" y="{_n(cy + _STATE_FONT_SIZE * 0.35)}" text-anchor="middle" '
            f'font-size="{_n(_STATE_FONT_SIZE)}" fill="{ink}">'
            f"{_text(_shown_name(name, state is None))}</text></g>"
        )
        lines.append("".join(parts))
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def _shown_name(name: str, missing: bool) -> str:
    return f"{name} (no handler)" if missing else name


def _state_width(text: str) -> float:
    return max(_MIN_WIDTH, len(text) * _STATE_FONT_SIZE * _CHARACTER + 2 * _PADDING)


def _shown_label(label: str) -> str:
    """A label cut to fit beside an edge (the whole text is its tooltip)."""
    return label if len(label) <= _LONGEST_LABEL else label[: _LONGEST_LABEL - 1] + "\u2026"


def _label(label: str, curve: Curve) -> str:
    """A transition's label beside its curve, above it or (the lower of
    parallel curves) below it, on a background so that no edge strikes it
    through; a cut label keeps its whole text as a ``<title>``."""
    shown = _shown_label(label)
    x, y = curve.label_at
    baseline = y + 4 + _LABEL_FONT_SIZE if curve.label_below else y - 4
    width = _label_width(shown)
    left = x if curve.label_starts else x - width / 2
    anchor = "start" if curve.label_starts else "middle"
    title = f"<title>{_text(label)}</title>" if shown != label else ""
    return (
        f'<g class="label">{title}'
        f'<rect x="{_n(left - 2)}" y="{_n(baseline - _LABEL_FONT_SIZE)}" '
        f'width="{_n(width + 4)}" height="{_n(_LABEL_FONT_SIZE + 3)}" rx="2" '
        f'fill="{_FILL}" fill-opacity="0.9"/>'
        f'<text x="{_n(x)}" y="{_n(baseline)}" text-anchor="{anchor}" '
        f'font-size="{_n(_LABEL_FONT_SIZE)}" fill="{_EDGE}">{_text(shown)}</text></g>'
    )


def _label_width(label: str) -> float:
    return len(label) * _LABEL_FONT_SIZE * _CHARACTER


def _bounds(layout: Layout, labels: Iterable[str]) -> tuple[float, float, float, float]:
    """The layout's bounds, grown to hold the labels (which only this
    module knows the size of) and the entry marker."""
    left, top, width, height = layout.bounds
    right, bottom = left + width, top + height
    for label, curve in zip(labels, layout.curves, strict=True):
        width = _label_width(_shown_label(label)) + 8
        x, y = curve.label_at
        if curve.label_starts:
            right = max(right, x + width)
        else:
            left, right = min(left, x - width / 2), max(right, x + width / 2)
        top = min(top, y - _LABEL_FONT_SIZE - 8)
        if curve.label_below:
            bottom = max(bottom, y + _LABEL_FONT_SIZE + 12)
    if layout.entry is not None:
        (cx, _), _ = layout.entry
        left = min(left, cx - 8)
    bottom = max(bottom, top + STATE_HEIGHT)
    return left, top, right - left, bottom - top


def _polygon(points: Iterable[Point]) -> str:
    return f'<polygon points="{" ".join(_point(p) for p in points)}" fill="{_EDGE}"/>'


def _point(point: Point) -> str:
    return f"{_n(point[0])},{_n(point[1])}"


def _n(value: float) -> str:
    """A coordinate with at most one decimal, without a trailing ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _text(text: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", text))


def _attribute(text: str) -> str:
    """A quoted attribute value; line breaks kept as character references
    (an attribute's value is otherwise normalised to spaces)."""
    return quoteattr(_NOT_XML.sub("\ufffd", text), {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})
