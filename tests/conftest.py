"""The fixtures every test module can use, registered from the support
package (``tests/support/``, where each is defined next to the helpers of
its concept), and the ``both_stores`` marker."""

from __future__ import annotations

import pytest

from tests.support import stores
from tests.support.client_api import connect_api as connect_api
from tests.support.orchestrator import grpc_channel as grpc_channel
from tests.support.orchestrator import http_client as http_client
from tests.support.orchestrator import start_orchestrator as start_orchestrator
from tests.support.postgres import postgres_dsn as postgres_dsn
from tests.support.pypi_sdk import pypi_sdks as pypi_sdks
from tests.support.redis import raw as raw
from tests.support.redis import redis_server as redis_server
from tests.support.redis import redis_url as redis_url
from tests.support.rest_worker import rest_worker as rest_worker
from tests.support.s3 import s3_emulator as s3_emulator
from tests.support.storage import dropping as dropping
from tests.support.storage import open_storage as open_storage
from tests.support.stores import store as store
from tests.support.webhooks import receiver as receiver


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", stores.MARKER_HELP)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    stores.parametrize(metafunc)
