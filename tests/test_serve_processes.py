"""``avtomatika serve --processes 2`` on a real ``redis-server``: one
instance in two server processes sharing the REST and gRPC ports.

- both processes answer on the one REST port and the one gRPC port, jobs
  created over REST finish with an SDK worker, and SIGTERM stops them all
  (exit 0);
- a process killed with SIGKILL is restarted, and the service answers
  meanwhile and after;
- without Redis, or with PROCESSES below 1, start-up is refused (exit 2);
  a process that cannot start ends the service with its status.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from avtomatika.v1 import public_service_pb2_grpc
from avtomatika.v1.public_service_pb2 import GetStatusRequest
from avtomatika.worker import ConnectionSettings, TaskContext, Worker
from tests.support import CLIENT_TOKEN, TERMINAL_STATUSES, WORKER_TOKEN
from tests.support.serve import Served, exit_of_serve, serve_env, served
from tests.support.waiting import wait_until

BLUEPRINTS = Path(__file__).parent / "cluster_blueprints"
INSTANCES = ("box-1", "box-2")
# Each request on its own connection: the kernel picks a process per
# connection, so this many land on one process alone with a chance of 2**-39.
CONNECTIONS = 40


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    return serve_env(
        REDIS_URL=redis_url, INSTANCE_ID="box", LOG_FORMAT="json", SHUTDOWN_GRACE_SECONDS="0.5",
        **extra,
    )  # fmt: skip


def _records(output: str) -> list[dict[str, Any]]:
    records = []
    for line in output.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def _access_instances(records: list[dict[str, Any]], transport: str) -> set[str]:
    """The processes that wrote an access line for ``transport``'s requests."""
    return {
        r["instance"]
        for r in records
        if r["logger"] == "avtomatika.access" and r["message"].startswith(transport)
    }


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _fresh_connection_statuses(server: Served) -> list[int]:
    """GET /_public/status CONNECTIONS times, each on a new connection."""
    url = f"http://127.0.0.1:{server.rest_port}/_public/status"
    statuses = []
    for _ in range(CONNECTIONS):
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.get(url) as response,
        ):
            statuses.append(response.status)
    return statuses


async def test_two_processes_share_both_ports_finish_jobs_and_stop_on_sigterm(
    redis_url: str,
) -> None:
    env = _env(redis_url)
    args = ("--processes", "2", "--blueprints-dir", str(BLUEPRINTS))
    async with served(*args, env=env, supervised=True) as server:
        worker = Worker(
            worker_id="mp-worker",
            addresses=[f"127.0.0.1:{server.grpc_port}"],
            token=WORKER_TOKEN,
            max_concurrency=8,
            settings=ConnectionSettings(reconnect_initial_delay=0.01, reconnect_max_delay=0.05),
        )

        @worker.skill("echo")
        async def echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
            return {"n": params["n"]}

        run = asyncio.create_task(worker.run())
        try:
            base = f"http://127.0.0.1:{server.rest_port}/api/v1/jobs"
            headers = {"X-Client-Token": CLIENT_TOKEN}
            jobs = []
            for n in range(CONNECTIONS):
                async with (
                    aiohttp.ClientSession(
                        headers=headers, connector=aiohttp.TCPConnector(force_close=True)
                    ) as http,
                    http.post(f"{base}/echo", json={"initial_data": {"n": n}}) as response,
                ):
                    body = await response.json()
                    assert response.status == 202, body
                    jobs.append(body["job_id"])
            async with aiohttp.ClientSession(headers=headers) as http:
                for n, job_id in enumerate(jobs):
                    job: dict[str, Any] = {"status": "pending"}
                    while job["status"] not in TERMINAL_STATUSES:
                        async with http.get(f"{base}/{job_id}?wait=5") as response:
                            job = await response.json()
                    assert job["status"] == "finished", job
                    assert job["initial_data"] == {"n": n}, job
            # The gRPC port: calls on fresh channels (one connection each).
            for _ in range(CONNECTIONS):
                async with grpc.aio.insecure_channel(
                    f"127.0.0.1:{server.grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)]
                ) as channel:
                    public: public_service_pb2_grpc.PublicServiceAsyncStub = (
                        public_service_pb2_grpc.PublicServiceStub(channel)
                    )
                    status = await public.GetStatus(GetStatusRequest())
                    assert status.status == "ok"
        finally:
            await worker.stop(grace_seconds=0)
            await run
        children = _children(server.process.pid)
        output = await server.stop(signal.SIGTERM)
        assert server.process.returncode == 0, output
    assert not [pid for pid in children if _alive(pid)]
    assert "Traceback" not in output
    records = _records(output)
    assert _access_instances(records, "POST") == set(INSTANCES)
    assert _access_instances(records, "gRPC") == set(INSTANCES)
    stopped = {r["message"] for r in records if r["logger"] == "avtomatika.processes"}
    assert "process 1 (instance box-1) stopped" in stopped
    assert "process 2 (instance box-2) stopped" in stopped


async def test_a_killed_process_is_restarted_and_the_service_keeps_answering(
    redis_url: str,
) -> None:
    async with served("--processes", "2", env=_env(redis_url), supervised=True) as server:
        before = _children(server.process.pid)
        assert len(before) == 2
        killed = min(before)
        os.kill(killed, signal.SIGKILL)
        # Answered meanwhile: the kernel hands new connections to the live one.
        assert set(await _fresh_connection_statuses(server)) == {200}
        await wait_until(
            lambda: len(_children(server.process.pid) - {killed}) == 2,
            message="a killed process restarted",
        )
        assert set(await _fresh_connection_statuses(server)) == {200}
        output = await server.stop(signal.SIGTERM)
        assert server.process.returncode == 0, output
    restarted = [
        r["message"]
        for r in _records(output)
        if r["logger"] == "avtomatika.processes" and "restarting" in r["message"]
    ]
    assert len(restarted) == 1, output
    exited = rf"process \d \(instance box-\d, pid {killed}\) exited with status -9"
    assert re.match(exited, restarted[0]), restarted


async def test_processes_without_redis_are_refused() -> None:
    code, output = await exit_of_serve("--processes", "2", env=serve_env())
    assert code == 2
    assert "PROCESSES=2 needs REDIS_URL" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("value", ["0", "-1", "two"])
async def test_a_process_count_below_one_is_refused(value: str) -> None:
    code, output = await exit_of_serve(env=serve_env(PROCESSES=value))
    assert code == 2
    assert "PROCESSES" in output
    assert "Traceback" not in output


async def test_a_process_that_cannot_start_ends_the_service_with_its_status(
    redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('no good')\n")
    args = ("--processes", "2", "--blueprints-dir", str(tmp_path))
    code, output = await exit_of_serve(*args, env=_env(redis_url))
    assert code == 2, output
    assert "no good" in output
    assert "avtomatika serving" not in output


@pytest.mark.parametrize("port", ["API_PORT", "GRPC_PORT"])
async def test_a_second_server_on_a_taken_port_is_refused(port: str) -> None:
    async with served(env=serve_env()) as first:
        taken = first.rest_port if port == "API_PORT" else first.grpc_port
        code, output = await exit_of_serve(env=serve_env(**{port: str(taken)}))
        assert code == 1, output
        assert "cannot start" in output
        # The first still answers: nothing took its connections.
        assert set(await _fresh_connection_statuses(first)) == {200}


async def test_a_process_that_keeps_crashing_stops_the_service_with_exit_1(
    redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "crash"
    # Loaded by every process at its start: once the marker exists, a process
    # that starts dies at once (as one with a fault it meets on every start).
    (tmp_path / "crashing.py").write_text(
        f"import os\nif os.path.exists({str(marker)!r}):\n    os._exit(3)\n"
    )
    args = ("--processes", "2", "--blueprints-dir", str(tmp_path))
    async with served(*args, env=_env(redis_url), supervised=True) as server:
        children = _children(server.process.pid)
        marker.touch()
        os.kill(min(children), signal.SIGKILL)
        await asyncio.wait_for(server.process.wait(), 60)  # a hang, not a timing
        output = await server.stop()
    assert server.process.returncode == 1, output
    messages = [r["message"] for r in _records(output) if r["logger"] == "avtomatika.processes"]
    assert sum("restarting in" in m for m in messages) == 5, messages
    assert any("exited 6 times in a row" in m and "stopping the service" in m for m in messages)
    assert not [pid for pid in children if _alive(pid)]


async def test_sigterm_while_the_processes_start_stops_them_all_with_exit_0(
    redis_url: str,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "serve", "--processes", "2",
        env=_env(redis_url), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    while "process 2 started" not in (lines[-1] if lines else ""):
        line = (await process.stdout.readline()).decode()
        assert line, "".join(lines)
        lines.append(line)
    children = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    output = "".join(lines) + (await process.stdout.read()).decode()
    assert await process.wait() == 0, output
    assert not [pid for pid in children if _alive(pid)]
    assert "Traceback" not in output
