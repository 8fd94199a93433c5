"""Webhooks to a real receiver on 127.0.0.1: the body and signature, retries
with backoff, giving up, and the SSRF guard at job creation and at delivery.
Every outcome shows in the job's history.

The receiver listens on loopback, so tests that expect a delivery set
``webhook_allow_private=True``; those that test the guard leave it off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from avtomatika.history import open_sink
from avtomatika.v1.task_pb2 import ErrorCode
from avtomatika.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from avtomatika.webhooks.addresses import literal_address, non_public_kind
from tests.support import RawWorker, get_job, wait_for_status
from tests.support.blueprints import echo_blueprint, instant_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator, make_settings
from tests.support.waiting import wait_until
from tests.support.webhooks import FAST_RETRIES, Receiver, create_job_with_webhook

SECRET = "webhook-secret"


async def webhook_outcome(http: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
    """The job's webhook_delivered or webhook_failed history event, once written."""

    async def outcome() -> dict[str, Any] | None:
        response = await http.get(f"/api/v1/jobs/{job_id}/history")
        events = await response.json()
        assert response.status == 200, events
        for item in events:
            if item["type"] in ("webhook_delivered", "webhook_failed"):
                assert isinstance(item, dict)
                return item
        return None

    return await wait_until(outcome)


Run = Callable[..., Awaitable[tuple[aiohttp.ClientSession, str]]]


@pytest.fixture
def run_instant_job(start_orchestrator: StartOrchestrator, http_client: HttpClient) -> Run:
    """Start an orchestrator with ``settings`` and a job that ends at once
    with ``webhook_url``: (client session, job id)."""

    async def run(url: str, **settings: Any) -> tuple[aiohttp.ClientSession, str]:
        orchestrator = await start_orchestrator([instant_blueprint()], **settings)
        http = http_client(orchestrator)
        return http, await create_job_with_webhook(http, "jobs/instant", url)

    return run


async def test_a_finished_job_is_posted_with_a_verifiable_signature(
    receiver: Receiver,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], webhook_secret=SECRET, **FAST_RETRIES
    )
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job_with_webhook(http, "jobs/echo", receiver.url, {"n": 7})
    await worker.succeed(await worker.next_task(), {"answer": 42, "big": 12345678901234567})

    request = await receiver.next()

    assert request.json() == {
        "event": "job_finished",
        "job_id": job_id,
        "status": "finished",
        "result": {"answer": 42, "big": 12345678901234567},
        "error": None,
    }
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Avtomatika-Event"] == "job_finished"
    timestamp, signature = request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER]
    assert signature == sign(SECRET, timestamp, request.body)
    assert signature.startswith("sha256=")
    assert verify(SECRET, timestamp, request.body, signature)
    assert not verify("another-secret", timestamp, request.body, signature)
    assert not verify(SECRET, timestamp, request.body + b" ", signature)
    assert not verify(SECRET, str(int(timestamp) - 3600), request.body, signature)

    outcome = await webhook_outcome(http, job_id)
    assert outcome["type"] == "webhook_delivered"
    assert outcome["details"] == {
        "event": "job_finished",
        "delivery_id": request.headers["X-Avtomatika-Delivery"],
        "attempts": 1,
        "status_code": 200,
    }
    assert orchestrator.webhooks.delivered == 1


async def test_without_a_secret_nothing_is_signed(receiver: Receiver, run_instant_job: Run) -> None:
    await run_instant_job(receiver.url, **FAST_RETRIES)
    request = await receiver.next()
    assert SIGNATURE_HEADER not in request.headers
    assert request.json()["event"] == "job_finished"


async def test_server_errors_are_retried_until_delivered(
    receiver: Receiver, run_instant_job: Run
) -> None:
    receiver.statuses = [500, 503, 429]
    http, job_id = await run_instant_job(receiver.url, **FAST_RETRIES)

    outcome = await webhook_outcome(http, job_id)

    assert outcome["type"] == "webhook_delivered"
    assert outcome["details"]["attempts"] == 4
    assert len(receiver.requests) == 4
    deliveries = {r.headers["X-Avtomatika-Delivery"] for r in receiver.requests}
    assert len(deliveries) == 1  # one delivery, so the receiver can drop duplicates


async def test_delivery_gives_up_after_the_last_attempt(
    receiver: Receiver, run_instant_job: Run
) -> None:
    receiver.statuses = [500] * 10
    http, job_id = await run_instant_job(receiver.url, webhook_max_attempts=3, **FAST_RETRIES)

    outcome = await webhook_outcome(http, job_id)

    assert outcome["type"] == "webhook_failed"
    assert outcome["message"] == "job_finished not delivered after 3 attempts: HTTP 500"
    assert (outcome["details"]["attempts"], outcome["details"]["status_code"]) == (3, 500)
    assert len(receiver.requests) == 3


@pytest.mark.parametrize("status", [410, 302])
async def test_a_client_error_or_a_redirect_is_not_retried(
    status: int, receiver: Receiver, run_instant_job: Run
) -> None:
    receiver.statuses = [status]
    http, job_id = await run_instant_job(receiver.url, **FAST_RETRIES)

    outcome = await webhook_outcome(http, job_id)

    assert outcome["type"] == "webhook_failed"
    assert outcome["details"] == {
        "event": "job_finished",
        "delivery_id": receiver.requests[0].headers["X-Avtomatika-Delivery"],
        "attempts": 1,
        "status_code": status,
    }
    assert len(receiver.requests) == 1


async def test_failed_and_cancelled_jobs_are_reported_as_such(
    receiver: Receiver,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], **FAST_RETRIES)
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    failed = await create_job_with_webhook(http, "jobs/echo", receiver.url)
    await worker.fail(await worker.next_task(), ErrorCode.ERROR_CODE_INVALID_INPUT, "not a video")
    first = (await receiver.next()).json()
    cancelled = await create_job_with_webhook(http, "jobs/echo", receiver.url)
    await worker.credit()
    await worker.next_task()
    assert (await http.post(f"/api/v1/jobs/{cancelled}/cancel")).status == 200
    second = (await receiver.next()).json()

    assert (first["event"], first["job_id"], first["status"]) == ("job_failed", failed, "failed")
    assert first["error"] == (await get_job(http, failed))["error"]
    assert "not a video" in first["error"]
    assert (second["event"], second["job_id"], second["status"]) == (
        "job_cancelled",
        cancelled,
        "cancelled",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/",
        "http://[::1]:9000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00::1]/hook",
        "http://224.0.0.1/",
        "http://100.64.0.1/",
    ],
)
async def test_a_literal_private_address_is_refused_at_creation(
    url: str, start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([instant_blueprint()])
    http = http_client(orchestrator)

    response = await http.post(
        "/api/v1/jobs/instant", json={"initial_data": {}, "webhook_url": url}
    )

    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith("webhook_url points to ")
    assert "WEBHOOK_ALLOW_PRIVATE" in error


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/hook", "http or https"),
        ("http:///hook", "http or https"),
        ("http://example.com:99999/hook", "port"),
        ("http://exa mple.com/hook", "spaces"),
    ],
)
async def test_a_malformed_webhook_url_is_refused_at_creation(
    url: str, problem: str, start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([instant_blueprint()])
    response = await http_client(orchestrator).post(
        "/api/v1/jobs/instant", json={"initial_data": {}, "webhook_url": url}
    )
    assert response.status == 400
    assert problem in (await response.json())["error"]


async def test_a_public_literal_address_is_accepted_at_creation(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    # The job waits for a worker that never comes: nothing is ever sent.
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_id = await create_job_with_webhook(http, "jobs/echo", "https://93.184.216.34/hook")
    await wait_for_status(http, job_id, "waiting_for_worker")


async def test_a_host_name_resolving_to_loopback_is_refused_at_delivery(
    receiver: Receiver, run_instant_job: Run
) -> None:
    url = receiver.url.replace("127.0.0.1", "localhost")
    http, job_id = await run_instant_job(url)  # WEBHOOK_ALLOW_PRIVATE is off

    outcome = await webhook_outcome(http, job_id)

    assert outcome["type"] == "webhook_failed"
    assert outcome["message"].startswith("job_finished not delivered after 1 attempt: localhost")
    assert "loopback address" in outcome["message"]
    assert outcome["details"]["attempts"] == 1
    assert receiver.requests == []


async def test_a_delivery_pending_at_shutdown_is_recorded_as_failed(
    receiver: Receiver,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'history.db'}"
    receiver.statuses = [500] * 10
    orchestrator = await start_orchestrator(
        [instant_blueprint()],
        redis_url=None,  # the embedded store's outbox; Redis keeps them (test_redis_webhooks)
        history_database_uri=uri,
        webhook_allow_private=True,
        webhook_backoff_base_seconds=60,  # the retry would come long after the stop
    )
    job_id = await create_job_with_webhook(http_client(orchestrator), "jobs/instant", receiver.url)
    await receiver.next()
    await orchestrator.stop()

    sink = await open_sink(make_settings(history_database_uri=uri))
    try:
        events = await sink.list_for_job(job_id)
    finally:
        await sink.close()
    assert events[-1].message.startswith("job_finished not delivered after 1 attempt")
    assert "stop" in events[-1].message
    assert orchestrator.webhooks.failed == 1


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "private"),
        ("100.64.0.1", "non-public"),
        ("192.0.2.1", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_which_addresses_are_public(address: str, kind: str | None) -> None:
    parsed = literal_address(address)
    assert parsed is not None
    assert non_public_kind(parsed) == kind


def test_host_names_are_not_literal_addresses() -> None:
    assert literal_address("localhost") is None
    assert literal_address("example.com") is None
    assert literal_address("[::1]") is not None
