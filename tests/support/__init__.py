"""Everything the tests share, by concept; fixtures among it are registered
in ``tests/conftest.py``.

- ``orchestrator``: a real orchestrator on port 0 and clients for it (the
  ``start_orchestrator``, ``http_client`` and ``grpc_channel`` fixtures),
  the test tokens, :func:`~tests.support.orchestrator.make_settings`;
- ``client_api``: the client API behind one interface over REST or gRPC
  (the ``connect_api`` fixture), for scenarios run over both;
- ``stores``: which store a test runs on (the ``both_stores`` marker and the
  ``store`` fixture);
- ``waiting``: :func:`~tests.support.waiting.wait_until`, a condition polled
  with a deadline, instead of sleeping;
- ``jobs``: a job over the REST client API, and waiting for its status;
- ``raw_worker``: a gRPC worker driven message by message;
  ``rest_worker``: a legacy REST worker driven request by request;
  ``sdk``: the Python SDK's worker for the length of a block;
  ``pypi_sdk``: the public SDK ``avtomatika-worker`` from PyPI (1.0b7,
  1.0b20) as a worker process (the ``pypi_sdks`` fixture);
  ``sdk_releases``: those releases' test worker scripts and settings, and
  the factory that starts their workers;
- ``blueprints``: small blueprints several tests share;
- ``storage``: the storage contract driven directly (and Redis instances
  behind a proxy that loses replies);
- ``follow``, ``history``, ``limits``, ``webhooks``: one feature each, seen
  from a client;
- ``serve`` (``avtomatika serve`` as a process), ``cluster_workers`` (worker
  processes: ``python -m tests.support.cluster_workers``);
- the servers the tests start: ``redis`` (redis-server), ``postgres`` (a
  throwaway database), ``s3`` (moto's S3 emulator), ``net`` (free ports);
  ``tls`` a self-signed certificate for them.

The names below are the ones nearly every test uses, importable from here.
"""

from tests.support.jobs import (
    TERMINAL_STATUSES,
    create_job,
    get_job,
    wait_for,
    wait_for_status,
    wait_for_terminal,
)
from tests.support.raw_worker import RawWorker, custom, failure, hello_request, success
from tests.support.storage import claim_one
from tests.support.tokens import CLIENT_TOKEN, WORKER_TOKEN
from tests.support.waiting import cancelled, wait_until

__all__ = [
    "CLIENT_TOKEN",
    "TERMINAL_STATUSES",
    "WORKER_TOKEN",
    "RawWorker",
    "cancelled",
    "claim_one",
    "create_job",
    "custom",
    "failure",
    "get_job",
    "hello_request",
    "success",
    "wait_for",
    "wait_for_status",
    "wait_for_terminal",
    "wait_until",
]
