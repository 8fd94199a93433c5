"""Token checks for clients and workers, in constant time.

Clients: the ``CLIENT_TOKEN`` default client (``clients.toml`` arrives with the
client API issue). Workers: ``GLOBAL_WORKER_TOKEN``.
"""

from __future__ import annotations

import hmac

from avtomatika.config import Settings
from avtomatika.context import ClientInfo

__all__ = ["DEFAULT_CLIENT_ID", "Authenticator"]

DEFAULT_CLIENT_ID = "default"
"""The id of the client that authenticates with ``CLIENT_TOKEN``."""


class Authenticator:
    """Maps presented tokens to identities."""

    def __init__(self, settings: Settings) -> None:
        self._clients: list[tuple[bytes, ClientInfo]] = []
        if settings.client_token:
            self._clients.append(
                (settings.client_token.encode(), ClientInfo(id=DEFAULT_CLIENT_ID, plan="default"))
            )
        self._worker_token = (settings.global_worker_token or "").encode()

    @property
    def clients(self) -> list[ClientInfo]:
        """Every configured client."""
        return [client for _, client in self._clients]

    def client(self, token: str | None) -> ClientInfo | None:
        """The client owning ``token``, or None."""
        if not token:
            return None
        presented = token.encode()
        found = None
        # Compare against every token so timing does not reveal which matched.
        for expected, client in self._clients:
            if hmac.compare_digest(presented, expected):
                found = client
        return found

    def worker(self, token: str | None) -> bool:
        """Whether ``token`` is a valid worker token."""
        if not token or not self._worker_token:
            return False
        return hmac.compare_digest(token.encode(), self._worker_token)
