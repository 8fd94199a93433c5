"""A blueprint's transitions, read from its handlers' source code: checked at
registration (a transition to a state without handler, a state nothing
reaches) and drawn as Graphviz DOT for ``GET /api/v1/blueprints/{name}/graph``.

The reading is static: each handler's source is parsed, never run, and its
calls to the ``actions`` methods give the edges leaving its state::

    actions.transition_to("b")                                  a -> b
    actions.dispatch_task("t", transitions={"success": "b"})      a -> b  "success"
    actions.await_human_approval(..., transitions={...})         one edge per decision
    actions.run_blueprint(..., transitions={...})                one edge per outcome
    actions.dispatch_parallel(tasks, aggregate_into="b")         a -> b  "aggregate"

Every call in the handler counts, whichever branch it sits in. The label of an
edge from a conditional handler also carries its condition.

A target that is not a string literal (a variable, an f-string, a dict built
elsewhere), an action method used other than by calling it, or a handler whose
source cannot be read makes the handler *opaque*: some of its edges are
unknown. Literal targets of an opaque handler are still checked, but
unreachable states are only reported when no reachable handler is opaque,
since an unknown edge may be the one that reaches them.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import textwrap
import types
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from avtomatika.blueprint.state_machine import FAILED
from avtomatika.errors import BlueprintError

if TYPE_CHECKING:
    from avtomatika.blueprint.conditions import Condition
    from avtomatika.blueprint.state_machine import StateMachineBlueprint, StateSpec

__all__ = ["DOT_CONTENT_TYPE", "Edge", "Graph", "check_transitions", "read_graph", "to_dot"]

DOT_CONTENT_TYPE = "text/vnd.graphviz"

AGGREGATE = "aggregate"
"""The outcome (and label) of a ``dispatch_parallel`` edge."""

# action method -> (keyword, position) of the argument naming the target state
_TARGET_ARGUMENT = {
    "transition_to": ("state", 0),
    "dispatch_parallel": ("aggregate_into", 1),
}
# action method -> (keyword, position) of its ``transitions`` dict
_TRANSITIONS_ARGUMENT = {
    "dispatch_task": ("transitions", 2),
    "await_human_approval": ("transitions", 2),
    "run_blueprint": ("transitions", 2),
}
_ACTIONS = frozenset(_TARGET_ARGUMENT) | frozenset(_TRANSITIONS_ARGUMENT)

_Function = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


@dataclass(frozen=True, slots=True, order=True)
class Edge:
    """A possible transition from ``source`` to ``target``."""

    source: str
    target: str
    outcome: str = ""
    """The transitions key (result status, decision, child outcome),
    ``"aggregate"`` for ``dispatch_parallel``, ``""`` for ``transition_to``."""
    condition: str = ""
    """The condition of the handler that takes it, without ``context.``."""
    aggregate: bool = False
    """Whether it is a ``dispatch_parallel``'s way into its aggregator."""

    @property
    def label(self) -> str:
        """What the graph writes on the edge."""
        when = f"when {self.condition}" if self.condition else ""
        return ", ".join(part for part in (self.outcome, when) if part)


@dataclass(frozen=True, slots=True)
class Graph:
    """The edges read from a blueprint's handlers."""

    edges: tuple[Edge, ...]
    """Sorted and without duplicates."""
    opaque: frozenset[str]
    """States with a handler whose edges are not all known."""
    untimed: frozenset[str] = frozenset()
    """States with a handler that waits for a human with a timeout but
    without a ``"timeout"`` transition to take when it passes."""

    def reachable_from(self, start: str) -> set[str]:
        """The states some path of known edges leads to from ``start``."""
        leaving: dict[str, list[str]] = {}
        for edge in self.edges:
            leaving.setdefault(edge.source, []).append(edge.target)
        seen = {start}
        pending = [start]
        while pending:
            for target in leaving.get(pending.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    pending.append(target)
        return seen


def read_graph(blueprint: StateMachineBlueprint) -> Graph:
    """Read every handler of ``blueprint``."""
    edges: set[Edge] = set()
    opaque: set[str] = set()
    untimed: set[str] = set()
    for state in blueprint.states.values():
        for spec in state.handlers:
            reading = _read_handler(spec.handler) or _Reading([], opaque=True)
            if reading.opaque:
                opaque.add(state.name)
            if reading.untimed:
                untimed.add(state.name)
            condition = _condition_text(spec.condition)
            for outcome, target, aggregate in reading.targets:
                edges.add(Edge(state.name, target, outcome, condition, aggregate))
    return Graph(tuple(sorted(edges)), frozenset(opaque), frozenset(untimed))


def check_transitions(blueprint: StateMachineBlueprint) -> None:
    """Raise :class:`BlueprintError` for a literal transition to a state
    without handler (or a ``dispatch_parallel`` into a state without
    aggregator), an approval with a timeout but no ``"timeout"``
    transition, or for states the start state cannot reach."""
    graph = read_graph(blueprint)
    problems: dict[str, None] = {}  # ordered and without duplicates
    for state in sorted(graph.untimed):
        problems[
            f"state {state!r} waits for a human with a timeout but has no 'timeout' "
            "transition to take when it passes"
        ] = None
    for edge in graph.edges:
        target = blueprint.state(edge.target)
        if target is None:
            problems[f"state {edge.source!r} leads to {edge.target!r}, which has no handler"] = None
        elif edge.aggregate and not target.is_aggregator:
            problems[
                f"state {edge.source!r} aggregates into {edge.target!r}, which has no "
                "aggregator (@aggregator_for)"
            ] = None
    if problems:
        raise BlueprintError(f"blueprint {blueprint.name!r}: {'; '.join(problems)}")

    start = blueprint.start_state
    reachable = graph.reachable_from(start)
    if reachable & graph.opaque:
        return
    unreachable = sorted(set(blueprint.states) - reachable)
    if unreachable:
        raise BlueprintError(
            f"blueprint {blueprint.name!r} has unreachable states: "
            f"{', '.join(repr(s) for s in unreachable)} (no transition from the start state "
            f"{start!r} leads to them)"
        )


def to_dot(blueprint: StateMachineBlueprint) -> str:
    """The state machine in Graphviz DOT, the same text for the same blueprint.

    Legend: an arrow from a point enters the start state, which is drawn
    bold; end states have a double border; aggregator states are hexagons;
    states with transitions decided at run time have a dashed border;
    aggregate edges are dashed; a target without handler is red.
    """
    graph = read_graph(blueprint)
    states = blueprint.states
    lines = [
        f"digraph {_quote(blueprint.name)} {{",
        "  rankdir=LR;",
        "  node [shape=box, style=rounded];",
    ]
    starts = sorted(name for name, state in states.items() if state.is_start)
    entry = _unused_name("__start__", states)
    if starts:
        lines.append(f'  {_quote(entry)} [shape=point, label=""];')
    for name in sorted(states):
        lines.append(f"  {_quote(name)} [{_node_attributes(states[name], graph.opaque)}];")
    for name in sorted({edge.target for edge in graph.edges} - set(states)):
        label = _quote(f"{name}\n(no handler)")
        lines.append(f"  {_quote(name)} [label={label}, color=red, fontcolor=red];")
    for name in starts:
        lines.append(f"  {_quote(entry)} -> {_quote(name)};")
    for edge in graph.edges:
        attributes = [f"label={_quote(edge.label)}"] if edge.label else []
        if edge.aggregate:
            attributes.append("style=dashed")
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- reading one handler --


@dataclass(slots=True)
class _Reading:
    targets: list[tuple[str, str, bool]]
    """(outcome, target, aggregate) of every literal target."""
    opaque: bool = False
    untimed: bool = False
    """An ``await_human_approval`` with a timeout whose literal transitions
    have no ``"timeout"`` key: it could never be taken."""


# Each handler is read once, when its blueprint is registered: a source
# does not change while the process runs, and the graph endpoint then parses
# nothing per request. (It also keeps the server's thread out of the AST
# parser while another thread compiles: CPython 3.11's parser counts its
# recursion depth in state that threads share, and fails with SystemError.)
_readings: weakref.WeakKeyDictionary[Any, _Reading | None] = weakref.WeakKeyDictionary()


def _read_handler(handler: Any) -> _Reading | None:
    """The handler's literal targets, or None if its source cannot be read."""
    try:
        return _readings[handler]
    except (KeyError, TypeError):  # not read yet, or no weak reference possible
        pass
    reading = _read_source(handler)
    with contextlib.suppress(TypeError):
        _readings[handler] = reading
    return reading


def _read_source(handler: Any) -> _Reading | None:
    node = _function_node(handler)
    if node is None:
        return None
    reading = _Reading([])
    body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
    called: set[int] = set()
    for child in _walk(body):
        if isinstance(child, ast.Call) and _action_name(child.func) is not None:
            # ast.walk yields a call before its func, so by the time the
            # attribute comes up it is known to be called.
            called.add(id(child.func))
            _read_call(child, reading)
        elif isinstance(child, ast.Call) and _hands_off(child):
            reading.opaque = True
        elif _action_name(child) is not None and id(child) not in called:
            # ``go = actions.transition_to``: its calls cannot be followed.
            reading.opaque = True
    return reading


def _walk(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    for node in nodes:
        yield from ast.walk(node)


def _action_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and node.attr in _ACTIONS:
        return node.attr
    return None


def _hands_off(call: ast.Call) -> bool:
    """Whether ``call`` may take the action for the handler: it is given
    ``actions``, ``context``, ``context.actions`` or spread arguments (a
    decorator's wrapper calling the real handler with ``*args, **kwargs``)."""
    for value in (*call.args, *(k.value for k in call.keywords if k.arg is not None)):
        if isinstance(value, ast.Starred) or _names_actions(value):
            return True
    return any(k.arg is None for k in call.keywords)


def _names_actions(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("actions", "context")
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "actions"
        and isinstance(node.value, ast.Name)
        and node.value.id == "context"
    )


def _read_call(call: ast.Call, reading: _Reading) -> None:
    assert isinstance(call.func, ast.Attribute)
    method = call.func.attr
    if method in _TARGET_ARGUMENT:
        target = _argument(call, *_TARGET_ARGUMENT[method])
        if target is None:
            return  # the call itself fails at run time
        state = _string(target)
        if state is None:
            reading.opaque = True
        else:
            if method == "dispatch_parallel":
                reading.targets.append((AGGREGATE, state, True))
            else:
                reading.targets.append(("", state, False))
        return
    transitions = _argument(call, *_TRANSITIONS_ARGUMENT[method])
    if transitions is None:
        return
    if not isinstance(transitions, ast.Dict):
        reading.opaque = True
        return
    if method == "await_human_approval" and _times_out(call, transitions):
        reading.untimed = True
    for key, value in zip(transitions.keys, transitions.values, strict=True):
        state = _string(value)
        if key is None or state is None:  # ``**more`` or a computed state
            reading.opaque = True
            continue
        outcome = _string(key)
        reading.targets.append((ast.unparse(key) if outcome is None else outcome, state, False))


def _times_out(call: ast.Call, transitions: ast.Dict) -> bool:
    """Whether an ``await_human_approval`` call passes a timeout (anything
    but a literal None) while its literal transitions lack ``"timeout"``
    (a ``**more`` may hold it: then it is not known to lack it)."""
    timeout = _argument(call, "timeout", 3)
    if timeout is None or (isinstance(timeout, ast.Constant) and timeout.value is None):
        return False
    named = [_string(key) for key in transitions.keys if key is not None]
    return len(named) == len(transitions.keys) and "timeout" not in named


def _argument(call: ast.Call, keyword: str, position: int) -> ast.expr | None:
    """The expression passed as ``keyword`` (or at ``position``); a ``*args``
    or ``**kwargs`` that may hold it stands in for it (never a literal)."""
    for named in call.keywords:
        if named.arg == keyword:
            return named.value
    for positional in call.args[: position + 1]:
        if isinstance(positional, ast.Starred):
            return positional
    if len(call.args) > position:
        return call.args[position]
    for named in call.keywords:
        if named.arg is None:
            return named.value
    return None


def _string(node: ast.expr) -> str | None:
    """The value of a string literal; None for any other expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _function_node(handler: Any) -> _Function | None:
    """The syntax tree of the handler's function, or None when its source is
    not available (built-ins, code made by ``exec``, an ambiguous lambda)."""
    function = _python_function(handler)
    if function is None:
        return None
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None
    if function.__name__ != "<lambda>":
        first = tree.body[0] if tree.body else None
        if isinstance(first, ast.FunctionDef | ast.AsyncFunctionDef) and (
            first.name == function.__name__
        ):
            return first
        return None
    # A lambda's source is the whole line(s) it sits on, which may hold other
    # lambdas: only one with the same parameters can be this one.
    code = function.__code__
    parameters = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    candidates = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Lambda) and _parameters(node.args) == parameters
    ]
    return candidates[0] if len(candidates) == 1 else None


def _parameters(arguments: ast.arguments) -> tuple[str, ...]:
    return tuple(a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs))


def _python_function(handler: Any) -> types.FunctionType | None:
    """The plain Python function behind a handler: through decorators that
    set ``__wrapped__``, ``functools.partial``, bound methods and callable
    objects."""
    for _ in range(100):  # a cycle of wrappers must not hang registration
        if isinstance(handler, types.FunctionType):
            if not hasattr(handler, "__wrapped__"):
                return handler
            handler = handler.__wrapped__
        elif isinstance(handler, functools.partial):
            handler = handler.func
        elif isinstance(handler, types.MethodType):
            handler = handler.__func__
        elif hasattr(handler, "__wrapped__"):
            handler = handler.__wrapped__
        elif callable(handler) and isinstance(type(handler).__call__, types.FunctionType):
            handler = type(handler).__call__  # an object with a __call__ method
        else:
            return None
    return None


def _condition_text(condition: Condition | None) -> str:
    if condition is None:
        return ""
    return condition.text.strip().removeprefix("context.")


# -- DOT --


def _node_attributes(state: StateSpec, opaque: frozenset[str]) -> str:
    attributes = [f"label={_quote(state.name)}"]
    style = ["rounded"]
    if state.is_start:
        style.append("bold")
    if state.name in opaque:
        style.append("dashed")
    if state.is_aggregator:
        attributes.append("shape=hexagon")
    if state.is_end:
        # The status the job ends in, beside the node: by 1.0b13's naming
        # rule an end state called "done" fails the job, which its shape alone
        # would not tell.
        attributes += ["peripheries=2", f"xlabel={_quote(state.ends_as)}"]
        if state.ends_as == FAILED:
            attributes.append('color="firebrick"')
    if style != ["rounded"]:
        attributes.append(f"style={_quote(','.join(style))}")
    return ", ".join(attributes)


def _quote(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, line breaks as
    ``\\n`` (so the string stays on one line)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r\n", "\\n").replace("\r", "\\n").replace("\n", "\\n")
    return f'"{escaped}"'


def _unused_name(base: str, taken: Iterable[str]) -> str:
    names = set(taken)
    while base in names:
        base = f"_{base}"
    return base
