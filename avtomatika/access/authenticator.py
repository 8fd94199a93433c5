"""Token checks for clients and workers, in constant time.

Clients: those of ``clients.toml`` (``CLIENTS_CONFIG_PATH``, see
:mod:`avtomatika.access.clients`) and the ``CLIENT_TOKEN`` default client, side by
side. Workers: the per-worker tokens of ``workers.toml``
(``WORKERS_CONFIG_PATH``, see :mod:`avtomatika.access.worker_tokens`), each good for
its own worker id only, and ``GLOBAL_WORKER_TOKEN`` for the workers not listed
there. With ``TLS_BIND_WORKER_IDENTITY`` a worker must also present a client
certificate naming its id (:meth:`Authenticator.certificate_may_claim`).

Only SHA-256 digests of client tokens are kept. A presented token is hashed
once and compared with every digest using :func:`hmac.compare_digest`, without
stopping at a match, so neither which client matched nor how much of a token
was right shows in the response time.
"""

from __future__ import annotations

import hashlib
import hmac

from avtomatika.access.clients import ClientConfig, load_clients
from avtomatika.access.worker_tokens import load_worker_tokens
from avtomatika.blueprint.context import ClientInfo
from avtomatika.config import Settings
from avtomatika.errors import ConfigError
from avtomatika.storage.base import ClientBounds

__all__ = ["DEFAULT_CLIENT_ID", "Authenticator"]

DEFAULT_CLIENT_ID = "default"
"""The id of the client that authenticates with ``CLIENT_TOKEN``."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    """Maps presented tokens to identities. Raises
    :class:`~avtomatika.errors.ConfigError` for an invalid ``clients.toml``."""

    def __init__(self, settings: Settings) -> None:
        configured: list[ClientConfig] = []
        if settings.clients_config_path is not None:
            configured = load_clients(settings.clients_config_path)
        if settings.client_token:
            default = ClientConfig(
                ClientInfo(id=DEFAULT_CLIENT_ID, plan="default"), settings.client_token
            )
            for client in configured:
                if hmac.compare_digest(_digest(client.token), _digest(default.token)):
                    raise ConfigError(
                        f"{settings.clients_config_path}: [{client.info.id}]: key 'token' is "
                        "the same as CLIENT_TOKEN; every client needs its own token"
                    )
            configured.append(default)
        self._clients = [(_digest(c.token), c.info) for c in configured]
        self._quotas = {
            c.info.id: c.monthly_attempts for c in configured if c.monthly_attempts is not None
        }
        self._bounds = {
            c.info.id: ClientBounds(
                settings.client_max_jobs_in_flight
                if c.max_jobs_in_flight is None
                else c.max_jobs_in_flight,
                settings.client_max_stored_bytes
                if c.max_stored_bytes is None
                else c.max_stored_bytes,
            )
            for c in configured
            if c.max_jobs_in_flight is not None or c.max_stored_bytes is not None
        }
        self._worker_token = (settings.global_worker_token or "").encode()
        per_worker: dict[str, str] = {}
        if settings.workers_config_path is not None:
            per_worker = load_worker_tokens(settings.workers_config_path)
        for worker_id, token in per_worker.items():
            if settings.global_worker_token and hmac.compare_digest(
                _digest(token), _digest(settings.global_worker_token)
            ):
                raise ConfigError(
                    f"{settings.workers_config_path}: [{worker_id}]: key 'token' is the same as "
                    "GLOBAL_WORKER_TOKEN; every listed worker needs its own token"
                )
        self._workers = [(_digest(token), worker_id) for worker_id, token in per_worker.items()]
        self._bind_identity = settings.tls_bind_worker_identity

    @property
    def clients(self) -> list[ClientInfo]:
        """Every configured client."""
        return [client for _, client in self._clients]

    @property
    def monthly_quotas(self) -> dict[str, int]:
        """``monthly_attempts`` by client id, for the clients that have one."""
        return dict(self._quotas)

    @property
    def client_bounds(self) -> dict[str, ClientBounds]:
        """Bounds by client id, for the clients whose table sets its own."""
        return dict(self._bounds)

    def client(self, token: str | None) -> ClientInfo | None:
        """The client owning ``token``, or None."""
        if not token:
            return None
        presented = _digest(token)
        found = None
        for expected, client in self._clients:
            if hmac.compare_digest(presented, expected):
                found = client
        return found

    def worker(self, token: str | None) -> bool:
        """Whether ``token`` is a valid worker token (global or per-worker)."""
        return self._is_global_worker_token(token) or self.worker_id_for_token(token) is not None

    def worker_id_for_token(self, token: str | None) -> str | None:
        """The worker id whose ``workers.toml`` token ``token`` is, or None
        (the global token and invalid tokens name no worker)."""
        if not token or not self._workers:
            return None
        presented = _digest(token)
        found = None
        for expected, worker_id in self._workers:
            if hmac.compare_digest(presented, expected):
                found = worker_id
        return found

    def worker_may_claim(self, token: str | None, worker_id: str) -> bool:
        """Whether ``token`` may act as ``worker_id``: its own per-worker
        token, or the global token for a worker ``workers.toml`` does not
        list."""
        owner = self.worker_id_for_token(token)
        if owner is not None:
            return owner == worker_id
        listed = any(listed_id == worker_id for _, listed_id in self._workers)
        return not listed and self._is_global_worker_token(token)

    def certificate_may_claim(self, names: frozenset[str], worker_id: str) -> bool:
        """Whether a connection whose client certificate has ``names`` (its
        common name and DNS alternative names, see
        :mod:`avtomatika.access.peer`) may act as ``worker_id``: always,
        unless ``TLS_BIND_WORKER_IDENTITY``, then only when one of them is
        ``worker_id``. It comes on top of the token's check, never instead."""
        return not self._bind_identity or worker_id in names

    def _is_global_worker_token(self, token: str | None) -> bool:
        if not token or not self._worker_token:
            return False
        return hmac.compare_digest(token.encode(), self._worker_token)
