"""Blueprints: state machines written in Python (the 1.0b13 blueprint API).

A blueprint maps state names to async handlers. The start handler runs when a
job is created; each handler decides what happens next through ``actions``;
reaching an end state (and running its handler) ends the job.

How an end state ends the job is 1.0b13's rule unless the state declares it:
``finished`` for a state named ``finished``, ``failed`` for any other name
(existing blueprints and their clients rely on it). A state declares its
outcome with ``handler_for("published", is_end=True, outcome="finished")``.

A state may have conditional handlers, tried in the order they were declared,
and a default handler used when no condition holds; they may be declared in
any order::

    @bp.handler_for("route").when("context.initial_data.type == 'urgent'")
    async def urgent(actions): actions.transition_to("fast")

    @bp.handler_for("route")
    async def normal(actions): actions.transition_to("slow")

An aggregator state (``@bp.aggregator_for``) runs once every branch of a
``dispatch_parallel`` has ended, with ``aggregation_results`` injected.

A blueprint may declare the JSON Schema of its jobs' ``initial_data``
(``input_schema=``); creating a job over either transport checks it
(:meth:`StateMachineBlueprint.check_input`), and an invalid schema is a
:class:`BlueprintError` when the blueprint is registered.
"""

from __future__ import annotations

import dis
import inspect
import json
import re
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from avtomatika.blueprint.conditions import Condition
from avtomatika.blueprint.data_stores import as_data_store
from avtomatika.blueprint.injection import HandlerSignature
from avtomatika.errors import BlueprintError, InvalidArgument

__all__ = ["Blueprint", "Handler", "HandlerSpec", "StateMachineBlueprint", "StateSpec"]

Handler = Callable[..., Awaitable[Any]]
_H = TypeVar("_H", bound=Handler)

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# A refusal quotes the offending value (jsonschema's messages do); a huge
# value is cut so the message stays readable and fits a gRPC trailer.
_MAX_MESSAGE = 300
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

FINISHED = "finished"
FAILED = "failed"
OUTCOMES = (FINISHED, FAILED)
"""The outcomes an end state may declare: the status it ends the job in."""


# The instructions with which a coroutine gives up control: await, async
# with, async for.
_SUSPENDING = frozenset(
    {"GET_AWAITABLE", "BEFORE_ASYNC_WITH", "GET_AITER", "GET_ANEXT", "SEND", "YIELD_VALUE"}
)


def never_suspends(handler: Callable[..., Any]) -> bool:
    """Whether ``handler`` is an ``async def`` without await, ``async with``
    or ``async for``: once called, it runs to its end in one go. Anything
    else (a mock, a wrapper, a compiled function) may suspend."""
    function = handler.__func__ if inspect.ismethod(handler) else handler
    if not isinstance(function, types.FunctionType):
        return False
    code = function.__code__
    if not code.co_flags & inspect.CO_COROUTINE:
        return False  # a plain function returning an awaitable, however marked
    try:
        return not any(i.opname in _SUSPENDING for i in dis.get_instructions(code))
    except Exception:  # bytecode this reading does not know
        return False


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One handler of a state, with its condition if it is conditional."""

    handler: Handler
    signature: HandlerSignature
    condition: Condition | None = None
    never_suspends: bool = False
    """See :func:`never_suspends`."""


@dataclass(slots=True)
class StateSpec:
    """A state: its handlers and its role in the machine."""

    name: str
    is_start: bool = False
    is_end: bool = False
    is_aggregator: bool = False
    outcome: str | None = None
    """The status the end state ends the job in, as declared (None: not
    declared, see :attr:`ends_as`)."""
    default: HandlerSpec | None = None
    conditional: list[HandlerSpec] = field(default_factory=list)

    @property
    def handlers(self) -> list[HandlerSpec]:
        """Every handler of the state, conditional ones first."""
        return [*self.conditional, *([self.default] if self.default else [])]

    @property
    def ends_as(self) -> str:
        """The status (``finished`` or ``failed``) this end state ends the job
        in: the declared outcome, else 1.0b13's rule (``finished`` only for a
        state named ``finished``)."""
        if self.outcome is not None:
            return self.outcome
        return FINISHED if self.name == FINISHED else FAILED

    @property
    def never_suspends(self) -> bool:
        """Whether every handler of the state runs to its end in one go."""
        handlers = self.handlers
        return bool(handlers) and all(h.never_suspends for h in handlers)

    def select(self, areas: Mapping[str, Any]) -> HandlerSpec | None:
        """The first conditional handler whose condition holds, else the default."""
        for spec in self.conditional:
            assert spec.condition is not None
            if spec.condition.matches(areas):
                return spec
        return self.default


class _HandlerRegistration:
    """What ``handler_for`` returns: a decorator, with ``.when()`` for the
    conditional form."""

    def __init__(
        self,
        blueprint: StateMachineBlueprint,
        state: str,
        is_start: bool,
        is_end: bool,
        outcome: str | None,
    ):
        self._blueprint = blueprint
        self._state = state
        self._is_start = is_start
        self._is_end = is_end
        self._outcome = outcome

    def __call__(self, handler: _H) -> _H:
        spec = self._blueprint._add(self._state, handler, self._is_start, self._is_end, None)
        self._blueprint._declare_outcome(spec, self._outcome)
        return handler

    def when(self, condition: str) -> Callable[[_H], _H]:
        """Run the decorated handler only when ``condition`` holds."""
        parsed = Condition.parse(condition)

        def register(handler: _H) -> _H:
            spec = self._blueprint._add(self._state, handler, self._is_start, self._is_end, parsed)
            self._blueprint._declare_outcome(spec, self._outcome)
            return handler

        return register


class StateMachineBlueprint:
    """A named state machine.

    Jobs of a blueprint with an ``api_endpoint`` are created over
    ``POST /api/{api_version}/{api_endpoint}`` (``/api/{api_endpoint}`` when it
    has no version); a blueprint without one is internal: started by
    ``run_blueprint`` or ``create_background_job`` only.

    ``input_schema`` is a JSON Schema (a JSON object; its ``$schema`` picks
    the draft, 2020-12 by default) that a client's ``initial_data`` must
    satisfy: creating a job that does not is refused, naming the failing
    path. Jobs started from inside (children, schedules) are not checked.
    """

    def __init__(
        self,
        name: str,
        api_endpoint: str | None = None,
        api_version: str | None = None,
        data_stores: Mapping[str, Any] | None = None,
        input_schema: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise BlueprintError(f"blueprint name {name!r} must match {_NAME.pattern}")
        self.name = name
        self.api_endpoint = _normalise_path(name, "api_endpoint", api_endpoint)
        self.api_version = _normalise_path(name, "api_version", api_version)
        if self.api_version is not None and "/" in self.api_version:
            raise BlueprintError(f"blueprint {name!r}: api_version must be one path segment")
        self.data_stores: dict[str, Any] = {
            key: as_data_store(value) for key, value in (data_stores or {}).items()
        }
        if input_schema is not None and not isinstance(input_schema, Mapping):
            raise BlueprintError(
                f"blueprint {name!r}: input_schema must be a JSON Schema object, "
                f"got {type(input_schema).__name__}"
            )
        self.input_schema: dict[str, Any] | None = (
            dict(input_schema) if input_schema is not None else None
        )
        self._input_validator: Validator | None = None
        self._states: dict[str, StateSpec] = {}

    # -- definition --

    def handler_for(
        self,
        state: str,
        is_start: bool = False,
        is_end: bool = False,
        outcome: str | None = None,
    ) -> _HandlerRegistration:
        """Register the decorated coroutine function as a handler of ``state``
        (use ``.when(condition)`` for a conditional handler).

        ``outcome`` (``"finished"`` or ``"failed"``, end states only) is the
        status the end state ends the job in; without it, a state named
        ``finished`` finishes the job and any other end state fails it, as
        in 1.0b13."""
        if not isinstance(state, str) or not state:
            raise BlueprintError(f"blueprint {self.name!r}: a state needs a name, got {state!r}")
        if outcome is not None:
            if outcome not in OUTCOMES:
                raise BlueprintError(
                    f"blueprint {self.name!r}: state {state!r} declares outcome {outcome!r}; "
                    f"an end state's outcome is {FINISHED!r} or {FAILED!r}"
                )
            if not is_end:
                raise BlueprintError(
                    f"blueprint {self.name!r}: state {state!r} declares outcome {outcome!r} "
                    "but is not an end state (pass is_end=True)"
                )
        return _HandlerRegistration(self, state, is_start, is_end, outcome)

    def aggregator_for(self, state: str) -> Callable[[_H], _H]:
        """Register the handler that runs in ``state`` once every branch of a
        ``dispatch_parallel(..., aggregate_into=state)`` has ended."""

        def register(handler: _H) -> _H:
            spec = self._add(state, handler, False, False, None)
            spec.is_aggregator = True
            return handler

        return register

    def add_data_store(self, name: str, initial: Any) -> None:
        """Share a store with every handler as ``data_stores.<name>``: a dict
        becomes an async dict store (``await get/set``); any other object is
        passed through as it is."""
        if name in self.data_stores:
            raise BlueprintError(f"blueprint {self.name!r} already has a data store {name!r}")
        self.data_stores[name] = as_data_store(initial)

    def _add(
        self,
        state: str,
        handler: Handler,
        is_start: bool,
        is_end: bool,
        condition: Condition | None,
    ) -> StateSpec:
        if not callable(handler):
            raise BlueprintError(
                f"blueprint {self.name!r}: the handler for {state!r} is not callable"
            )
        spec = self._states.setdefault(state, StateSpec(state))
        handler_spec = HandlerSpec(
            handler, HandlerSignature.of(handler), condition, never_suspends(handler)
        )
        if condition is None:
            if spec.default is not None:
                raise BlueprintError(
                    f"blueprint {self.name!r}: state {state!r} already has a default handler "
                    f"({spec.default.handler.__qualname__})"
                )
            spec.default = handler_spec
        else:
            spec.conditional.append(handler_spec)
        spec.is_start = spec.is_start or is_start
        spec.is_end = spec.is_end or is_end
        return spec

    def _declare_outcome(self, spec: StateSpec, outcome: str | None) -> None:
        # Conditional handlers of one end state may each repeat the outcome,
        # but must not contradict one another.
        if outcome is None:
            return
        if spec.outcome is not None and spec.outcome != outcome:
            raise BlueprintError(
                f"blueprint {self.name!r}: state {spec.name!r} declares outcome {outcome!r}, "
                f"but another of its handlers declared {spec.outcome!r}"
            )
        spec.outcome = outcome

    # -- reading --

    @property
    def states(self) -> dict[str, StateSpec]:
        """Every state, by name."""
        return dict(self._states)

    def state(self, name: str) -> StateSpec | None:
        """The state called ``name``, if there is one."""
        return self._states.get(name)

    @property
    def start_state(self) -> str:
        """The one start state (raises if the blueprint has none or several)."""
        starts = [s.name for s in self._states.values() if s.is_start]
        if len(starts) != 1:
            found = ", ".join(repr(s) for s in starts) or "none"
            raise BlueprintError(
                f"blueprint {self.name!r} needs exactly one start state, found {found}"
            )
        return starts[0]

    @property
    def end_states(self) -> list[str]:
        """The end states, in declaration order."""
        return [s.name for s in self._states.values() if s.is_end]

    @property
    def undeclared_end_states(self) -> list[str]:
        """End states whose outcome only 1.0b13's naming rule decides: named
        neither ``finished`` nor ``failed`` and declaring no outcome (they
        fail the job, which their name may not suggest)."""
        return [
            s.name
            for s in self._states.values()
            if s.is_end and s.outcome is None and s.name not in OUTCOMES
        ]

    @property
    def route(self) -> str | None:
        """The path under ``/api/`` that creates jobs, or None if internal."""
        if self.api_endpoint is None:
            return None
        if self.api_version is None:
            return self.api_endpoint
        return f"{self.api_version}/{self.api_endpoint}"

    def check_input(self, initial_data: Any) -> None:
        """Refuse ``initial_data`` that the blueprint's ``input_schema`` does
        not accept: :class:`InvalidArgument` naming the failing path, e.g.
        ``initial_data.items[2].qty: -1 is less than the minimum of 0``."""
        validator = self._validator()
        if validator is None:
            return
        error = best_match(validator.iter_errors(initial_data))
        if error is not None:
            message = error.message
            if len(message) > _MAX_MESSAGE:  # keep what it says of the value: its end
                message = message[: _MAX_MESSAGE // 2] + "…" + message[-_MAX_MESSAGE // 2 :]
            raise InvalidArgument(f"{_path(error)}: {message}")

    def _validator(self) -> Validator | None:
        """The checker of ``input_schema`` (None without one), made once."""
        if self.input_schema is None or self._input_validator is not None:
            return self._input_validator
        try:
            json.dumps(self.input_schema)
        except (TypeError, ValueError) as exc:
            raise BlueprintError(
                f"blueprint {self.name!r}: input_schema is not JSON: {exc}"
            ) from None
        cls = validator_for(self.input_schema)
        try:
            cls.check_schema(self.input_schema)
        except SchemaError as exc:
            where = "/".join(str(part) for part in exc.absolute_path) or "the root"
            raise BlueprintError(
                f"blueprint {self.name!r}: input_schema is not a valid JSON Schema "
                f"(at {where}): {exc.message}"
            ) from None
        self._input_validator = cls(self.input_schema)
        return self._input_validator

    def validate(self) -> None:
        """Check the blueprint can run; raises :class:`BlueprintError` naming
        the blueprint, the state and the problem (or what is wrong with its
        ``input_schema``)."""
        from avtomatika.blueprint.graph import check_transitions

        self._validator()
        _ = self.start_state
        if not self.end_states:
            raise BlueprintError(f"blueprint {self.name!r} has no end state")
        for spec in self._states.values():
            if spec.is_aggregator and (spec.conditional or spec.is_end):
                raise BlueprintError(
                    f"blueprint {self.name!r}: aggregator state {spec.name!r} cannot also be "
                    "an end state or have conditional handlers"
                )
        check_transitions(self)

    def __repr__(self) -> str:
        return f"<StateMachineBlueprint {self.name!r} {len(self._states)} states>"


Blueprint = StateMachineBlueprint


def _path(error: ValidationError) -> str:
    """Where in ``initial_data`` a validation error is:
    ``initial_data.items[2].qty`` (a key that is no identifier in brackets)."""
    return "initial_data" + "".join(_step(part) for part in error.absolute_path)


def _step(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    return f".{part}" if _IDENTIFIER.match(part) else f"[{json.dumps(part)}]"


def _normalise_path(name: str, what: str, value: str | None) -> str | None:
    """``/jobs/video/`` -> ``jobs/video``; None stays None."""
    if value is None:
        return None
    cleaned = value.strip("/") if isinstance(value, str) else ""
    if not cleaned or any(not _NAME.match(part) for part in cleaned.split("/")):
        raise BlueprintError(f"blueprint {name!r}: invalid {what} {value!r}")
    return cleaned
