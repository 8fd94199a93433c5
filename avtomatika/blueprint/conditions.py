"""Conditions of conditional handlers: ``@bp.handler_for("route").when(...)``.

A condition compares one field of the job's context with a literal::

    context.initial_data.priority == 'urgent'
    context.state_history.score >= 0.8
    context.initial_data.options.retry != True

Fields are ``context.<area>.<key>[.<key>...]`` where the area is
``initial_data`` or ``state_history``; operators are ``== != > < >= <=``;
literals are integers, floats, quoted strings, ``True``, ``False`` and
``None``. A missing field, or values that cannot be compared, make the
condition false rather than failing the job. Conditions are parsed when the
blueprint is defined, so a malformed one is reported at once; nothing is ever
``eval``-ed.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from avtomatika.errors import BlueprintError

__all__ = ["AREAS", "Condition"]

AREAS = ("initial_data", "state_history")

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_SYNTAX = re.compile(
    r"^\s*context\.(?P<path>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)\s*"
    r"(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>.+?)\s*$"
)


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; :meth:`matches` evaluates it against a context."""

    text: str
    area: str
    keys: tuple[str, ...]
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Parse ``text``; :class:`BlueprintError` explains what is wrong."""
        if not isinstance(text, str):
            raise BlueprintError(f"a condition must be a string, got {text!r}")
        match = _SYNTAX.match(text)
        if match is None:
            raise BlueprintError(
                f"condition {text!r} must look like "
                '"context.<area>.<field> <op> <value>" with <op> one of '
                f"{' '.join(_OPERATORS)}"
            )
        area, *keys = match["path"].split(".")
        if area not in AREAS:
            raise BlueprintError(
                f"condition {text!r}: the area must be one of {', '.join(AREAS)}, not {area!r}"
            )
        return cls(text, area, tuple(keys), match["op"], _literal(text, match["value"]))

    def matches(self, areas: Mapping[str, Any]) -> bool:
        """Whether the condition holds for ``areas`` (area name -> its data)."""
        current: Any = areas.get(self.area)
        for key in self.keys:
            if not isinstance(current, Mapping) or key not in current:
                return False
            current = current[key]
        try:
            return bool(_OPERATORS[self.op](current, self.value))
        except TypeError:
            return False


def _literal(text: str, raw: str) -> Any:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise BlueprintError(
            f"condition {text!r}: {raw!r} is not a literal (a number, a quoted string, "
            "True, False or None)"
        ) from None
    if value is not None and not isinstance(value, str | int | float | bool):
        raise BlueprintError(
            f"condition {text!r}: {raw!r} must be a number, a string, True, False or None"
        )
    return value
