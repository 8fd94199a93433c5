"""Loading blueprints from ``BLUEPRINTS_DIR``: every ``*.py`` file, in sorted
order; every module-level :class:`StateMachineBlueprint` in it is registered.
A file that fails to import or register stops start-up, naming the file."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from avtomatika.blueprint.state_machine import StateMachineBlueprint
from avtomatika.errors import AvtomatikaError, ConfigError

__all__ = ["load_blueprints"]


def load_blueprints(
    directory: Path, register: Callable[[StateMachineBlueprint], None]
) -> list[StateMachineBlueprint]:
    """Import ``directory``'s Python files and ``register`` the blueprints they
    define; a file that fails to import, or whose blueprint fails to register,
    raises :class:`ConfigError` naming the file."""
    found: list[StateMachineBlueprint] = []
    for path in sorted(directory.glob("*.py")):
        for blueprint in _load_file(path):
            if any(blueprint is seen for seen in found):
                continue  # the same object under two names, or imported by a sibling
            try:
                register(blueprint)
            except AvtomatikaError as exc:
                raise ConfigError(f"blueprint file {path}: {exc.message}") from exc
            found.append(blueprint)
    return found


def _load_file(path: Path) -> list[StateMachineBlueprint]:
    # A name unique to the file, so two directories' "main.py" never collide.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"avtomatika_blueprints_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"blueprint file {path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"blueprint file {path}: {type(exc).__name__}: {exc}") from exc
    return [v for v in vars(module).values() if isinstance(v, StateMachineBlueprint)]
