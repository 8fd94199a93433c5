"""``workers.toml``: per-worker tokens (``WORKERS_CONFIG_PATH``).

One table per worker; the table name is the worker id it must register
under::

    [gpu-box-1]
    token = "s3cret-gpu-box-1"      # required: the X-Worker-Token value

A worker listed here must present its own token, and that token is good for
that worker id only; ``GLOBAL_WORKER_TOKEN`` (if set) still admits workers
that are not listed. The file is validated whole at start-up: a TOML syntax
error, a bad worker id, a missing, empty or non-string token, an unknown key
or a token used twice raises :class:`~avtomatika.errors.ConfigError` naming
the file, the key and the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avtomatika.access.token_files import check_token, read_toml, type_name
from avtomatika.errors import ConfigError
from avtomatika.ids import WORKER_ID_PATTERN, worker_id_problem

__all__ = ["load_worker_tokens", "parse_worker_tokens"]


def load_worker_tokens(path: Path) -> dict[str, str]:
    """Tokens by worker id from the TOML file at ``path``."""
    return parse_worker_tokens(read_toml(path), str(path))


def parse_worker_tokens(document: Mapping[str, Any], source: str) -> dict[str, str]:
    """Validate a parsed ``workers.toml`` (``source`` names it in errors)."""
    tokens: dict[str, str] = {}
    owners: dict[str, str] = {}
    for worker_id, table in document.items():
        token = _token(source, worker_id, table)
        other = owners.setdefault(token, worker_id)
        if other != worker_id:
            raise ConfigError(
                f"{source}: [{worker_id}]: key 'token' is the same as [{other}]'s; "
                "every worker needs its own token"
            )
        tokens[worker_id] = token
    return tokens


def _token(source: str, worker_id: str, table: Any) -> str:
    where = f"{source}: [{worker_id}]"
    if not isinstance(table, dict):
        raise ConfigError(
            f"{source}: {worker_id!r} must be a table ([{worker_id}] with a token), "
            f"got {type_name(table)}"
        )
    if worker_id_problem(worker_id) is not None:
        raise ConfigError(f"{where}: the worker id must match {WORKER_ID_PATTERN}")
    unknown = sorted(set(table) - {"token"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (only 'token' is allowed)")
    return check_token(where, table)
