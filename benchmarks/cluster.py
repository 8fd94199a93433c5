"""``make bench-redis``: end-to-end throughput with the store in Redis, one
instance against several.

For each instance count it starts a fresh ``redis-server`` on a free port,
that many ``avtomatika serve`` processes on it (``REDIS_URL``, the example
``echo`` blueprint), the Python SDK workers over gRPC (one process per
instance, the workers split between them) and one client process per
instance creating jobs over REST and following each with ``?wait=``
(:mod:`benchmarks.load`). Reported per run:

- jobs/s end to end, and create -> finished latency (p50, p99) as the
  clients see it, with the ``?wait=`` requests each job took (one per
  visible change that happened while its client waited);
- Redis commands per job, from the ``INFO commandstats`` delta over the load,
  with the commands that dominate. Those count the commands the scripts
  call too, so a short sample run before the load (``--sample`` jobs) is
  watched with ``MONITOR``, which tells the two apart: the commands the
  orchestrators send, and those the scripts call;
- CPU seconds spent during the load by Redis (``INFO cpu``), the
  orchestrators, the workers and the clients: whichever is near
  ``seconds x cores`` bounds the throughput.

With ``--processes 1,2`` each instance is ``avtomatika serve --processes
N`` (one instance in N server processes sharing its ports), and its CPU is
that of the supervisor and all its processes.

A table is printed, then one JSON line with every number.

    python -m benchmarks.cluster [--jobs 5000] [--clients 32] [--workers 2]
        [--instances 1,2] [--processes 1] [--sample 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import redis

from benchmarks.end_to_end import ROOT, percentile, process_cpu_seconds
from benchmarks.grpc_workers import build
from tests.support import CLIENT_TOKEN, WORKER_TOKEN
from tests.support.redis import RedisServer
from tests.support.serve import Served, serve_env, served

EXAMPLES = ROOT / "examples" / "blueprints"
WORKER_CONCURRENCY = 64


def note(message: str) -> None:
    """Progress, on stderr (stdout carries the results)."""
    print(f"[bench-redis] {message}", file=sys.stderr, flush=True)


def redis_counters(server: RedisServer) -> tuple[dict[str, int], float]:
    """Calls per command so far, and the server's CPU seconds so far."""
    client = redis.Redis(port=server.port)
    try:
        stats = client.info("commandstats")
        cpu = client.info("cpu")
    finally:
        client.close()
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


@asynccontextmanager
async def started(
    command: list[str],
    *,
    stdout: int | None = asyncio.subprocess.DEVNULL,
    stdin: int | None = None,
    stderr: int | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``command`` running (from the checkout, which is on its PYTHONPATH,
    with ``env`` added to ours) for the block; terminated after it."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=stdout,
        stdin=stdin,
        stderr=stderr,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def wait_for_workers(instance: Served, count: int) -> None:
    """Until ``GET /api/v1/workers`` (every instance's workers) lists ``count``."""
    url = f"http://127.0.0.1:{instance.rest_port}/api/v1/workers"
    async with aiohttp.ClientSession(headers={"X-Client-Token": CLIENT_TOKEN}) as http:
        while True:
            async with http.get(url) as response:
                if response.status == 200 and len(await response.json()) >= count:
                    return
            await asyncio.sleep(0.1)  # the harness waiting for its workers, not the system


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a live process and of its live children (the
    processes of ``serve --processes``)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        children = [int(c) for task in tasks for c in (task / "children").read_text().split()]
    except OSError:
        children = []
    return process_cpu_seconds(pid) + sum(process_cpu_seconds(child) for child in children)


class Monitor:
    """Counts, over one ``MONITOR`` connection, the commands clients send
    and those scripts call (``MONITOR`` tags the latter ``[<db> lua]``).
    ``MONITOR`` slows Redis down: it watches a sample run, not the load."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.sent = 0
        self.in_scripts = 0
        self._reading: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Monitor:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writer.write(b"MONITOR\r\n")
        assert await reader.readline() == b"+OK\r\n"
        self._reading = asyncio.create_task(self._read(reader))
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            # +<time> [<db> <client address, or lua>] "<command>" ...
            if b" lua] " in line.split(b'"', 1)[0]:
                self.in_scripts += 1
            else:
                self.sent += 1

    async def __aexit__(self, *_: object) -> None:
        await asyncio.sleep(0.2)  # what was sent is seen (the connection lags)
        assert self._reading is not None
        self._reading.cancel()
        self._writer.close()


async def run_load(orchestrators: list[Served], jobs: int, clients: int) -> list[dict[str, Any]]:
    """``jobs`` jobs by ``clients`` clients, shared out among the instances
    (a client process each); each process's report."""
    async with AsyncExitStack() as stack:
        loads = []
        for n, orchestrator in enumerate(orchestrators):
            share = jobs // len(orchestrators) + (n < jobs % len(orchestrators))
            command = [
                sys.executable, "-m", "benchmarks.load",
                f"http://127.0.0.1:{orchestrator.rest_port}", CLIENT_TOKEN,
                "/api/v1/jobs/echo", str(share), str(max(1, clients // len(orchestrators))),
            ]  # fmt: skip
            load = started(command, stdout=asyncio.subprocess.PIPE)
            loads.append(await stack.enter_async_context(load))
        outputs = await asyncio.gather(*(load.communicate() for load in loads))
    return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]


async def measure(
    instances: int, jobs: int, clients: int, workers: int, sample: int, processes: int = 1
) -> dict[str, Any]:
    server = RedisServer()
    server.start()
    async with AsyncExitStack() as stack:
        stack.callback(server.close)
        # LOG_LEVEL from the environment (INFO unset), to measure the log's cost.
        log_level = os.environ.get("LOG_LEVEL", "INFO")
        if log_level.upper() not in {"DEBUG", "INFO"}:
            # `served` learns the ports from serve's start-up line, an INFO one.
            raise SystemExit(f"the Redis scenarios need LOG_LEVEL INFO or DEBUG, not {log_level}")
        env = serve_env(REDIS_URL=server.url, JOB_WAIT_MAX_SECONDS="30", LOG_LEVEL=log_level)
        args = ("--blueprints-dir", str(EXAMPLES), "--processes", str(processes))
        orchestrators = await asyncio.gather(
            *(
                stack.enter_async_context(
                    served(*args, env={**env, "INSTANCE_ID": f"i{n}"}, supervised=processes > 1)
                )
                for n in range(instances)
            )
        )
        worker_processes = []
        for n, orchestrator in enumerate(orchestrators):
            share = max(1, workers // instances + (n < workers % instances))
            command = [
                sys.executable, "-m", "benchmarks.cluster", "--serve-workers",
                f"127.0.0.1:{orchestrator.grpc_port}", str(n * 100), str(share),
            ]  # fmt: skip
            worker_processes.append(await stack.enter_async_context(started(command)))
        note(f"{instances} instance(s) serving on {server.url}; waiting for the workers")
        await wait_for_workers(orchestrators[0], max(workers, instances))
        note(f"sampling the commands of {sample} jobs")
        async with Monitor(server.port) as monitor:
            await run_load(orchestrators, sample, clients)
        note(f"running {jobs} jobs")

        calls_before, redis_cpu_before = redis_counters(server)
        orchestrators_before = sum(tree_cpu_seconds(o.process.pid) for o in orchestrators)
        workers_before = sum(process_cpu_seconds(p.pid) for p in worker_processes)
        began = time.perf_counter()
        reports = await run_load(list(orchestrators), jobs, clients)
        wall = time.perf_counter() - began
        calls_after, redis_cpu_after = redis_counters(server)
        orchestrators_cpu = (
            sum(tree_cpu_seconds(o.process.pid) for o in orchestrators) - orchestrators_before
        )
        workers_cpu = sum(process_cpu_seconds(p.pid) for p in worker_processes) - workers_before
        keys_left = redis.Redis(port=server.port).dbsize()

    seconds = max(report["seconds"] for report in reports)
    latencies = [ms for report in reports for ms in report["latencies_ms"]]
    statuses: dict[str, int] = {}
    for report in reports:
        for status, count in report["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    delta = {
        name: calls - calls_before.get(name, 0)
        for name, calls in calls_after.items()
        if calls > calls_before.get(name, 0) and name != "info"
    }
    by_command = sorted(delta.items(), key=lambda item: -item[1])
    return {
        "instances": instances,
        "processes": processes,
        "jobs": jobs,
        "clients": clients,
        "workers": max(workers, instances),
        "statuses": statuses,
        "jobs_per_s": round(jobs / seconds, 1),
        "latency_p50_ms": round(percentile(latencies, 0.5), 2),
        "latency_p99_ms": round(percentile(latencies, 0.99), 2),
        "follows_per_job": round(sum(report["follow_requests"] for report in reports) / jobs, 2),
        "redis_commands_per_job": round(sum(delta.values()) / jobs, 1),
        "redis_commands_sent_per_job": round(monitor.sent / sample, 1),
        "redis_commands_in_scripts_per_job": round(monitor.in_scripts / sample, 1),
        "redis_commands_per_job_by_command": {
            name: round(calls / jobs, 2) for name, calls in by_command
        },
        "seconds": round(seconds, 2),
        "wall_seconds": round(wall, 2),
        "cpu_s": {
            "redis": round(redis_cpu_after - redis_cpu_before, 2),
            "orchestrators": round(orchestrators_cpu, 2),
            "workers": round(workers_cpu, 2),
            "clients": round(sum(report.get("cpu_seconds", 0.0) for report in reports), 2),
        },
        "redis_keys_after": keys_left,
        "sample": sample,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("instances", "instances"), ("processes", "processes"), ("jobs/s", "jobs_per_s"),
        ("p50 ms", "latency_p50_ms"), ("p99 ms", "latency_p99_ms"),
        ("follows/job", "follows_per_job"),
        ("redis cmd/job", "redis_commands_per_job"),
        ("sent/job", "redis_commands_sent_per_job"),
    ]  # fmt: skip
    cpu = ["redis", "orchestrators", "workers", "clients"]
    print("  ".join(f"{title:>13}" for title, _ in columns), *(f"{f'cpu {c}':>17}" for c in cpu))
    for row in rows:
        print(
            "  ".join(f"{row[key]:>13}" for _, key in columns),
            *(f"{row['cpu_s'][c]:>17}" for c in cpu),
        )
    for row in rows:
        top = ", ".join(
            f"{name} {n}" for name, n in list(row["redis_commands_per_job_by_command"].items())[:8]
        )
        print(
            f"{row['instances']} instance(s) x {row['processes']} process(es), "
            f"Redis commands per job: {top}"
        )
        print(
            f"{row['instances']} instance(s), sampled over {row['sample']} jobs with MONITOR: "
            f"{row['redis_commands_sent_per_job']} commands per job sent by the orchestrators, "
            f"{row['redis_commands_in_scripts_per_job']} called by their scripts"
        )


async def serve_workers(address: str, first: int, count: int) -> None:
    """The workers of one instance: those of :mod:`benchmarks.grpc_workers`,
    numbered from ``first`` so that no two instances' workers share an id
    (a second stream for a worker id replaces the first, wherever it is)."""
    workers = [build(first + n, address, WORKER_TOKEN, WORKER_CONCURRENCY) for n in range(count)]
    await asyncio.gather(*(worker.run() for worker in workers))


async def main(args: argparse.Namespace) -> None:
    if args.serve_workers:
        address, first, count = args.serve_workers
        await serve_workers(address, int(first), int(count))
        return
    counts = [int(n) for n in args.instances.split(",")]
    per_instance = [int(n) for n in args.processes.split(",")]
    rows = [
        await measure(n, args.jobs, args.clients, args.workers, args.sample, p)
        for n in counts
        for p in per_instance
    ]
    print(
        f"{args.jobs} jobs, {args.clients} clients following with ?wait=, "
        f"{args.workers} gRPC workers, store in Redis"
    )
    print_table(rows)
    print(json.dumps({"benchmark": "cluster", "cores": os.cpu_count(), "results": rows}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--instances", default="1,2", help="instance counts to compare")
    parser.add_argument(
        "--processes", default="1", help="server processes per instance to compare (1,2)"
    )
    parser.add_argument(
        "--sample", type=int, default=300, help="jobs of the run watched with MONITOR"
    )
    parser.add_argument(
        "--serve-workers", nargs=3, metavar=("ADDRESS", "FIRST", "COUNT"), help=argparse.SUPPRESS
    )
    asyncio.run(main(parser.parse_args()))
