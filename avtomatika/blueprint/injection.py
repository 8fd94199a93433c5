"""Handler arguments chosen by parameter name, as the 1.0b13 blueprint API does."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from avtomatika.blueprint.context import JobContext
from avtomatika.errors import BlueprintError

__all__ = ["HandlerSignature", "InjectionError", "build_arguments"]

# Names resolved from the context itself, before state history and initial data.
_CONTEXT_NAMES = (
    "actions",
    "job_id",
    "current_state",
    "initial_data",
    "state_history",
    "client",
    "data_stores",
    "task_files",
    "aggregation_results",
    "tracing_context",
    "webhook_url",
)


class InjectionError(BlueprintError):
    """A handler asks for a parameter nothing can provide."""


@dataclass(frozen=True, slots=True)
class HandlerSignature:
    """The parameters of a handler, read once at registration."""

    required: tuple[str, ...]
    optional: tuple[str, ...]

    @classmethod
    def of(cls, handler: Callable[..., Any]) -> HandlerSignature:
        required: list[str] = []
        optional: list[str] = []
        for param in inspect.signature(handler).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if param.kind is param.POSITIONAL_ONLY:
                raise BlueprintError(
                    f"handler {handler.__qualname__} has positional-only parameter "
                    f"{param.name!r}; handlers receive arguments by name"
                )
            (required if param.default is param.empty else optional).append(param.name)
        return cls(tuple(required), tuple(optional))


def build_arguments(signature: HandlerSignature, context: JobContext) -> dict[str, Any]:
    """Keyword arguments for a handler, or :class:`InjectionError` naming the
    first required parameter that cannot be provided."""
    arguments: dict[str, Any] = {}
    for name in signature.required:
        found, value = _lookup(name, context)
        if not found:
            raise InjectionError(
                f"cannot provide parameter {name!r} of the handler for state "
                f"{context.current_state!r}: it is not a context name nor a key of "
                "state_history or initial_data"
            )
        arguments[name] = value
    for name in signature.optional:
        found, value = _lookup(name, context)
        if found:
            arguments[name] = value
    return arguments


def _lookup(name: str, context: JobContext) -> tuple[bool, Any]:
    if name == "context":
        return True, context
    if name in _CONTEXT_NAMES:
        return True, getattr(context, name)
    for source in (context.state_history, context.initial_data):
        if isinstance(source, Mapping) and name in source:
            return True, source[name]
    return False, None
