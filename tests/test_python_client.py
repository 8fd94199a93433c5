"""The Python client (``avtomatika.client``) against a real orchestrator on
port 0, with real workers: every use case as a user would write it, the
errors as its exception classes, and an import that loads no server."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import grpc
import pytest

import avtomatika.client
from avtomatika import OrchestratorEngine
from avtomatika.client import (
    Client,
    ClientError,
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    JobEvent,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    _wire,
)
from avtomatika.v1 import job_pb2
from avtomatika.worker import TaskContext
from tests.support import CLIENT_TOKEN, RawWorker, wait_until
from tests.support.blueprints import approval_blueprint, echo_blueprint, instant_blueprint
from tests.support.net import free_port
from tests.support.orchestrator import GrpcChannel, StartOrchestrator
from tests.support.s3 import S3Emulator, unique_bucket
from tests.support.sdk import serving
from tests.support.tls import self_signed

pytestmark = pytest.mark.both_stores

ROOT = Path(__file__).resolve().parent.parent
ACME, GLOBEX = "acme-token-0123456789", "globex-token-0123456789"

ClientFor = Callable[..., Client]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFor]:
    """Factory: a :class:`Client` of an orchestrator, closed after the test."""
    clients: list[Client] = []

    def connect(orchestrator: OrchestratorEngine, token: str = CLIENT_TOKEN) -> Client:
        client = Client(f"127.0.0.1:{orchestrator.grpc_port}", token)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


async def echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
    await task.report_progress(0.5, "half way")
    return {"echoed": params["n"]}


async def test_a_job_created_followed_to_its_end_and_waited_for(
    start_orchestrator: StartOrchestrator, client_for: ClientFor
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    client = client_for(orchestrator)
    async with serving(orchestrator, {"echo": echo}):
        job_id = await client.create_job("jobs/echo", {"n": 12345678901234567})
        events = [event async for event in client.follow(job_id)]
        job = await client.wait(job_id)

    assert all(isinstance(event, JobEvent) and event.job_id == job_id for event in events)
    assert events[-1].status == "finished"  # and the iteration ended after it
    assert events[-1].terminal
    assert not any(event.terminal for event in events[:-1])
    assert (job.id, job.blueprint, job.status, job.current_state) == (
        job_id,
        "echo",
        "finished",
        "done",
    )
    # JSON payloads decoded exactly: a 17-digit integer stays an integer.
    assert job.initial_data == {"n": 12345678901234567}
    assert job.state_history["echoed"] == 12345678901234567
    assert job.result == job.state_history  # ended: its result
    assert job.error is None
    assert job.created_at.tzinfo is UTC
    assert job.created_at <= job.updated_at


async def test_the_route_takes_every_spelling_and_the_blueprints_are_listed(
    start_orchestrator: StartOrchestrator, client_for: ClientFor
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    orchestrator = await start_orchestrator(
        [
            instant_blueprint(),
            approval_blueprint(approved="shipped"),
            echo_blueprint("typed", schema),
        ]
    )
    client = client_for(orchestrator)
    listed = await client.blueprints()
    assert [(bp.name, bp.route, bp.input_schema) for bp in listed] == [
        ("instant", "/api/v1/jobs/instant", None),
        ("review", "/api/v1/jobs/review", None),
        ("typed", "/api/v1/jobs/typed", schema),
    ]
    with pytest.raises(InvalidArgument, match=r"initial_data\.n: 'one' is not of type 'integer'"):
        await client.create_job("jobs/typed", {"n": "one"})
    assert (listed[0].start_state, listed[0].end_states) == ("start", ("done",))
    for route in ("jobs/instant", "v1/jobs/instant", listed[0].route):
        job = await client.wait(await client.create_job(route), timeout=30)
        assert (job.blueprint, job.status) == ("instant", "finished")
    with pytest.raises(NotFound):
        await client.create_job("jobs/instant", api_version="v2")
    assert (await client.blueprint_graph("review")).startswith("digraph")
    assert (await client.blueprint_graph("review", format="svg")).startswith("<svg")
    with pytest.raises(InvalidArgument, match="'png'"):
        await client.blueprint_graph("review", format="png")


async def test_over_tls(start_orchestrator: StartOrchestrator, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    orchestrator = await start_orchestrator(
        [instant_blueprint()], tls_cert_path=cert, tls_key_path=key
    )
    tls = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    async with Client(f"localhost:{orchestrator.grpc_port}", CLIENT_TOKEN, tls=tls) as client:
        job = await client.wait(await client.create_job("jobs/instant"))
    assert job.status == "finished"


async def test_wait_with_a_timeout_and_cancel_with_and_without_a_worker(
    start_orchestrator: StartOrchestrator, client_for: ClientFor, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    client = client_for(orchestrator)
    queued = await client.create_job("jobs/echo", {"n": 1})
    with pytest.raises(DeadlineExceeded) as still_waiting:
        await client.wait(queued, timeout=0.05)
    assert isinstance(still_waiting.value, TimeoutError)
    assert await client.cancel(queued) is False  # no worker held its task
    assert (await client.get_job(queued)).status == "cancelled"
    with pytest.raises(Conflict):
        await client.cancel(queued)

    running = await client.create_job("jobs/echo", {"n": 2})
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])
    await worker.next_task()
    assert await client.cancel(running) is True  # pushed to the worker holding it
    assert (await client.wait(running)).status == "cancelled"
    await worker.close()


async def test_list_jobs_walks_every_page_and_filters(
    start_orchestrator: StartOrchestrator, client_for: ClientFor
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint(), instant_blueprint()])
    client = client_for(orchestrator)
    before = datetime.now(UTC) - timedelta(seconds=1)
    echoes = [await client.create_job("jobs/echo", {"n": n}) for n in range(30)]
    instants = [await client.create_job("jobs/instant") for _ in range(3)]
    for job_id in instants:
        await client.wait(job_id)

    # 30 jobs, 7 a page: five pages, walked by the loop, none twice.
    paged = [job.id async for job in client.list_jobs(blueprint="echo", page_size=7)]
    assert sorted(paged) == sorted(echoes)
    everything = [job async for job in client.list_jobs(page_size=7)]
    assert len(everything) == 33
    assert all(a.created_at >= b.created_at for a, b in itertools.pairwise(everything))

    finished = [job.id async for job in client.list_jobs(statuses=["finished"])]
    assert sorted(finished) == sorted(instants)
    # Not yet ended: queued for a worker, or (on a slow machine) still on the way there.
    waiting = client.list_jobs(
        statuses=["pending", "running", "waiting_for_worker"], current_state="start"
    )
    assert len([job async for job in waiting]) == 30
    assert len([job async for job in client.list_jobs(created_after=before)]) == 33
    later = datetime.now(UTC) + timedelta(hours=1)
    assert [job async for job in client.list_jobs(created_after=later)] == []
    with pytest.raises(ValueError, match="no job status is named 'done'"):
        await anext(client.list_jobs(statuses=["done"]))


async def test_history_workers_and_dashboard(
    start_orchestrator: StartOrchestrator, client_for: ClientFor
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    client = client_for(orchestrator)
    async with serving(orchestrator, {"echo": echo}, worker_id="w-listed"):
        workers = await wait_until(client.workers)
        job = await client.wait(await client.create_job("jobs/echo", {"n": 3}))
        dashboard = await client.dashboard()

    [worker] = workers
    assert (worker.worker_id, worker.skills, worker.transport) == ("w-listed", ("echo",), "grpc")
    assert worker.status in {"idle", "busy"}
    assert "grpc-python" in worker.agent  # the stream's user-agent metadata
    assert dashboard.workers_by_transport["grpc"] == 1
    assert dashboard.oldest_queued_at_by_skill == {}  # nothing waits in a queue
    assert dashboard.jobs_by_status["finished"] == 1

    async def ended() -> list[str] | None:
        # History is written asynchronously, after the job ends.
        kinds = [event.type for event in await client.history(job.id)]
        return kinds if "job_ended" in kinds else None

    kinds = await wait_until(ended)
    assert kinds[0] == "job_created"
    assert "task_finished" in kinds


async def test_a_human_decision_through_the_client(
    start_orchestrator: StartOrchestrator, client_for: ClientFor
) -> None:
    orchestrator = await start_orchestrator([approval_blueprint(approved="shipped")])
    client = client_for(orchestrator)
    job_id = await client.create_job("jobs/review")
    async for change in client.follow(job_id):
        if change.status == "waiting_for_human":
            break  # leaving the loop ends the stream
    asking = await client.get_job(job_id)
    assert (asking.status, asking.approval_message) == ("waiting_for_human", "ship it?")

    with pytest.raises(InvalidArgument):
        await client.approve(job_id, "maybe")
    await client.approve(job_id, "approved")
    job = await client.wait(job_id)
    assert (job.status, job.current_state) == ("finished", "shipped")
    with pytest.raises(Conflict):
        await client.approve(job_id, "approved")


async def test_the_owner_decides_retries_and_counts_through_the_client(
    start_orchestrator: StartOrchestrator, client_for: ClientFor
) -> None:
    orchestrator = await start_orchestrator([approval_blueprint(approved="shipped", timeout=0.3)])
    client = client_for(orchestrator)
    job_id = await client.create_job("jobs/review")
    expired = await client.wait(job_id)  # nobody decides: the wait times out
    assert (expired.status, expired.current_state, expired.approval) == ("failed", "expired", None)
    with pytest.raises(Conflict):
        await client.decide(job_id, "approved")

    retried = await client.retry(job_id)
    assert (retried.status, retried.current_state, retried.error) == ("running", "ask", None)
    with pytest.raises(Conflict):
        await client.retry(job_id)
    with pytest.raises(NotFound):
        await client.retry("no-such-job")

    async def asking() -> avtomatika.client.JobView | None:
        job = await client.get_job(job_id)
        return job if job.status == "waiting_for_human" else None

    approval = (await wait_until(asking, message="the retried job waits again")).approval
    assert approval is not None
    assert (approval.integration, approval.message) == ("console", "ship it?")
    assert approval.decisions == ("approved", "rejected")  # "timeout" is no decision
    assert approval.expires_at is not None
    assert approval.expires_at > datetime.now(UTC)
    with pytest.raises(InvalidArgument):
        await client.decide(job_id, "timeout")
    decided = await client.decide(job_id, "approved")
    assert (decided.id, decided.approval) == (job_id, None)
    job = await client.wait(job_id)
    assert (job.status, job.current_state) == ("finished", "shipped")
    counts = await client.job_counts()
    assert {name: n for name, n in counts.items() if n} == {"finished": 1}

    async def both_recorded() -> list[Any] | None:
        history = await client.history(job_id)
        found = [e.details for e in history if e.type == "approval_received"]
        return history if len(found) == 2 else None

    history = await wait_until(both_recorded, message="both decisions are in the history")
    types = [event.type for event in history]
    assert types.count("approval_requested") == 2
    assert [e.details for e in history if e.type == "approval_received"] == [
        {"decision": "timeout", "decided_by": "timeout"},
        {"decision": "approved", "decided_by": "client:default"},
    ]
    assert types.index("job_ended") < types.index("job_retried")


async def test_approval_tokens_when_the_server_requires_them(
    start_orchestrator: StartOrchestrator, client_for: ClientFor
) -> None:
    orchestrator = await start_orchestrator(
        [approval_blueprint(approved="shipped")], approval_token_required=True
    )
    client = client_for(orchestrator)
    job_id = await client.create_job("jobs/review")

    async def asking() -> str | None:
        return (await client.get_job(job_id)).approval_token

    token = await wait_until(asking)
    with pytest.raises(Unauthenticated):
        await client.approve(job_id, "rejected")
    await client.approve(job_id, "rejected", approval_token=token)
    assert (await client.wait(job_id)).current_state == "rejected"


async def test_files_up_and_down_through_the_s3_emulator(
    start_orchestrator: StartOrchestrator, client_for: ClientFor, s3_emulator: S3Emulator
) -> None:
    bucket = unique_bucket()
    orchestrator = await start_orchestrator([echo_blueprint()], **s3_emulator.settings(bucket))
    client = client_for(orchestrator)
    job_id = await client.create_job("jobs/echo", {"n": 1})
    content = bytes(range(256)) * 1000  # 250 KiB: several messages

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 100_000):
            yield content[start : start + 100_000]

    whole = await client.upload(job_id, "whole.bin", content, content_type="application/x-test")
    assert (whole.s3_uri, whole.size) == (f"s3://{bucket}/jobs/{job_id}/whole.bin", len(content))
    streamed = await client.upload(job_id, "streamed.bin", pieces())
    assert streamed.size == len(content)
    async with aiohttp.ClientSession() as http:
        put = await client.upload_url(job_id, "direct.txt")
        async with http.put(put, data=b"straight to s3") as stored:
            assert stored.status == 200
        for name, expected in (
            ("whole.bin", content),
            ("streamed.bin", content),
            ("direct.txt", b"straight to s3"),
        ):
            async with http.get(await client.download_url(job_id, name)) as got:
                assert await got.read() == expected
    with pytest.raises(NotFound):
        await client.download_url(job_id, "missing.bin")


async def test_files_without_s3_are_unimplemented(
    start_orchestrator: StartOrchestrator, client_for: ClientFor
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    client = client_for(orchestrator)
    job_id = await client.create_job("jobs/echo", {"n": 1})
    with pytest.raises(Unimplemented):
        await client.upload(job_id, "a.txt", b"content")


async def test_refusals_are_the_client_errors_with_the_servers_message(
    start_orchestrator: StartOrchestrator, client_for: ClientFor, tmp_path: Path
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[acme]\ntoken = "{ACME}"\n[globex]\ntoken = "{GLOBEX}"\n')
    orchestrator = await start_orchestrator([echo_blueprint()], clients_config_path=path)
    acme, globex = client_for(orchestrator, ACME), client_for(orchestrator, GLOBEX)

    with pytest.raises(Unauthenticated) as refused:
        await client_for(orchestrator, "not-a-token").create_job("jobs/echo")
    assert refused.value.code == "unauthenticated"
    assert "x-client-token" in refused.value.message

    job_id = await acme.create_job("jobs/echo", {"n": 1})
    with pytest.raises(NotFound):
        await globex.get_job(job_id)
    with pytest.raises(NotFound):
        await globex.cancel(job_id)
    with pytest.raises(NotFound):
        await anext(globex.follow(job_id))
    assert (await acme.get_job(job_id)).status != "cancelled"  # untouched

    with pytest.raises(InvalidArgument) as invalid:
        await acme.create_job("jobs/echo", {"n": 1}, webhook_url="ftp://example.com/hook")
    assert "webhook_url" in invalid.value.message
    with pytest.raises(InvalidArgument) as invalid:
        await acme.create_job("jobs/echo", {"n": 1}, dispatch_timeout=-1)
    assert "dispatch_timeout" in invalid.value.message
    with pytest.raises(NotFound):
        await acme.create_job("jobs/nothing-here")


async def test_a_rate_limited_call_says_when_to_retry(
    start_orchestrator: StartOrchestrator, client_for: ClientFor, tmp_path: Path
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[acme]\ntoken = "{ACME}"\n')
    orchestrator = await start_orchestrator(
        [echo_blueprint()],
        clients_config_path=path,
        rate_limiting_enabled=True,
        rate_limit_limit=2,
        rate_limit_period=60.0,
    )
    client = client_for(orchestrator, ACME)
    for _ in range(2):
        await client.workers()
    with pytest.raises(RateLimited) as limited:
        await client.workers()
    assert limited.value.code == "resource_exhausted"
    assert limited.value.retry_after is not None
    assert limited.value.retry_after >= 1


async def test_a_server_that_is_not_there_is_unavailable() -> None:
    async with Client(f"127.0.0.1:{free_port()}", CLIENT_TOKEN, timeout=10) as client:
        with pytest.raises(Unavailable) as down:
            await client.get_job("any")
    assert down.value.code is None  # grpc's status, not the orchestrator's refusal


async def test_the_readme_example_runs(
    start_orchestrator: StartOrchestrator, capsys: pytest.CaptureFixture[str]
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python client", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, "README.md#python-client", "exec"), namespace)

    async def echo_text(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        return {"echo": params["text"]}  # the README's worker

    async with serving(orchestrator, {"echo": echo_text}):
        await namespace["main"](f"127.0.0.1:{orchestrator.grpc_port}", CLIENT_TOKEN)
    printed = capsys.readouterr().out.splitlines()
    assert "finished {'echo': 'hello'}" in printed


def test_a_status_newer_than_the_client_reads_as_unknown() -> None:
    # proto3 enums are open: a newer server may send a number this contract
    # does not name; the answer still decodes.
    job = job_pb2.Job(id="j", status=cast(job_pb2.JobStatus.ValueType, 99))
    assert _wire.job_view(job).status == "unknown_99"
    assert not _wire.job_view(job).terminal


def test_the_public_names() -> None:
    assert avtomatika.client.__all__ == [
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
    errors = [getattr(avtomatika.client, name) for name in avtomatika.client.__all__]
    assert all(
        issubclass(cls, ClientError)
        for cls in errors
        if isinstance(cls, type) and issubclass(cls, Exception)
    )


def test_importing_the_client_loads_nothing_of_the_server(tmp_path: Path) -> None:
    probe = "import json, sys, avtomatika.client; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    loaded = set(json.loads(run.stdout))
    ours = {
        name
        for name in loaded
        if name.split(".")[0] == "avtomatika" and name.split(".")[:2] != ["avtomatika", "v1"]
    }
    client = {name for name in ours if name.split(".")[:2] == ["avtomatika", "client"]}
    assert ours - client == {"avtomatika", "avtomatika.payload", "avtomatika.channel_tls"}
    assert loaded.isdisjoint({"aiohttp", "redis", "prometheus_client", "aioboto3", "asyncpg"})
