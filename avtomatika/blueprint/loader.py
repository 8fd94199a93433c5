"""Loading blueprints from ``BLUEPRINTS_DIR``: every ``*.py`` file, in sorted
order; every module-level :class:`StateMachineBlueprint` in it is registered.
A file that fails to import or register stops start-up, naming the file."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from avtomatika.blueprint.state_machine import StateMachineBlueprint
from avtomatika.errors import AvtomatikaError, ConfigError

__all__ = ["Loaded", "load_blueprints", "load_each"]


@dataclass(frozen=True, slots=True)
class Loaded:
    """What became of one blueprint of a directory, or of one file:
    ``blueprint`` registered when ``error`` is None; otherwise ``error``
    names the file, and ``blueprint`` is the one refused (None when the file
    itself failed to import)."""

    path: Path
    blueprint: StateMachineBlueprint | None
    error: ConfigError | None = None


def load_blueprints(
    directory: Path, register: Callable[[StateMachineBlueprint], None]
) -> list[StateMachineBlueprint]:
    """Import ``directory``'s Python files and ``register`` the blueprints they
    define; a file that fails to import, or whose blueprint fails to register,
    raises :class:`ConfigError` naming the file (and no later file is read)."""
    found: list[StateMachineBlueprint] = []
    for loaded in load_each(directory, register):
        if loaded.error is not None:
            raise loaded.error
        if loaded.blueprint is not None:
            found.append(loaded.blueprint)
    return found


def load_each(
    directory: Path, register: Callable[[StateMachineBlueprint], None]
) -> Iterator[Loaded]:
    """:func:`load_blueprints` one outcome at a time, going on past a failure
    when asked for the next (``avtomatika blueprints check`` reports every
    file and blueprint this way)."""
    seen: list[StateMachineBlueprint] = []
    for path in sorted(directory.glob("*.py")):
        try:
            blueprints = _load_file(path)
        except ConfigError as exc:
            yield Loaded(path, None, exc)
            continue
        for blueprint in blueprints:
            if any(blueprint is other for other in seen):
                continue  # the same object under two names, or imported by a sibling
            seen.append(blueprint)
            try:
                register(blueprint)
            except AvtomatikaError as exc:
                error = ConfigError(f"blueprint file {path}: {exc.message}")
                error.__cause__ = exc
                yield Loaded(path, blueprint, error)
                continue
            yield Loaded(path, blueprint)


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
