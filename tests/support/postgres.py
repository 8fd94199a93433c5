"""A throwaway PostgreSQL database on the local server, for one test session.

The server at 127.0.0.1:5432 (trust authentication, user ``postgres`` or
``root``) gets a fresh, uniquely named database, dropped at the end. Without a
reachable server the tests that need it are skipped, with the way to enable
them; under ``CI=true`` they fail instead, so CI cannot go green by skipping.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest

HOST = os.environ.get("AVTOMATIKA_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("AVTOMATIKA_TEST_PG_PORT", "5432"))
_T = TypeVar("_T")
_USERS = ("postgres", "root")
_HOW_TO_ENABLE = (
    f"no PostgreSQL server accepts connections at {HOST}:{PORT} as user postgres or root "
    "with trust authentication; start one (e.g. `pg_ctlcluster 15 main start`) to run "
    "these tests (AVTOMATIKA_TEST_PG_HOST / AVTOMATIKA_TEST_PG_PORT pick another server)"
)


async def _admin_connection() -> asyncpg.Connection:
    errors = []
    for user in _USERS:
        try:
            return await asyncpg.connect(
                host=HOST, port=PORT, user=user, database="postgres", timeout=5
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            errors.append(f"{user}: {exc}")
    raise ConnectionError("; ".join(errors))


async def _create(name: str) -> str:
    connection = await _admin_connection()
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        user = await connection.fetchval("SELECT current_user")
    finally:
        await connection.close()
    return f"postgresql://{user}@{HOST}:{PORT}/{name}"


async def _drop(name: str) -> None:
    connection = await _admin_connection()
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of a fresh database for this test session."""
    name = f"avtomatika_test_{uuid.uuid4().hex[:12]}"
    # Set up and torn down outside any test's event loop: only the DSN
    # crosses into the tests.
    try:
        dsn = _run(_create(name))
    except ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{_HOW_TO_ENABLE} ({exc}); CI=true requires PostgreSQL")
        pytest.skip(f"{_HOW_TO_ENABLE} ({exc})")
    yield dsn
    _run(_drop(name))


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    # A private loop: asyncio.run() would reset the thread's current loop,
    # which pytest-asyncio may have set for the tests.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()
