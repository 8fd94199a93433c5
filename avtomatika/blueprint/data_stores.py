"""Blueprint data stores: shared state handlers reach as ``data_stores[name]``.

A dict given to ``StateMachineBlueprint(data_stores=...)`` or
``add_data_store`` becomes an :class:`AsyncDictStore` (``await get/set``), the
1.0b13 API; any other object (a Redis client, an HTTP client) is handed to
handlers as it is. The stores live in this process: with several orchestrator
instances, each has its own copy, so use a shared service for shared state.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["AsyncDictStore", "as_data_store"]


class AsyncDictStore:
    """An in-process key-value store with an async interface."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        # A deep copy: the blueprint's literal is not mutated behind its back.
        self._data: dict[str, Any] = copy.deepcopy(initial) if initial else {}

    async def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        return self._data.get(key, default)

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``."""
        self._data[key] = value

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self._data.pop(key, None)

    async def keys(self) -> list[str]:
        """Every key."""
        return list(self._data)

    def __repr__(self) -> str:
        return f"<AsyncDictStore {len(self._data)} keys>"


def as_data_store(value: Any) -> Any:
    """Dicts become :class:`AsyncDictStore`; anything else passes through."""
    return AsyncDictStore(value) if isinstance(value, dict) else value
