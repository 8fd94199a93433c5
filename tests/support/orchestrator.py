"""A real orchestrator for a test (aiohttp and grpc.aio on port 0, in the
test's event loop), and the clients that talk to it: the fixture factories
that ``conftest.py`` registers, their types for the tests' signatures, and
the settings every test orchestrator starts from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from ssl import SSLContext
from typing import Any

import aiohttp
import grpc
import pytest

from avtomatika import OrchestratorEngine, Settings, StateMachineBlueprint
from tests.support.stores import REDIS
from tests.support.tokens import CLIENT_TOKEN, WORKER_TOKEN

StartOrchestrator = Callable[..., Awaitable[OrchestratorEngine]]
"""``await start_orchestrator(blueprints, **settings)``."""
HttpClient = Callable[..., aiohttp.ClientSession]
"""``http_client(orchestrator, token=CLIENT_TOKEN, ssl=None)``."""
GrpcChannel = Callable[..., grpc.aio.Channel]
"""``grpc_channel(orchestrator, credentials=None)``."""


OTHER_CLIENT_TOKEN = "other-client-token-0123456789"
"""The token of client ``other``, known to an orchestrator started with
:func:`with_other_client`'s settings."""


def with_other_client(tmp_path: Path) -> dict[str, Any]:
    """Settings adding a second client, ``other`` (:data:`OTHER_CLIENT_TOKEN`),
    besides the default one: for what one client must never see of another's."""
    clients = tmp_path / "clients.toml"
    clients.write_text(f'[other]\ntoken = "{OTHER_CLIENT_TOKEN}"\n')
    return {"clients_config_path": clients}


def make_settings(**overrides: Any) -> Settings:
    """The settings of a test orchestrator: loopback, ports chosen by the
    OS, the test tokens, fast retries; ``overrides`` on top."""
    base: dict[str, Any] = {
        "api_host": "127.0.0.1",
        "api_port": 0,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "client_token": CLIENT_TOKEN,
        "global_worker_token": WORKER_TOKEN,
        "shutdown_grace_seconds": 0.5,
        # Retries back off for milliseconds, not seconds: tests stay fast.
        "retry_backoff_base_seconds": 0.01,
        "retry_backoff_max_seconds": 0.05,
        # A worker that leaves gives its tasks back at once; the tests of the
        # reconnect grace period set it.
        "worker_reconnect_grace_seconds": 0,
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
async def start_orchestrator(
    request: pytest.FixtureRequest, store: str
) -> AsyncIterator[StartOrchestrator]:
    """Factory: start an orchestrator with the given blueprints and settings.

    On the ``redis`` :func:`~tests.support.stores.store` every such
    orchestrator shares the session's Redis server (emptied for the test)
    instead of the embedded store, unless the test gives a ``redis_url``
    itself."""
    started: list[OrchestratorEngine] = []

    async def start(
        blueprints: Iterable[StateMachineBlueprint] = (), **settings: Any
    ) -> OrchestratorEngine:
        if store == REDIS and "redis_url" not in settings:
            if not started:
                request.getfixturevalue("redis_url")  # empties it for this test
            settings["redis_url"] = request.getfixturevalue("redis_server").url
        orchestrator = OrchestratorEngine(config=make_settings(**settings), blueprints=blueprints)
        await orchestrator.start()
        started.append(orchestrator)
        return orchestrator

    yield start
    for orchestrator in reversed(started):
        await orchestrator.stop()


def rest_url(orchestrator: OrchestratorEngine, *, tls: bool = False) -> str:
    """The base URL of an orchestrator's REST port (``https`` with ``tls``)."""
    return f"{'https' if tls else 'http'}://127.0.0.1:{orchestrator.rest_port}"


@pytest.fixture
async def http_client() -> AsyncIterator[HttpClient]:
    """Factory: an aiohttp session on an orchestrator's REST port."""
    sessions: list[aiohttp.ClientSession] = []

    def connect(
        orchestrator: OrchestratorEngine,
        token: str | None = CLIENT_TOKEN,
        *,
        ssl: SSLContext | None = None,
    ) -> aiohttp.ClientSession:
        """``ssl``: HTTPS with this context (see :mod:`tests.support.tls`)."""
        headers = {"X-Client-Token": token} if token is not None else {}
        session = aiohttp.ClientSession(
            rest_url(orchestrator, tls=ssl is not None),
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=ssl if ssl is not None else True),
        )
        sessions.append(session)
        return session

    yield connect
    for session in sessions:
        await session.close()


@pytest.fixture
async def grpc_channel() -> AsyncIterator[GrpcChannel]:
    """Factory: a gRPC channel to an orchestrator; over TLS with
    ``credentials``."""
    channels: list[grpc.aio.Channel] = []

    def connect(
        orchestrator: OrchestratorEngine, credentials: grpc.ChannelCredentials | None = None
    ) -> grpc.aio.Channel:
        address = f"127.0.0.1:{orchestrator.grpc_port}"
        if credentials is None:
            channel = grpc.aio.insecure_channel(address)
        else:
            channel = grpc.aio.secure_channel(address, credentials)
        channels.append(channel)
        return channel

    yield connect
    for channel in channels:
        await channel.close(grace=None)
