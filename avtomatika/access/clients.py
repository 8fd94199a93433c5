"""``clients.toml``: the API clients, their tokens, plans, quotas and params.

One table per client; the table name is the client's id (what jobs record as
their owner, never the token)::

    [acme]
    token = "s3cret-acme"           # required: the X-Client-Token value
    plan = "premium"                # optional: handlers see client.plan
    monthly_attempts = 10000        # optional: jobs it may create per month (UTC)
    max_jobs_in_flight = 500        # optional: jobs not yet ended (CLIENT_MAX_JOBS_IN_FLIGHT)
    max_stored_bytes = 104857600    # optional: bytes of stored jobs (CLIENT_MAX_STORED_BYTES)
    params = { languages = ["en"] } # optional: handlers see client.params

The file is validated whole at start-up: a TOML syntax error, a missing or
empty token, a value of the wrong type or a token used twice raises
:class:`~avtomatika.errors.ConfigError` naming the file, the key and the
problem, and the orchestrator does not start.

Other top-level keys (1.0b13's documentation shows ``languages = [...]``
beside the token) are taken as params, so existing files keep working and
handlers finally see those values; ``[name.params]`` wins on a clash. A key
that looks like a misspelling of a known one (``monthy_attempts``) is refused
instead, so a typo can never silently lift a quota.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avtomatika.access.token_files import check_token, read_toml, type_name
from avtomatika.blueprint.context import ClientInfo
from avtomatika.errors import ConfigError

__all__ = ["RESERVED_CLIENT_IDS", "ClientConfig", "load_clients", "parse_clients"]

_KEYS = ("token", "plan", "monthly_attempts", "max_jobs_in_flight", "max_stored_bytes", "params")
_BOUNDS = ("max_jobs_in_flight", "max_stored_bytes")

RESERVED_CLIENT_IDS = frozenset({"default", "__background__"})
"""Ids taken by the ``CLIENT_TOKEN`` client and by jobs created in-process."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """One client: who it is (:attr:`info`), how it proves it, its quota."""

    info: ClientInfo
    token: str
    monthly_attempts: int | None = None
    max_jobs_in_flight: int | None = None
    """Its own bound (0: none), or None for ``CLIENT_MAX_JOBS_IN_FLIGHT``."""
    max_stored_bytes: int | None = None
    """Its own bound (0: none), or None for ``CLIENT_MAX_STORED_BYTES``."""

    def __repr__(self) -> str:  # never print the token
        return f"ClientConfig({self.info.id!r}, plan={self.info.plan!r})"


def load_clients(path: Path) -> list[ClientConfig]:
    """The clients defined in the TOML file at ``path``."""
    return parse_clients(read_toml(path), str(path))


def parse_clients(document: Mapping[str, Any], source: str) -> list[ClientConfig]:
    """Validate a parsed ``clients.toml`` (``source`` names it in errors)."""
    clients = [_client(source, client_id, table) for client_id, table in document.items()]
    _check_unique_tokens(source, clients)
    return clients


def _client(source: str, client_id: str, table: Any) -> ClientConfig:
    where = f"{source}: [{client_id}]"
    if not isinstance(table, dict):
        raise ConfigError(
            f"{source}: {client_id!r} must be a table ([{client_id}] with a token), "
            f"got {type_name(table)}"
        )
    if client_id in RESERVED_CLIENT_IDS:
        raise ConfigError(f"{where}: the client id {client_id!r} is reserved; choose another")
    extras = {key: value for key, value in table.items() if key not in _KEYS}
    for key in extras:
        close = difflib.get_close_matches(key, _KEYS, n=1, cutoff=0.8)
        if close:
            raise ConfigError(
                f"{where}: unknown key {key!r}; did you mean {close[0]!r}? (custom values "
                f"go under [{client_id}.params])"
            )
    token = check_token(where, table)
    plan = table.get("plan", "")
    if not isinstance(plan, str):
        raise ConfigError(f"{where}: key 'plan' must be a string, got {type_name(plan)}")
    quota = table.get("monthly_attempts")
    if quota is not None and (isinstance(quota, bool) or not isinstance(quota, int)):
        raise ConfigError(
            f"{where}: key 'monthly_attempts' must be an integer, got {type_name(quota)}"
        )
    if quota is not None and quota < 1:
        raise ConfigError(
            f"{where}: key 'monthly_attempts' must be at least 1 (leave it out for no quota), "
            f"got {quota}"
        )
    bounds = [_bound(where, table, key) for key in _BOUNDS]
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: key 'params' must be a table, got {type_name(params)}")
    merged = {**extras, **params}
    return ClientConfig(ClientInfo(id=client_id, plan=plan, params=merged), token, quota, *bounds)


def _bound(where: str, table: Mapping[str, Any], key: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"{where}: key {key!r} must be an integer >= 0 (0: no limit), got {value!r}"
        )
    return value


def _check_unique_tokens(source: str, clients: Iterable[ClientConfig]) -> None:
    owners: dict[str, str] = {}
    for client in clients:
        other = owners.setdefault(client.token, client.info.id)
        if other != client.info.id:
            raise ConfigError(
                f"{source}: [{client.info.id}]: key 'token' is the same as [{other}]'s; "
                "every client needs its own token"
            )
