"""Where to draw a blueprint's states and transitions: a layered layout.

States go in columns (ranks) by their distance from the start state, left to
right as DOT's ``rankdir=LR`` draws them; a state no known edge reaches goes in
a column after the last. Within a column the states are ordered to cross fewer
edges (barycentre sweeps, keeping the best order found), and each column is
as wide as its widest name. A transition is a cubic Bézier curve:

* forward (to a later column): from the source's right side to the target's
  left side;
* within a column: from the source's right side to the target's, bulging
  right;
* back (to an earlier column): from the top of the source to the top of the
  target, arching above both;
* to itself: a loop over the state's top.

Parallel transitions (same source and target) are spread apart so that each
label stays readable. Pure geometry: :mod:`avtomatika.blueprint.svg` writes
it out, and the same input always gives the same layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Box", "Curve", "Layout", "lay_out"]

Point = tuple[float, float]

STATE_HEIGHT = 36.0
_COLUMN_GAP = 90.0
_ROW_GAP = 30.0
_MARGIN = 16.0
_ENTRY = 34.0
"""Room left of the start state for the arrow that enters it."""
_LABEL_ROOM = 14.0
"""Space kept on each side of a label between two columns."""
_SWEEPS = 6
_ARROW_LENGTH = 9.0
_ARROW_HALF_WIDTH = 4.5
_PARALLEL_SPREAD = 28.0
"""How far apart the control points of two parallel curves are: enough
that their middles (three quarters of it apart) hold a label each."""


@dataclass(frozen=True, slots=True)
class Box:
    """A state's rectangle; ``x``, ``y`` is its top left corner."""

    name: str
    rank: int
    x: float
    y: float
    width: float
    height: float = STATE_HEIGHT

    @property
    def centre(self) -> Point:
        return self.x + self.width / 2, self.y + self.height / 2


@dataclass(frozen=True, slots=True)
class Curve:
    """A transition's cubic Bézier curve, its arrowhead and where its label goes."""

    source: str
    target: str
    start: Point
    control1: Point
    control2: Point
    end: Point
    arrowhead: tuple[Point, Point, Point]
    label_at: Point
    label_starts: bool = False
    """Whether the label starts at ``label_at`` (beside a curve bulging to
    the right) rather than being centred on it."""
    label_below: bool = False
    """Whether the label goes under ``label_at`` rather than above it: the
    lower of parallel curves carries it below, so two labels never meet."""


@dataclass(frozen=True, slots=True)
class Layout:
    """The boxes by state, the curves in the order of the edges given, and
    the rectangle (``x, y, width, height``) that holds them all."""

    boxes: dict[str, Box]
    curves: list[Curve]
    entry: tuple[Point, Point] | None
    """The start marker's centre and where its arrow ends (None without start)."""
    bounds: tuple[float, float, float, float]


def lay_out(
    states: Sequence[str],
    start: str | None,
    edges: Sequence[tuple[str, str]],
    width_of: Callable[[str], float],
    label_widths: Sequence[float] = (),
) -> Layout:
    """Lay out ``states`` (every source and target of ``edges`` among them)
    with ``edges`` as (source, target) pairs; ``width_of`` gives a state's
    box width, ``label_widths`` the width of each edge's label (the gap
    between two columns holds the widest label of the edges across it)."""
    ranks = _ranks(states, start, edges)
    columns = _order(_columns(states, ranks), edges, ranks)
    row = {state: i for column in columns for i, state in enumerate(column)}
    gaps = [_COLUMN_GAP] * len(columns)
    for (source, target), width in zip(edges, label_widths, strict=False):
        rank = ranks[source]
        if ranks[target] - rank == 1:
            gaps[rank] = max(gaps[rank], width + 2 * _LABEL_ROOM)
        elif ranks[target] == rank and source != target:
            # A curve within the column bulges into the gap after it, its
            # label beside the bulge.
            bulge = _bulge(abs(row[target] - row[source]) * (STATE_HEIGHT + _ROW_GAP), 0.0)
            gaps[rank] = max(gaps[rank], bulge + width + 2 * _LABEL_ROOM)
    boxes = _place(columns, width_of, gaps, entry_room=_ENTRY if start is not None else 0.0)
    curves = _curves(boxes, edges)
    entry = None
    if start is not None:
        box = boxes[start]
        entry = ((box.x - _ENTRY + 4.0, box.centre[1]), (box.x, box.centre[1]))
    return Layout(boxes, curves, entry, _bounds(boxes.values(), curves))


def _ranks(
    states: Sequence[str], start: str | None, edges: Sequence[tuple[str, str]]
) -> dict[str, int]:
    """Breadth-first distance from ``start``; unreached states one past the last."""
    leaving: dict[str, list[str]] = {}
    for source, target in edges:
        leaving.setdefault(source, []).append(target)
    ranks: dict[str, int] = {}
    if start is not None:
        ranks[start] = 0
        frontier = [start]
        while frontier:
            following = []
            for state in frontier:
                for target in leaving.get(state, ()):
                    if target not in ranks:
                        ranks[target] = ranks[state] + 1
                        following.append(target)
            frontier = following
    last = max(ranks.values(), default=-1)
    for state in states:
        ranks.setdefault(state, last + 1)
    return ranks


def _columns(states: Sequence[str], ranks: dict[str, int]) -> list[list[str]]:
    columns: list[list[str]] = [[] for _ in range(max(ranks.values(), default=-1) + 1)]
    for state in states:
        columns[ranks[state]].append(state)
    return columns


def _order(
    columns: list[list[str]], edges: Sequence[tuple[str, str]], ranks: dict[str, int]
) -> list[list[str]]:
    """Reorder each column by the mean position of its neighbours in the
    column before (sweeping right) or after (sweeping left); keep the
    arrangement with the fewest crossings."""
    neighbours: dict[str, set[str]] = {}
    for source, target in edges:
        if abs(ranks[source] - ranks[target]) == 1:
            neighbours.setdefault(source, set()).add(target)
            neighbours.setdefault(target, set()).add(source)
    best = [list(column) for column in columns]
    fewest = _crossings(best, edges, ranks)
    current = [list(column) for column in columns]
    for sweep in range(_SWEEPS):
        rightwards = sweep % 2 == 0
        indices = range(1, len(current)) if rightwards else range(len(current) - 2, -1, -1)
        for index in indices:
            fixed = current[index - 1] if rightwards else current[index + 1]
            position = {state: i for i, state in enumerate(fixed)}
            current[index] = _by_barycentre(current[index], neighbours, position)
        crossings = _crossings(current, edges, ranks)
        if crossings < fewest:
            best, fewest = [list(column) for column in current], crossings
    return best


def _by_barycentre(
    column: list[str], neighbours: dict[str, set[str]], position: dict[str, int]
) -> list[str]:
    def key(item: tuple[int, str]) -> tuple[float, int]:
        index, state = item
        placed = [position[n] for n in neighbours.get(state, ()) if n in position]
        # A state with no neighbour there keeps its place.
        return (sum(placed) / len(placed) if placed else float(index), index)

    return [state for _, state in sorted(enumerate(column), key=key)]


def _crossings(
    columns: list[list[str]], edges: Sequence[tuple[str, str]], ranks: dict[str, int]
) -> int:
    """How many pairs of edges between adjacent columns cross."""
    position = {state: i for column in columns for i, state in enumerate(column)}
    spans: dict[int, list[tuple[int, int]]] = {}
    for source, target in edges:
        left, right = sorted((source, target), key=lambda s: ranks[s])
        if ranks[right] - ranks[left] == 1:
            spans.setdefault(ranks[left], []).append((position[left], position[right]))
    count = 0
    for pairs in spans.values():
        for i, (a1, b1) in enumerate(pairs):
            count += sum(1 for a2, b2 in pairs[i + 1 :] if (a1 - a2) * (b1 - b2) < 0)
    return count


def _place(
    columns: list[list[str]],
    width_of: Callable[[str], float],
    gaps: Sequence[float],
    entry_room: float,
) -> dict[str, Box]:
    widths = [max((width_of(s) for s in column), default=0.0) for column in columns]
    tallest = max((len(column) for column in columns), default=0)
    full_height = tallest * STATE_HEIGHT + max(tallest - 1, 0) * _ROW_GAP
    boxes: dict[str, Box] = {}
    x = _MARGIN + entry_room
    for rank, (column, column_width, gap) in enumerate(zip(columns, widths, gaps, strict=True)):
        height = len(column) * STATE_HEIGHT + max(len(column) - 1, 0) * _ROW_GAP
        y = _MARGIN + (full_height - height) / 2  # each column centred vertically
        for state in column:
            width = width_of(state)
            boxes[state] = Box(state, rank, x + (column_width - width) / 2, y, width)
            y += STATE_HEIGHT + _ROW_GAP
        x += column_width + gap
    return boxes


def _curves(boxes: dict[str, Box], edges: Sequence[tuple[str, str]]) -> list[Curve]:
    seen: dict[tuple[str, str], int] = {}
    total: dict[tuple[str, str], int] = {}
    for edge in edges:
        total[edge] = total.get(edge, 0) + 1
    curves = []
    for source, target in edges:
        index = seen.get((source, target), 0)
        seen[(source, target)] = index + 1
        # Parallel edges fan out around the middle one.
        offset = (index - (total[(source, target)] - 1) / 2) * _PARALLEL_SPREAD
        curves.append(_curve(boxes[source], boxes[target], offset))
    return curves


def _curve(source: Box, target: Box, offset: float) -> Curve:
    (sx, sy), (tx, ty) = source.centre, target.centre
    if source.name == target.name:
        rise = 44.0 + abs(offset) * 2
        start, end = (sx - 12.0, source.y), (sx + 12.0, source.y)
        control1 = (sx - 34.0 - offset, source.y - rise)
        control2 = (sx + 34.0 + offset, source.y - rise)
    elif target.rank > source.rank:
        start, end = (source.x + source.width, sy), (target.x, ty)
        reach = (end[0] - start[0]) / 2
        control1 = (start[0] + reach, sy + offset)
        control2 = (end[0] - reach, ty + offset)
    elif target.rank == source.rank:
        # Within a column: out of the right side and back in, bulging right.
        start, end = (source.x + source.width, sy), (target.x + target.width, ty)
        bulge = max(start[0], end[0]) + _bulge(abs(ty - sy), offset)
        control1, control2 = (bulge, sy), (bulge, ty)
    else:
        start, end = (sx, source.y), (tx, target.y)
        rise = 40.0 + 14.0 * abs(source.rank - target.rank) + offset
        top = min(source.y, target.y) - rise
        control1, control2 = (sx, top), (tx, top)
    middle = _bezier_middle(start, control1, control2, end)
    beside = target.rank == source.rank and source.name != target.name
    # The lower of two parallel curves: forward ones sink with the offset,
    # back ones (arching above) rise with it.
    below = offset > 0 if target.rank > source.rank else target.rank < source.rank and offset < 0
    return Curve(
        source.name,
        target.name,
        start,
        control1,
        control2,
        end,
        _arrowhead(control2, end, start),
        (middle[0] + 6.0, middle[1] + 8.0) if beside else middle,
        label_starts=beside,
        label_below=below,
    )


def _bulge(rise: float, offset: float) -> float:
    """How far right of its column a curve within the column reaches."""
    return 30.0 + rise / 4 + offset


def _arrowhead(towards_from: Point, tip: Point, fallback: Point) -> tuple[Point, Point, Point]:
    dx, dy = tip[0] - towards_from[0], tip[1] - towards_from[1]
    length = math.hypot(dx, dy)
    if length < 1e-6:
        dx, dy = tip[0] - fallback[0], tip[1] - fallback[1]
        length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    base = (tip[0] - ux * _ARROW_LENGTH, tip[1] - uy * _ARROW_LENGTH)
    return (
        tip,
        (base[0] - uy * _ARROW_HALF_WIDTH, base[1] + ux * _ARROW_HALF_WIDTH),
        (base[0] + uy * _ARROW_HALF_WIDTH, base[1] - ux * _ARROW_HALF_WIDTH),
    )


def _bezier_middle(p0: Point, p1: Point, p2: Point, p3: Point) -> Point:
    return (
        (p0[0] + 3 * p1[0] + 3 * p2[0] + p3[0]) / 8,
        (p0[1] + 3 * p1[1] + 3 * p2[1] + p3[1]) / 8,
    )


def _bounds(boxes: Iterable[Box], curves: Iterable[Curve]) -> tuple[float, float, float, float]:
    """What holds every box and curve (a Bézier curve stays inside its
    control points), with the margin around it."""
    xs: list[float] = [0.0]
    ys: list[float] = [0.0]
    for box in boxes:
        xs += [box.x, box.x + box.width]
        ys += [box.y, box.y + box.height]
    for curve in curves:
        for x, y in (curve.start, curve.control1, curve.control2, curve.end):
            xs.append(x)
            ys.append(y)
    left, top = min(xs) - _MARGIN, min(ys) - _MARGIN
    return left, top, max(xs) + _MARGIN - left, max(ys) + _MARGIN - top
