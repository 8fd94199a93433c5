"""The Python client: create, follow and manage jobs of an Avtomatika
orchestrator over gRPC, asyncio-only.

::

    from avtomatika.client import Client

    async with Client("127.0.0.1:50051", token="my-client-token") as client:
        job_id = await client.create_job("jobs/echo", {"text": "hello"})
        async for change in client.follow(job_id):
            print(change.status, change.progress)
        job = await client.get_job(job_id)

Results are frozen dataclasses (:class:`JobView`, ...); every refused call
raises a :class:`ClientError` (see :mod:`avtomatika.client.errors` for the
tree). The client imports nothing of the server: only the contract
(``avtomatika.v1``), ``avtomatika.payload``, ``avtomatika.channel_tls`` and
grpc. Over TLS (and mutual TLS), pass
``tls=TlsFiles(ca_path=..., cert_path=..., key_path=...)`` or set
``AVTOMATIKA_TLS_CA`` (and ``AVTOMATIKA_TLS_CERT``, ``AVTOMATIKA_TLS_KEY``).
"""

from avtomatika.channel_tls import TlsFiles
from avtomatika.client.client import Client
from avtomatika.client.errors import (
    ClientError,
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RateLimited,
    ServerError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from avtomatika.client.views import (
    TERMINAL_STATUSES,
    ApprovalView,
    BlueprintView,
    Dashboard,
    HistoryEvent,
    JobEvent,
    JobView,
    UploadedFile,
    WorkerView,
)

__all__ = [
    "TERMINAL_STATUSES",
    "ApprovalView",
    "BlueprintView",
    "Client",
    "ClientError",
    "Conflict",
    "Dashboard",
    "DeadlineExceeded",
    "HistoryEvent",
    "InvalidArgument",
    "JobEvent",
    "JobView",
    "NotFound",
    "RateLimited",
    "ServerError",
    "TlsFiles",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UploadedFile",
    "WorkerView",
]
