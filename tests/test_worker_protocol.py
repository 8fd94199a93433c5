"""The worker stream's protocol beyond the basics: per-worker tokens from
``workers.toml``, a second stream replacing the first, the reconnect grace
period, drain in both directions, cancel acknowledgements and TLS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from avtomatika import OrchestratorEngine, Settings
from avtomatika.access.authenticator import Authenticator
from avtomatika.errors import ConfigError
from avtomatika.v1.task_pb2 import TaskResult
from avtomatika.v1.worker_pb2 import WorkerRegistration, WorkerStatus
from avtomatika.v1.worker_service_pb2 import CancelAck, ConnectRequest, Drain, Hello
from avtomatika.worker import ConnectionSettings, TaskContext, Worker
from tests.support import (
    WORKER_TOKEN,
    RawWorker,
    create_job,
    get_job,
    wait_for,
    wait_for_status,
)
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator, make_settings
from tests.support.tls import client_context, self_signed

# -- workers.toml --

WORKERS_TOML = """
[gpu-1]
token = "gpu-1-secret"

[gpu-2]
token = "gpu-2-secret"
"""


@pytest.fixture
def workers_toml(tmp_path: Path) -> Path:
    path = tmp_path / "workers.toml"
    path.write_text(WORKERS_TOML)
    return path


@pytest.mark.parametrize(
    ("worker_id", "token", "admitted"),
    [
        ("gpu-1", "gpu-1-secret", True),
        ("gpu-2", "gpu-1-secret", False),  # another worker's token
        ("gpu-1", WORKER_TOKEN, False),  # a listed worker must use its own token
        ("cpu-9", WORKER_TOKEN, True),  # the global token still admits the others
        ("cpu-9", "gpu-1-secret", False),
    ],
)
async def test_a_per_worker_token_is_good_for_its_own_worker_id_only(
    start_orchestrator: StartOrchestrator,
    grpc_channel: GrpcChannel,
    workers_toml: Path,
    worker_id: str,
    token: str,
    admitted: bool,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], workers_config_path=workers_toml)
    worker = RawWorker(grpc_channel(orchestrator), worker_id, token=token)
    if admitted:
        assert (await worker.hello(["echo"])).welcome.worker_id == worker_id
        await worker.close()
    else:
        registration = WorkerRegistration(worker_id=worker_id, skills=["echo"])
        await worker.send(ConnectRequest(hello=Hello(registration=registration, initial_credits=1)))
        assert await worker.call.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("worker_id", "token", "status"),
    [("gpu-1", "gpu-1-secret", 200), ("gpu-1", "wrong", 401), ("cpu-9", WORKER_TOKEN, 200)],
)
async def test_rest_workers_present_per_worker_tokens_too(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    workers_toml: Path,
    worker_id: str,
    token: str,
    status: int,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], workers_config_path=workers_toml)
    http = http_client(orchestrator, token=None)
    body = {"worker_id": worker_id, "supported_skills": ["echo"]}
    headers = {"X-Worker-Token": token}
    response = await http.post("/_worker/workers/register", json=body, headers=headers)
    assert response.status == status, await response.text()


def test_the_authenticator_names_the_worker_of_a_token(workers_toml: Path) -> None:
    auth = Authenticator(make_settings(workers_config_path=workers_toml))
    assert auth.worker_id_for_token("gpu-2-secret") == "gpu-2"
    assert auth.worker_id_for_token(WORKER_TOKEN) is None
    assert auth.worker_id_for_token("nope") is None
    assert auth.worker("gpu-2-secret")
    assert auth.worker(WORKER_TOKEN)
    assert not auth.worker("nope")
    assert not auth.worker(None)
    assert auth.worker_may_claim("gpu-2-secret", "gpu-2")
    assert not auth.worker_may_claim("gpu-2-secret", "gpu-1")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[gpu-1\ntoken = 'x'", "not valid TOML"),
        ("[gpu-1]\n", "[gpu-1]: key 'token' is missing"),
        ("[gpu-1]\ntoken = ''", "[gpu-1]: key 'token' is empty"),
        ("[gpu-1]\ntoken = 7", "[gpu-1]: key 'token' must be a string"),
        ("[gpu-1]\ntoken = 'x'\ntokn = 'y'", "[gpu-1]: unknown key 'tokn'"),
        ("['bad id']\ntoken = 'x'", "the worker id must match"),
        ("gpu-1 = 'x'", "'gpu-1' must be a table"),
        ("[a]\ntoken = 'x'\n[b]\ntoken = 'x'", "[b]: key 'token' is the same as [a]'s"),
        (f"[a]\ntoken = '{WORKER_TOKEN}'", "same as GLOBAL_WORKER_TOKEN"),
    ],
)
def test_a_bad_workers_toml_stops_start_up_naming_file_key_and_problem(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "workers.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Authenticator(make_settings(workers_config_path=path))
    assert str(path) in str(caught.value)
    assert complaint in str(caught.value)


# -- one stream per worker id --


async def test_a_second_stream_replaces_the_first_and_takes_over_its_leases(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    first = RawWorker(grpc_channel(orchestrator), "w-1")
    await first.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    task = await first.next_task()

    second = RawWorker(grpc_channel(orchestrator), "w-1")
    await second.hello(["echo"], credits=0)

    # The first stream is told to drain, then closed; its end re-queues nothing.
    assert "replaced" in (await first.expect("drain")).drain.reason
    assert await first.receive() is None
    assert (await get_job(http, job_id))["retry_count"] == 0
    assert [w.active_task_ids for w in orchestrator.engine.workers.list()] == [[task.task_id]]

    assert (await second.succeed(task, {"via": "second"})).result_ack.accepted
    job = await wait_for_status(http, job_id, "finished")
    assert (job["retry_count"], job["state_history"]) == (0, {"via": "second"})


# -- reconnect grace --


@pytest.mark.parametrize("leaves", ["hangs up", "goes silent"])
async def test_a_worker_back_within_the_grace_period_keeps_its_lease(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    leaves: str,
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()],
        worker_reconnect_grace_seconds=30,
        worker_heartbeat_interval_seconds=0.1 if leaves == "goes silent" else 10,
    )
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    before = RawWorker(grpc_channel(orchestrator), "w-1")
    await before.hello(["echo"])
    task = await before.next_task()
    if leaves == "hangs up":
        await before.close()
    assert await before.receive() is None  # silence: the server ends the stream
    assert orchestrator.engine.workers.list() == []
    assert await orchestrator.engine.storage.queue_depths() == {}

    after = RawWorker(grpc_channel(orchestrator), "w-1")
    await after.hello(["echo"], credits=0)
    assert (await after.succeed(task, {"kept": True})).result_ack.accepted
    job = await wait_for_status(http, job_id, "finished")
    assert (job["retry_count"], job["state_history"]) == (0, {"kept": True})


async def test_after_the_grace_period_the_task_is_requeued_and_a_late_result_ignored(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], worker_reconnect_grace_seconds=0.2)
    http = http_client(orchestrator)
    leaver = RawWorker(grpc_channel(orchestrator), "w-1")
    await leaver.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    task = await leaver.next_task()
    await leaver.close()
    assert await leaver.receive() is None

    job = await wait_for(http, job_id, lambda job: job["retry_count"] == 1)
    assert job["status"] == "waiting_for_worker"
    back = RawWorker(grpc_channel(orchestrator), "w-1")
    await back.hello(["echo"], credits=0)
    assert not (await back.succeed(task, None)).result_ack.accepted
    await back.credit()
    retry = await back.next_task()
    assert (retry.job_id, retry.attempt) == (job_id, 2)


# -- drain --


async def test_the_server_can_drain_a_worker(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    drained = RawWorker(grpc_channel(orchestrator), "drained")
    await drained.hello(["echo"], credits=5)
    assert orchestrator.engine.drain_worker("drained", "rolling restart")
    assert (await drained.expect("drain")).drain.reason == "rolling restart"
    assert not orchestrator.engine.drain_worker("nobody")

    job_id = await create_job(http, "jobs/echo")
    other = RawWorker(grpc_channel(orchestrator), "other")
    await other.hello(["echo"])
    assert (await other.next_task()).job_id == job_id
    assert _status(orchestrator, "drained") == WorkerStatus.WORKER_STATUS_DRAINING


def _status(orchestrator: OrchestratorEngine, worker_id: str) -> int:
    statuses = {w.registration.worker_id: w.status for w in orchestrator.engine.workers.list()}
    return statuses[worker_id]


async def test_a_worker_that_announces_a_drain_gets_no_more_tasks(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    leaving = RawWorker(grpc_channel(orchestrator), "leaving")
    await leaving.hello(["echo"], credits=5)
    await leaving.send(ConnectRequest(drain=Drain(reason="deploy")))
    # The server handles a stream's messages in order: once it acks a later
    # (bogus) result, it has seen the Drain.
    assert not (await leaving.report(TaskResult(task_id="none"))).result_ack.accepted
    assert _status(orchestrator, "leaving") == WorkerStatus.WORKER_STATUS_DRAINING
    job_id = await create_job(http, "jobs/echo")
    await wait_for_status(http, job_id, "waiting_for_worker")
    other = RawWorker(grpc_channel(orchestrator), "other")
    await other.hello(["echo"])
    assert (await other.next_task()).job_id == job_id


async def test_shutdown_drains_every_stream_before_closing_it(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    stopping = asyncio.create_task(orchestrator.stop())
    assert "shutting down" in (await worker.expect("drain")).drain.reason
    await worker.close()
    await stopping


# -- cancel --


async def test_a_cancel_carries_a_reason_and_its_ack_delay_is_measured(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    acked: asyncio.Queue[float] = asyncio.Queue()
    orchestrator.engine.workers.cancel_acked.subscribe(acked.put_nowait)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    job_id = await create_job(http, "jobs/echo")
    task = await worker.next_task()

    response = await http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert (await response.json())["status"] == "cancellation_request_sent"
    cancel = (await worker.expect("cancel")).cancel
    assert (cancel.task_id, cancel.job_id) == (task.task_id, job_id)
    assert cancel.reason
    await worker.send(ConnectRequest(cancel_ack=CancelAck(task_id=task.task_id)))

    assert await acked.get() >= 0
    metrics = await (await http.get("/_public/metrics")).text()
    assert "avtomatika_cancel_ack_seconds_count 1.0" in metrics


# -- TLS --


async def test_with_a_certificate_the_grpc_port_serves_tls(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    orchestrator = await start_orchestrator(
        [echo_blueprint()], tls_cert_path=cert, tls_key_path=key
    )
    http = http_client(orchestrator, ssl=client_context(cert))  # REST is HTTPS too
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    worker = Worker(
        worker_id="tls-1",
        addresses=[f"localhost:{orchestrator.grpc_port}"],
        token=WORKER_TOKEN,
        settings=ConnectionSettings(credentials=credentials),
    )

    @worker.skill("echo")
    async def echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        return {"echoed": params}

    run = asyncio.create_task(worker.run())
    try:
        job_id = await create_job(http, "jobs/echo", {"secure": True})
        job = await wait_for_status(http, job_id, "finished")
        assert job["state_history"] == {"echoed": {"secure": True}}
    finally:
        await worker.stop(grace_seconds=0)
        await run


def test_tls_needs_both_the_certificate_and_the_key(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    with pytest.raises(ConfigError, match="TLS_CERT_PATH and TLS_KEY_PATH"):
        Settings(tls_cert_path=cert)
