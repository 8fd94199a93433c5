"""What ``clients.toml`` and ``workers.toml`` share: reading the file and
checking a table's token, with errors naming the file, the key and the
problem."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from avtomatika.errors import ConfigError

__all__ = ["check_token", "read_toml", "type_name"]


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed document; :class:`ConfigError` if unreadable or not TOML."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def check_token(where: str, table: dict[str, Any]) -> str:
    """The table's ``token``: present, a non-empty string an HTTP header or
    gRPC metadata can carry."""
    token = table.get("token")
    if token is None:
        raise ConfigError(f"{where}: key 'token' is missing")
    if not isinstance(token, str):
        raise ConfigError(f"{where}: key 'token' must be a string, got {type_name(token)}")
    if not token:
        raise ConfigError(f"{where}: key 'token' is empty")
    if token != token.strip() or not token.isprintable():
        raise ConfigError(
            f"{where}: key 'token' has surrounding spaces or control characters, so no "
            "header could carry it"
        )
    return token


def type_name(value: Any) -> str:
    """A TOML reader's name for the type of ``value``."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)
