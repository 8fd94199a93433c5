"""The blueprint API: state machines written in Python (1.0b13's API).

- :mod:`.state_machine`: :class:`StateMachineBlueprint` and its decorators;
- :mod:`.actions`: what a handler decides (``actions``);
- :mod:`.context`: the ``context`` a handler receives;
- :mod:`.injection`: handler arguments chosen by parameter name;
- :mod:`.conditions`: ``.when(...)`` conditions of conditional handlers;
- :mod:`.graph`: transitions read from the handlers' code, checked at
  registration and drawn as DOT;
- :mod:`.loader`: blueprints loaded from ``BLUEPRINTS_DIR``;
- :mod:`.data_stores` and :mod:`.task_files`: what handlers reach besides
  their job.

Nothing here knows about jobs in storage or transports: the engine runs
blueprints, blueprints only describe.
"""

from avtomatika.blueprint.state_machine import Blueprint, StateMachineBlueprint

__all__ = ["Blueprint", "StateMachineBlueprint"]
