"""The ``context`` handlers receive: everything about the job's current step."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from avtomatika.blueprint.actions import ActionFactory
from avtomatika.blueprint.task_files import TaskFiles

__all__ = ["ClientInfo", "DataStores", "JobContext"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The client that created the job: never its token, only its plan and params."""

    id: str
    plan: str = ""
    params: dict[str, Any] = field(default_factory=dict)


class DataStores(Mapping[str, Any]):
    """A blueprint's data stores, by attribute (``data_stores.cache``, as in
    1.0b13) or by key (``data_stores["cache"]``)."""

    __slots__ = ("_stores",)

    def __init__(self, stores: Mapping[str, Any]) -> None:
        self._stores = stores

    def __getattr__(self, name: str) -> Any:
        try:
            return self._stores[name]
        except KeyError:
            raise AttributeError(f"no data store named {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self._stores[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stores)

    def __len__(self) -> int:
        return len(self._stores)

    def __repr__(self) -> str:
        return f"DataStores({', '.join(self._stores)})"


@dataclass(slots=True)
class JobContext:
    """One step of a job, as its handler sees it.

    ``state_history`` is live: what the handler writes into it is saved with
    the step.
    """

    job_id: str
    current_state: str
    initial_data: dict[str, Any]
    state_history: dict[str, Any]
    client: ClientInfo
    actions: ActionFactory
    data_stores: DataStores = field(default_factory=lambda: DataStores({}))
    tracing_context: dict[str, str] = field(default_factory=dict)
    aggregation_results: dict[str, Any] | None = None
    webhook_url: str | None = None
    task_files: TaskFiles | None = None
