"""Blueprints: state machines written in Python.

A blueprint maps state names to async handlers. The start handler runs when a
job is created; each handler decides what happens next through ``actions``;
reaching an end state (and running its handler) finishes the job.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from avtomatika.errors import BlueprintError
from avtomatika.injection import HandlerSignature

__all__ = ["Blueprint", "Handler", "StateMachineBlueprint", "StateSpec"]

Handler = Callable[..., Awaitable[Any]]
_H = TypeVar("_H", bound=Handler)

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_VERSION = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class StateSpec:
    """One state of a blueprint and its handler."""

    name: str
    handler: Handler
    signature: HandlerSignature
    is_start: bool
    is_end: bool


class StateMachineBlueprint:
    """A named state machine; jobs of it are created over
    ``POST /api/{api_version}/{api_endpoint}``.

    >>> bp = StateMachineBlueprint("echo", api_endpoint="/jobs/echo", api_version="v1")
    >>> @bp.handler_for("start", is_start=True)
    ... async def start(actions):
    ...     actions.transition_to("done")
    """

    def __init__(
        self,
        name: str,
        api_endpoint: str | None = None,
        api_version: str | None = None,
        data_stores: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise BlueprintError(f"blueprint name {name!r} must match {_NAME.pattern}")
        self.name = name
        self.api_endpoint = _normalise_endpoint(name, api_endpoint)
        self.api_version = api_version or "v1"
        if not _VERSION.match(self.api_version):
            raise BlueprintError(
                f"blueprint {name!r}: api_version {self.api_version!r} must match "
                f"{_VERSION.pattern}"
            )
        self.data_stores: dict[str, Any] = dict(data_stores or {})
        self._states: dict[str, StateSpec] = {}

    def handler_for(
        self, state: str, is_start: bool = False, is_end: bool = False
    ) -> Callable[[_H], _H]:
        """Register the decorated coroutine function as the handler of ``state``."""

        def register(handler: _H) -> _H:
            if not isinstance(state, str) or not state:
                raise BlueprintError(f"blueprint {self.name!r}: a state needs a name")
            if state in self._states:
                raise BlueprintError(
                    f"blueprint {self.name!r}: state {state!r} already has a handler"
                )
            if not callable(handler):
                raise BlueprintError(
                    f"blueprint {self.name!r}: handler for {state!r} is not callable"
                )
            self._states[state] = StateSpec(
                name=state,
                handler=handler,
                signature=HandlerSignature.of(handler),
                is_start=is_start,
                is_end=is_end,
            )
            return handler

        return register

    def add_data_store(self, name: str, initial: Any) -> None:
        """Share ``initial`` with every handler as ``data_stores[name]``."""
        self.data_stores[name] = initial

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

    def validate(self) -> None:
        """Check the blueprint can run; raises :class:`BlueprintError` if not."""
        _ = self.start_state
        if not any(s.is_end for s in self._states.values()):
            raise BlueprintError(f"blueprint {self.name!r} has no end state")

    def __repr__(self) -> str:
        return f"<StateMachineBlueprint {self.name!r} {len(self._states)} states>"


Blueprint = StateMachineBlueprint


def _normalise_endpoint(name: str, endpoint: str | None) -> str:
    """``/jobs/video/`` -> ``jobs/video``; no endpoint -> ``jobs/<name>``."""
    value = (endpoint if endpoint is not None else f"jobs/{name}").strip("/")
    if not value or any(not _NAME.match(part) for part in value.split("/")):
        raise BlueprintError(f"blueprint {name!r}: invalid api_endpoint {endpoint!r}")
    return value
