"""Logs worth reading, from a real ``avtomatika serve`` process: an access
line per REST request and gRPC call carrying its request id (the caller's,
echoed, or a fresh one), a line per job lifecycle event and per worker
connect and disconnect, JSON lines that parse, and no token anywhere; and
the worker SDK's own "connected to" line, from a worker process.

One orchestrator per log format runs the same piece of real work: jobs for
a gRPC SDK worker and a REST worker, an approval, a cancel, refused tokens.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from avtomatika.logs.access import loggable_target
from avtomatika.logs.scope import request_id_from
from avtomatika.v1 import job_service_pb2, job_service_pb2_grpc
from tests.support import CLIENT_TOKEN, WORKER_TOKEN
from tests.support.jobs import create_job, wait_for_status
from tests.support.raw_worker import RawWorker
from tests.support.rest_worker import HEADERS as REST_WORKER_HEADERS
from tests.support.rest_worker import registration
from tests.support.serve import serve_env, served

ROOT = Path(__file__).resolve().parent.parent

BLUEPRINTS = """
from avtomatika import StateMachineBlueprint

work = StateMachineBlueprint("work", api_endpoint="/jobs/work", api_version="v1")

@work.handler_for("start", is_start=True)
async def start(initial_data, actions):
    actions.dispatch_task(task_type=initial_data["skill"], params={"text": "hi"},
                          transitions={"success": "finished"})

@work.handler_for("finished", is_end=True)
async def finished():
    pass

review = StateMachineBlueprint("review", api_endpoint="/jobs/review", api_version="v1")

@review.handler_for("start", is_start=True)
async def ask(actions):
    actions.await_human_approval(integration="test", message="ship it?",
                                 transitions={"approved": "finished", "rejected": "failed"})

@review.handler_for("finished", is_end=True)
async def approved():
    pass

@review.handler_for("failed", is_end=True)
async def rejected():
    pass
"""

WRONG_CLIENT_TOKEN = "wrong-client-token-4f2a"
WRONG_WORKER_TOKEN = "wrong-worker-token-9c1d"
GRPC_WORKER = "grpc-logs-w"
REST_WORKER = "rest-logs-w"
SILENT_WORKER = "silent-logs-w"

# A text line: time, level, logger, message, and the request id if any.
_TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>\S+): "
    r"(?P<message>.*?)(?: \[request_id=(?P<request_id>[^\]]+)\])?$"
)


@dataclass
class Work:
    """What the scenario did, to look for in the log."""

    log: str = ""
    sdk_log: str = ""
    tokens: list[str] = field(default_factory=list)
    finished_jobs: list[str] = field(default_factory=list)
    approved_job: str = ""
    cancelled_job: str = ""
    generated_id: str = ""
    grpc_request_id: str = "grpc-call-7"


async def _start_sdk_worker(grpc_port: int) -> asyncio.subprocess.Process:
    """examples/echo_worker.py as a process (its own stderr, logging left
    unconfigured, as a plain script leaves it)."""
    env = serve_env(
        ORCHESTRATOR_GRPC=f"127.0.0.1:{grpc_port}", WORKER_TOKEN=WORKER_TOKEN, WORKER_ID=GRPC_WORKER
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "echo_worker.py"),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _run_the_work(tmp_path: Path, log_format: str) -> Work:
    (tmp_path / "blueprints.py").write_text(BLUEPRINTS)
    env = serve_env(
        LOG_FORMAT=log_format,
        BLUEPRINTS_DIR=str(tmp_path),
        APPROVAL_TOKEN_REQUIRED="true",
        # A worker that goes silent is dropped after three of these.
        WORKER_HEARTBEAT_INTERVAL_SECONDS="0.2",
    )
    work = Work(tokens=[CLIENT_TOKEN, WORKER_TOKEN, WRONG_CLIENT_TOKEN, WRONG_WORKER_TOKEN])
    async with served(env=env) as server:
        base = f"http://127.0.0.1:{server.rest_port}"
        client = aiohttp.ClientSession(base, headers={"X-Client-Token": CLIENT_TOKEN})
        public = aiohttp.ClientSession(base)
        rest_worker = aiohttp.ClientSession(base, headers=REST_WORKER_HEADERS)
        worker = await _start_sdk_worker(server.grpc_port)
        try:
            assert worker.stderr is not None
            connected = await asyncio.wait_for(worker.stderr.readline(), 30)
            work.sdk_log = connected.decode()
            # A job for the gRPC worker, with the caller's request id.
            response = await client.post(
                "/api/v1/jobs/work",
                json={"initial_data": {"skill": "echo"}},
                headers={"X-Request-ID": "create-grpc-job-1"},
            )
            assert response.status == 202
            assert response.headers["X-Request-ID"] == "create-grpc-job-1"
            job_id = (await response.json())["job_id"]
            await wait_for_status(client, job_id, "finished")
            work.finished_jobs.append(job_id)
            worker.send_signal(signal.SIGTERM)
            work.sdk_log += (await worker.stderr.read()).decode()

            # A REST worker: registered, handed a task, reporting its result.
            response = await rest_worker.post(
                "/_worker/workers/register", json=registration(REST_WORKER, ["rest_echo"])
            )
            assert response.status == 200
            job_id = await create_job(client, "jobs/work", {"skill": "rest_echo"})
            response = await rest_worker.get(f"/_worker/workers/{REST_WORKER}/tasks/next")
            task = await response.json()
            response = await rest_worker.post(
                "/_worker/tasks/result",
                json={"job_id": task["job_id"], "task_id": task["task_id"],
                      "worker_id": REST_WORKER, "status": "success", "data": {"ok": True},
                      "error": None, "data_metadata": None},
            )  # fmt: skip
            assert response.status == 200
            await wait_for_status(client, job_id, "finished")
            work.finished_jobs.append(job_id)

            # An approval, its token in the header and (never read, still
            # never logged) in the query string.
            work.approved_job = await create_job(client, "jobs/review")
            job = await wait_for_status(client, work.approved_job, "waiting_for_human")
            approval_token = job["approval_token"]
            work.tokens.append(approval_token)
            response = await public.post(
                f"/_public/webhooks/approval/{work.approved_job}?token={approval_token}",
                json={"decision": "approved"},
                headers={"X-Approval-Token": approval_token},
            )
            assert response.status == 200, await response.text()
            await wait_for_status(client, work.approved_job, "finished")

            # A cancel (no worker has the skill, so the job waits for one).
            work.cancelled_job = await create_job(client, "jobs/work", {"skill": "nobody"})
            response = await client.post(f"/api/v1/jobs/{work.cancelled_job}/cancel")
            assert response.status == 200
            await wait_for_status(client, work.cancelled_job, "cancelled")

            # Refused tokens, and request ids: none given, and one not fit for a log.
            response = await public.get(
                "/api/v1/jobs", headers={"X-Client-Token": WRONG_CLIENT_TOKEN}
            )
            assert response.status == 401
            work.generated_id = response.headers["X-Request-ID"]
            assert re.fullmatch(r"[0-9a-f]{16}", work.generated_id)
            response = await public.post(
                "/_worker/workers/register",
                json=registration("intruder"),
                headers={"X-Worker-Token": WRONG_WORKER_TOKEN, "X-Request-ID": "bad id\twith tab"},
            )
            assert response.status == 401
            assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-ID"])
            response = await public.get("/no/such/page", headers={"X-Request-ID": "lost-1"})
            assert response.status == 404
            assert response.headers["X-Request-ID"] == "lost-1"

            # gRPC: the id travels in metadata and comes back in the trailers,
            # on success and on a refusal alike.
            await _grpc_calls(server.grpc_port, work)
        finally:
            if worker.returncode is None:
                worker.kill()
            await worker.wait()
            for session in (client, public, rest_worker):
                await session.close()
        work.log = await server.stop()
    assert server.process.returncode == 0, work.log
    return work


async def _grpc_calls(grpc_port: int, work: Work) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        call = stub.GetJob(
            job_service_pb2.GetJobRequest(job_id=work.finished_jobs[0]),
            metadata=(("x-client-token", CLIENT_TOKEN), ("x-request-id", work.grpc_request_id)),
        )
        await call
        # grpc.aio's metadata: (key, value) pairs, whatever its stubs say.
        trailers: Any = await call.trailing_metadata()
        assert ("x-request-id", work.grpc_request_id) in tuple(trailers)
        # A stream names the id in its headers too; it ends with the job's end.
        stream = stub.StreamJobEvents(
            job_service_pb2.StreamJobEventsRequest(job_id=work.finished_jobs[0]),
            metadata=(("x-client-token", CLIENT_TOKEN), ("x-request-id", "grpc-stream-1")),
        )
        headers: Any = await stream.initial_metadata()
        assert ("x-request-id", "grpc-stream-1") in tuple(headers)
        assert [event.status async for event in stream]
        # A worker that says hello, then nothing: the server drops it.
        silent = RawWorker(channel, SILENT_WORKER)
        await silent.hello(["echo"])
        assert await silent.receive() is None
        refused = stub.GetJob(
            job_service_pb2.GetJobRequest(job_id=work.finished_jobs[0]),
            metadata=(("x-client-token", WRONG_CLIENT_TOKEN), ("x-request-id", "grpc-refused")),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        trailers = caught.value.trailing_metadata()
        assert ("x-request-id", "grpc-refused") in tuple(trailers)
        assert ("avtomatika-error-code", "unauthenticated") in tuple(trailers)


def _records(log: str, log_format: str) -> list[dict[str, Any]]:
    """Every line of the log as a record (JSON: as written; text: its parts)."""
    records = []
    for line in log.splitlines():
        if log_format == "json":
            record = json.loads(line)  # every line is a JSON object
            assert {"time", "level", "logger", "message"} <= record.keys(), line
        else:
            match = _TEXT_LINE.match(line)
            assert match, f"not a log line: {line!r}"
            record = {k: v for k, v in match.groupdict().items() if v is not None}
        records.append(record)
    return records


def _messages(records: list[dict[str, Any]], logger: str) -> list[str]:
    return [r["message"] for r in records if r["logger"] == logger]


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_the_log_of_real_work(tmp_path: Path, log_format: str) -> None:
    work = await _run_the_work(tmp_path, log_format)
    records = _records(work.log, log_format)
    access = [r for r in records if r["logger"] == "avtomatika.access"]
    by_id = {r.get("request_id"): r for r in access}

    # An access line per request, with the id given, generated or replaced.
    created = by_id["create-grpc-job-1"]
    assert created["message"].startswith("POST /api/v1/jobs/work 202 ")
    assert "caller=client:default" in created["message"]
    assert by_id[work.generated_id]["message"].startswith("GET /api/v1/jobs 401 ")
    assert by_id["lost-1"]["message"].startswith("GET /no/such/page 404 ")
    assert "bad id\twith tab" not in work.log
    assert any(
        m.startswith("POST /_worker/tasks/result 200 ") and f"caller=worker:{REST_WORKER}" in m
        for m in _messages(records, "avtomatika.access")
    )
    assert by_id[work.grpc_request_id]["message"].startswith(
        "gRPC /avtomatika.v1.JobService/GetJob OK "
    )
    assert by_id["grpc-stream-1"]["message"].startswith(
        "gRPC /avtomatika.v1.JobService/StreamJobEvents OK "
    )
    assert by_id["grpc-refused"]["message"].startswith(
        "gRPC /avtomatika.v1.JobService/GetJob UNAUTHENTICATED "
    )
    assert any(
        m.startswith("gRPC /avtomatika.v1.WorkerService/Connect ")
        and f"caller=worker:{GRPC_WORKER}" in m
        for m in _messages(records, "avtomatika.access")
    )
    assert f"/_public/webhooks/approval/{work.approved_job}?token=*** 200 " in work.log

    # Job lifecycle lines; the job created by a request carries its id.
    jobs = _messages(records, "avtomatika.jobs")
    for job_id in work.finished_jobs:
        for words in ("created (blueprint work)", "entered state start", "dispatched a task",
                      "its task was picked up by worker", "its task finished",
                      "ended: finished"):  # fmt: skip
            assert any(m.startswith(f"job {job_id}") and words in m for m in jobs), (job_id, words)
    creation = next(
        r
        for r in records
        if r["message"] == f"job {work.finished_jobs[0]} created (blueprint work)"
    )
    assert creation["request_id"] == "create-grpc-job-1"
    assert f"job {work.approved_job} is waiting for a human decision (test)" in jobs
    assert any(m.startswith(f"job {work.approved_job}: approval received") for m in jobs)
    assert f"job {work.cancelled_job} cancelled in state start" in jobs
    assert f"job {work.cancelled_job} ended: cancelled" in jobs

    # Worker lines, over both transports.
    workers = _messages(records, "avtomatika.workers")
    assert f"worker {GRPC_WORKER} connected over gRPC with skills [echo]" in workers
    assert f"worker {REST_WORKER} connected over REST with skills [rest_echo]" in workers
    assert any(m.startswith(f"worker {GRPC_WORKER} disconnected: ") for m in workers)
    assert any(m.startswith(f"worker {GRPC_WORKER} takes no more tasks") for m in workers)
    dropped = next(r for r in records if r["message"].startswith(f"worker {SILENT_WORKER} disc"))
    assert dropped["message"].endswith("disconnected: silent for 3 heartbeat intervals")
    assert dropped["level"] == "WARNING"

    if log_format == "json":
        # The structured fields, as keys.
        assert created["method"] == "POST"
        assert created["path"] == "/api/v1/jobs/work"
        assert created["status"] == 202
        assert created["client_id"] == "default"
        assert isinstance(created["duration_ms"], float)
        assert created["remote"] == "127.0.0.1"
        assert by_id[work.grpc_request_id]["code"] == "OK"
        # A worker's stream: the line at its end names the address and the
        # request id of the line at its start (the address is read while
        # the call is live; reading it as the stream ends could crash).
        connect = "/avtomatika.v1.WorkerService/Connect"
        opened = [r for r in access if r.get("rpc") == connect and "code" not in r]
        ended_streams = [
            r for r in access if r.get("rpc") == connect and r.get("worker_id") == GRPC_WORKER
        ]
        assert opened
        assert ended_streams
        assert all(re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", r["remote"]) for r in opened)
        opened_by_id = {r["request_id"]: r["remote"] for r in opened}
        for end in ended_streams:
            assert opened_by_id[end["request_id"]] == end["remote"]
        assert creation["job_id"] == work.finished_jobs[0]
        assert creation["event"] == "job_created"
        ended = [r for r in records if r.get("event") == "job_ended"]
        assert {r["job_id"]: r["status"] for r in ended} == {
            **dict.fromkeys(work.finished_jobs, "finished"),
            work.approved_job: "finished",
            work.cancelled_job: "cancelled",
        }
        connected = [r for r in records if r.get("event") == "worker_connected"]
        assert {(r["worker_id"], r["transport"]) for r in connected} == {
            (GRPC_WORKER, "gRPC"),
            (REST_WORKER, "REST"),
            (SILENT_WORKER, "gRPC"),
        }

    # No token, anywhere.
    for token in work.tokens:
        assert token not in work.log, token

    # The SDK, left to configure its logging, says where it connected.
    grpc_address = re.search(r"connected to (127\.0\.0\.1:\d+) as", work.sdk_log)
    assert grpc_address, work.sdk_log
    assert f"as {GRPC_WORKER} with skills [echo]" in work.sdk_log
    assert WORKER_TOKEN not in work.sdk_log


async def test_an_unknown_log_format_stops_start_up_naming_it() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "serve", "--log-format", "yaml",
        env=serve_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 2
    assert "LOG_FORMAT must be one of text, json, got 'yaml'" in output.decode()


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("two words", False),
        ('quote"d', False),
        ("line\nbreak", False),
        ("caf\u00e9", False),
    ],
)
def test_a_request_id_is_kept_only_when_fit_for_a_log_line(sent: str, kept: bool) -> None:
    used = request_id_from(sent)
    assert (used == sent) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{16}", used)


def test_secret_query_parameters_are_masked_and_the_rest_kept() -> None:
    target = loggable_target(
        "/api/v1/jobs", "wait=5&token=t1&API_KEY=k&client%5Fsecret=s&fields=status&sig"
    )
    assert (
        target
        == "/api/v1/jobs?wait=5&token=***&API_KEY=***&client%5Fsecret=***&fields=status&sig=***"
    )
    assert loggable_target("/_public/status", "") == "/_public/status"
