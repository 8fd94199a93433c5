"""Which store a test's orchestrators run on.

A test module marked ``both_stores`` (``pytestmark =
pytest.mark.both_stores``) runs each of its tests that starts an
orchestrator twice, once per store, with the store in the test id
(``test_x[memory]``, ``test_x[redis]``): the engine's behaviour on the
embedded store and on shared state in Redis (a redis-server the tests start).
Every other test runs on the embedded store.

``AVTOMATIKA_TEST_STORE=redis`` runs every test on Redis instead (the whole
suite on the Redis backend; the marked tests then run once, on Redis).
"""

from __future__ import annotations

import os

import pytest

MEMORY = "memory"
REDIS = "redis"
STORES = (MEMORY, REDIS)

MARKER = "both_stores"
MARKER_HELP = f"{MARKER}: run the test once per store ({', '.join(STORES)}), see tests/support"

_ENVIRONMENT = "AVTOMATIKA_TEST_STORE"


def default_store() -> str:
    """The store of unmarked tests: ``AVTOMATIKA_TEST_STORE``, or memory."""
    chosen = os.environ.get(_ENVIRONMENT, MEMORY)
    if chosen not in STORES:
        raise pytest.UsageError(f"{_ENVIRONMENT}={chosen!r}: expected one of {STORES}")
    return chosen


def parametrize(metafunc: pytest.Metafunc) -> None:
    """Run a marked test once per store (called from ``pytest_generate_tests``).

    Only tests that depend on :func:`store` (through ``start_orchestrator``)
    are repeated: a test that starts no orchestrator would run twice alike."""
    if metafunc.definition.get_closest_marker(MARKER) is None:
        return
    if "store" not in metafunc.fixturenames:
        return
    chosen = default_store()
    metafunc.parametrize("store", STORES if chosen == MEMORY else (chosen,), indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """The store this test's orchestrators run on: ``"memory"`` or ``"redis"``."""
    chosen: str = getattr(request, "param", None) or default_store()
    return chosen
