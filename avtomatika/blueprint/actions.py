"""What a handler can decide: the ``actions`` object and the decisions it records.

A handler makes exactly one decision per run; a second one is a bug in the
blueprint and raises :class:`~avtomatika.errors.BlueprintError` at once, so the
author sees which call was one too many.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avtomatika.dispatch import STRATEGIES, Requirements
from avtomatika.errors import BlueprintError

__all__ = [
    "Action",
    "ActionFactory",
    "AwaitApproval",
    "DispatchParallel",
    "DispatchTask",
    "RunBlueprint",
    "TransitionTo",
]


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


@dataclass(frozen=True, slots=True)
class DispatchParallel:
    """Queue several tasks at once; ``aggregate_into``'s aggregator runs once
    every one of them has ended."""

    tasks: tuple[DispatchTask, ...]
    aggregate_into: str


@dataclass(frozen=True, slots=True)
class AwaitApproval:
    """Wait for a decision on the approval webhook; the decision names the
    transition."""

    integration: str
    message: str
    transitions: dict[str, str]
    timeout: float | None = None
    """Seconds to wait before taking the ``timeout`` transition; None: forever."""


@dataclass(frozen=True, slots=True)
class RunBlueprint:
    """Run a child job of another blueprint; its outcome (``success``,
    ``failure``, ``cancelled``) names the transition."""

    blueprint_name: str
    initial_data: dict[str, Any]
    transitions: dict[str, str]
    dispatch_timeout: float | None = None
    result_timeout: float | None = None


Action = TransitionTo | DispatchTask | DispatchParallel | AwaitApproval | RunBlueprint

_TASK_KEYS = frozenset(
    {
        "type",
        "task_type",
        "params",
        "transitions",
        "dispatch_strategy",
        "resource_requirements",
        "timeout_seconds",
        "dispatch_timeout_seconds",
        "result_timeout_seconds",
        "max_cost",
        "priority",
    }
)


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
        self._set(TransitionTo(_name("transition_to", "state", state)))

    def dispatch_task(
        self,
        task_type: str,
        params: Mapping[str, Any] | None = None,
        transitions: Mapping[str, str] | None = None,
        dispatch_strategy: str = "default",
        resource_requirements: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
        dispatch_timeout_seconds: float | None = None,
        result_timeout_seconds: float | None = None,
        max_cost: float | None = None,
        priority: float = 0.0,
    ) -> None:
        """Send a ``task_type`` task to a worker; the worker's result status
        (``success`` when absent) picks the next state from ``transitions``.
        A ``timeout`` transition, if given, is taken when a deadline passes."""
        self._set(
            _task(
                "dispatch_task",
                task_type=task_type,
                params=params,
                transitions=_transitions("dispatch_task", transitions),
                dispatch_strategy=dispatch_strategy,
                resource_requirements=resource_requirements,
                timeout_seconds=timeout_seconds,
                dispatch_timeout_seconds=dispatch_timeout_seconds,
                result_timeout_seconds=result_timeout_seconds,
                max_cost=max_cost,
                priority=priority,
            )
        )

    def dispatch_parallel(self, tasks: Sequence[Mapping[str, Any]], aggregate_into: str) -> None:
        """Send every task of ``tasks`` at once (each a dict of
        ``dispatch_task``'s arguments, with ``type`` or ``task_type``); the
        aggregator of ``aggregate_into`` runs once all have ended, with
        ``aggregation_results`` mapping each task id to its full result."""
        target = _name("dispatch_parallel", "aggregate_into", aggregate_into)
        if isinstance(tasks, str | bytes | Mapping) or not isinstance(tasks, Sequence):
            raise BlueprintError("dispatch_parallel() tasks must be a list of dicts")
        branches = []
        for n, item in enumerate(tasks):
            if not isinstance(item, Mapping):
                raise BlueprintError(f"dispatch_parallel() task #{n} must be a dict")
            unknown = set(item) - _TASK_KEYS
            if unknown:
                raise BlueprintError(
                    f"dispatch_parallel() task #{n} has unknown keys: {', '.join(sorted(unknown))}"
                )
            options = {k: v for k, v in item.items() if k not in ("type", "task_type")}
            options["transitions"] = dict(options.get("transitions") or {})
            branches.append(
                _task(
                    f"dispatch_parallel() task #{n}",
                    task_type=item.get("type", item.get("task_type")),
                    **options,
                )
            )
        self._set(DispatchParallel(tuple(branches), target))

    def await_human_approval(
        self,
        integration: str,
        message: str,
        transitions: Mapping[str, str],
        timeout: float | None = None,
    ) -> None:
        """Wait in ``waiting_for_human`` for a decision, a key of
        ``transitions``: the owner's ``POST /api/v1/jobs/{job_id}/approve``
        or ``POST /_public/webhooks/approval/{job_id}``. With ``timeout``
        (seconds), ``transitions`` must have a ``"timeout"`` key, the
        transition taken when nobody decides in time (and then not a
        decision anyone may make)."""
        checked = _transitions("await_human_approval", transitions)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise BlueprintError("await_human_approval() timeout must be a number of seconds")
            if not 0 < timeout < float("inf"):
                raise BlueprintError("await_human_approval() timeout must be positive and finite")
            if "timeout" not in checked:
                raise BlueprintError(
                    "await_human_approval() with a timeout needs a 'timeout' transition: the "
                    "state to go to when nobody decides in time"
                )
        self._set(
            AwaitApproval(
                integration=str(integration),
                message=str(message),
                transitions=checked,
                timeout=None if timeout is None else float(timeout),
            )
        )

    def run_blueprint(
        self,
        blueprint_name: str,
        initial_data: Mapping[str, Any] | None,
        transitions: Mapping[str, str],
        dispatch_timeout: float | None = None,
        result_timeout: float | None = None,
    ) -> None:
        """Start a child job of ``blueprint_name`` and wait for it; its
        outcome (``success``, ``failure`` or ``cancelled``) picks the
        transition, and its result appears in ``state_history`` as
        ``sub_job_<child id>_result``."""
        if initial_data is not None and not isinstance(initial_data, Mapping):
            raise BlueprintError("run_blueprint() initial_data must be a dict")
        self._set(
            RunBlueprint(
                blueprint_name=_name("run_blueprint", "blueprint_name", blueprint_name),
                initial_data=dict(initial_data or {}),
                transitions=_transitions("run_blueprint", transitions),
                dispatch_timeout=_seconds("run_blueprint", "dispatch_timeout", dispatch_timeout),
                result_timeout=_seconds("run_blueprint", "result_timeout", result_timeout),
            )
        )

    def _set(self, action: Action) -> None:
        if self._action is not None:
            raise BlueprintError(
                f"a handler takes exactly one action; it already chose {self._action!r}"
            )
        self._action = action


def _name(call: str, what: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BlueprintError(f"{call}() needs {what} as a non-empty string, got {value!r}")
    return value


def _transitions(call: str, transitions: Mapping[str, str] | None) -> dict[str, str]:
    if not isinstance(transitions, Mapping) or not transitions:
        raise BlueprintError(f"{call}() needs transitions, a dict of outcome -> state")
    for key, value in transitions.items():
        if not isinstance(key, str) or not isinstance(value, str) or not value:
            raise BlueprintError(f"{call}() transitions must map strings to state names")
    return dict(transitions)


def _seconds(call: str, what: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise BlueprintError(f"{call}() {what} must be a positive number of seconds")
    return float(value)


def _task(
    call: str,
    *,
    task_type: Any,
    params: Mapping[str, Any] | None = None,
    transitions: dict[str, str],
    dispatch_strategy: str = "default",
    resource_requirements: Mapping[str, Any] | None = None,
    timeout_seconds: float | None = None,
    dispatch_timeout_seconds: float | None = None,
    result_timeout_seconds: float | None = None,
    max_cost: float | None = None,
    priority: float = 0.0,
) -> DispatchTask:
    if params is not None and not isinstance(params, Mapping):
        raise BlueprintError(f"{call}: params must be a dict")
    if resource_requirements is not None and not isinstance(resource_requirements, Mapping):
        raise BlueprintError(f"{call}: resource_requirements must be a dict")
    if isinstance(priority, bool) or not isinstance(priority, int | float):
        raise BlueprintError(f"{call}: priority must be a number")
    if max_cost is not None and (
        isinstance(max_cost, bool) or not isinstance(max_cost, int | float)
    ):
        raise BlueprintError(f"{call}: max_cost must be a number")
    if dispatch_strategy not in STRATEGIES:
        raise BlueprintError(
            f"{call}: dispatch_strategy must be one of {', '.join(sorted(STRATEGIES))}, "
            f"not {dispatch_strategy!r}"
        )
    try:
        if resource_requirements:
            Requirements.parse(resource_requirements)
    except ValueError as exc:
        raise BlueprintError(f"{call}: {exc}") from exc
    return DispatchTask(
        task_type=_name(call, "a task type", task_type),
        params=dict(params or {}),
        transitions=transitions,
        dispatch_strategy=str(dispatch_strategy),
        resource_requirements=dict(resource_requirements) if resource_requirements else None,
        timeout_seconds=_seconds(call, "timeout_seconds", timeout_seconds),
        dispatch_timeout_seconds=_seconds(
            call, "dispatch_timeout_seconds", dispatch_timeout_seconds
        ),
        result_timeout_seconds=_seconds(call, "result_timeout_seconds", result_timeout_seconds),
        max_cost=None if max_cost is None else float(max_cost),
        priority=float(priority),
    )
