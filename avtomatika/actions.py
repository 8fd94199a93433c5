"""What a handler can decide: the ``actions`` object and the decisions it records.

A handler makes exactly one decision per run; a second one is a bug in the
blueprint and raises :class:`~avtomatika.errors.BlueprintError` at once, so the
author sees which call was one too many.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from avtomatika.errors import BlueprintError

__all__ = ["Action", "ActionFactory", "DispatchTask", "TransitionTo"]


@dataclass(frozen=True, slots=True)
class TransitionTo:
    """Move the job to another state and run its handler."""

    state: str


@dataclass(frozen=True, slots=True)
class DispatchTask:
    """Queue a task for a worker; its result picks the next state."""

    task_type: str
    params: dict[str, Any]
    transitions: dict[str, str]
    dispatch_strategy: str = "default"
    resource_requirements: dict[str, Any] | None = None
    timeout_seconds: float | None = None
    dispatch_timeout_seconds: float | None = None
    result_timeout_seconds: float | None = None
    max_cost: float | None = None
    priority: float = 0.0
    tracing_context: dict[str, str] = field(default_factory=dict)


Action = TransitionTo | DispatchTask


class ActionFactory:
    """Passed to handlers as ``actions``; records the handler's one decision."""

    __slots__ = ("_action",)

    def __init__(self) -> None:
        self._action: Action | None = None

    @property
    def action(self) -> Action | None:
        """The decision taken, if any."""
        return self._action

    def transition_to(self, state: str) -> None:
        """Go to ``state`` next."""
        if not isinstance(state, str) or not state:
            raise BlueprintError(f"transition_to() needs a state name, got {state!r}")
        self._set(TransitionTo(state))

    def dispatch_task(
        self,
        task_type: str,
        params: dict[str, Any] | None = None,
        transitions: dict[str, str] | None = None,
        dispatch_strategy: str = "default",
        resource_requirements: dict[str, Any] | None = None,
        timeout_seconds: float | None = None,
        dispatch_timeout_seconds: float | None = None,
        result_timeout_seconds: float | None = None,
        max_cost: float | None = None,
        priority: float = 0.0,
    ) -> None:
        """Send a ``task_type`` task to a worker; the worker's result status
        (``success`` when absent) picks the next state from ``transitions``."""
        if not isinstance(task_type, str) or not task_type:
            raise BlueprintError(f"dispatch_task() needs a task_type, got {task_type!r}")
        if params is not None and not isinstance(params, dict):
            raise BlueprintError("dispatch_task() params must be a dict")
        if not transitions or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in transitions.items()
        ):
            raise BlueprintError(
                "dispatch_task() needs transitions, a dict of result status -> state"
            )
        self._set(
            DispatchTask(
                task_type=task_type,
                params=dict(params or {}),
                transitions=dict(transitions),
                dispatch_strategy=dispatch_strategy,
                resource_requirements=resource_requirements,
                timeout_seconds=timeout_seconds,
                dispatch_timeout_seconds=dispatch_timeout_seconds,
                result_timeout_seconds=result_timeout_seconds,
                max_cost=max_cost,
                priority=float(priority),
            )
        )

    def _set(self, action: Action) -> None:
        if self._action is not None:
            raise BlueprintError(
                f"a handler takes exactly one action; it already chose {self._action!r}"
            )
        self._action = action
