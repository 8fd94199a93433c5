"""Reading a blueprint's transitions from its handlers' source: validation
(dangling and unreachable states) and the DOT graph.

Placeholder until the graph module lands: no transitions are checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avtomatika.blueprint import StateMachineBlueprint

__all__ = ["check_transitions"]


def check_transitions(blueprint: StateMachineBlueprint) -> None:
    """Raise :class:`BlueprintError` for a dangling or unreachable state."""
    return
