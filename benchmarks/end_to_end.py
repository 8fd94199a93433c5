"""End-to-end throughput and latency with the embedded store.

The orchestrator runs in this process; SDK workers run in a separate process
(so the two cores are both used) and connect over gRPC; jobs are created over
REST by a bounded pool of concurrent clients. A job's latency is
``updated_at - created_at`` of its final record: from the moment it was
accepted to the moment its end state committed.

    python -m benchmarks.end_to_end [--jobs 5000] [--clients 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

import aiohttp

from avtomatika import OrchestratorEngine, Settings
from avtomatika.status import TERMINAL, job_status_name
from avtomatika.v1.job_pb2 import JobStatus
from tests.blueprints import echo_blueprint

ROOT = Path(__file__).resolve().parent.parent

WORKER_SCRIPT = """
import asyncio, os, sys
from avtomatika.worker import Worker

async def main():
    workers = []
    for n in range(int(os.environ["BENCH_WORKERS"])):
        w = Worker(worker_id=f"bench-{n}", addresses=os.environ["BENCH_GRPC"],
                   token=os.environ["BENCH_TOKEN"], max_concurrency=64)
        @w.skill("echo")
        async def echo(params, task):
            return {"n": params["n"]}
        workers.append(w)
    await asyncio.gather(*(w.run() for w in workers))

asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def create_jobs(base: str, token: str, jobs: int, clients: int) -> list[str]:
    ids: list[str] = []
    counter = iter(range(jobs))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        base, headers={"X-Client-Token": token}, connector=connector
    ) as http:

        async def client() -> None:
            for n in counter:
                async with http.post("/api/v1/jobs/echo", json={"initial_data": {"n": n}}) as r:
                    ids.append((await r.json())["job_id"])

        await asyncio.gather(*(client() for _ in range(clients)))
    return ids


async def main(jobs: int, clients: int, workers: int, via_rest: bool) -> None:
    client_token, worker_token = secrets.token_hex(8), secrets.token_hex(8)
    settings = Settings(
        api_host="127.0.0.1",
        api_port=0,
        grpc_host="127.0.0.1",
        grpc_port=0,
        client_token=client_token,
        global_worker_token=worker_token,
        log_level="WARNING",
    )
    async with OrchestratorEngine(config=settings, blueprints=[echo_blueprint()]) as orchestrator:
        env = {
            **os.environ,
            "BENCH_GRPC": f"127.0.0.1:{orchestrator.grpc_port}",
            "BENCH_TOKEN": worker_token,
            "BENCH_WORKERS": str(workers),
            "PYTHONPATH": str(ROOT),
        }
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", WORKER_SCRIPT, env=env)
        # Polling is fine here: this is the harness, not the system measured.
        while len(orchestrator.engine.workers.list()) < workers:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        storage = orchestrator.engine.storage
        started = time.perf_counter()
        if via_rest:
            ids = await create_jobs(
                f"http://127.0.0.1:{orchestrator.rest_port}", client_token, jobs, clients
            )
        else:
            ids = [await orchestrator.create_background_job("echo", {"n": n}) for n in range(jobs)]
        created = time.perf_counter()
        while True:
            counts = await storage.count_jobs()
            if sum(n for status, n in counts.items() if status in TERMINAL) >= jobs:
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        latencies = []
        for job_id in ids:
            job = await storage.get_job(job_id)
            assert job is not None
            latencies.append((job.updated_at_ms - job.created_at_ms) / 1000)
        process.terminate()
        await process.wait()
    finished = counts.get(JobStatus.JOB_STATUS_FINISHED, 0)
    by_status = {job_status_name(JobStatus.ValueType(k)): v for k, v in counts.items()}
    print(f"jobs: {jobs} ({finished} finished; {by_status})")
    how = f"over REST with {clients} clients" if via_rest else "in-process (no HTTP)"
    print(f"creation: {jobs / (created - started):,.0f} jobs/s {how}")
    print(f"end to end: {jobs / elapsed:,.0f} jobs/s ({elapsed:.2f} s)")
    print(
        "latency (accepted -> finished): "
        f"p50 {percentile(latencies, 0.50) * 1000:.1f} ms, "
        f"p90 {percentile(latencies, 0.90) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms, mean {statistics.fmean(latencies) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="create jobs with engine.create_background_job instead of over REST",
    )
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.clients, args.workers, not args.in_process))
