"""What an orchestrator costs while it holds connections and does nothing:
resident memory with many idle gRPC worker streams and many SSE followers,
and CPU while idle (issues 17 and 18).

``avtomatika serve`` runs on the embedded store as its own process; this
process opens the connections. Reported, one JSON line per scenario:

- ``streams``: RSS of the server holding N idle worker streams (each a
  Connect stream that sent its Hello and got its Welcome). The streams are
  multiplexed on channels of ``--streams-per-channel`` each (HTTP/2 allows
  it, and one machine's descriptors would not hold 10,000 connections twice,
  ours and the server's); the server's cost per stream is what is measured.
- ``followers``: RSS with N clients following one running job's SSE stream
  (``GET /api/v1/jobs/{id}/events``), each on its own connection.
- ``idle``: the server's CPU share over ``--idle-seconds`` with 100 idle
  gRPC workers and 100 REST workers long-polling, and no job.

    python -m benchmarks.idle [--streams 1000 10000] [--followers 2000]
        [--idle-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from avtomatika.v1 import worker_service_pb2_grpc
from avtomatika.v1.worker_pb2 import WorkerRegistration, WorkerResources
from avtomatika.v1.worker_service_pb2 import ConnectRequest, ConnectResponse, Hello
from tests.support.serve import Served, serve_env, served
from tests.support.tokens import CLIENT_TOKEN, WORKER_TOKEN

ROOT = Path(__file__).resolve().parent.parent
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES / 2**20


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def raise_descriptor_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@asynccontextmanager
async def server() -> AsyncIterator[Served]:
    # No per-address cap: every connection here comes from 127.0.0.1.
    blueprints = str(ROOT / "examples" / "blueprints")
    env = serve_env(MAX_CONNECTIONS_PER_ADDRESS="0")
    async with served("--blueprints-dir", blueprints, env=env) as process:
        yield process


async def settle(pid: int) -> float:
    """RSS once it stops growing (allocations of the last connections done)."""
    last = rss_mb(pid)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = rss_mb(pid)
        if abs(now - last) < 0.5:
            return now
        last = now
    return last


async def open_streams(
    address: str, count: int, per_channel: int, prefix: str
) -> tuple[list[grpc.aio.Channel], list[Any]]:
    channels: list[grpc.aio.Channel] = []
    calls: list[Any] = []
    for start in range(0, count, per_channel):
        # A connection of its own: grpc shares one between channels with the
        # same target and options, and the server allows 1,000 streams on one.
        channel = grpc.aio.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        channels.append(channel)
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        batch = [
            _hello(stub, f"{prefix}-{n}") for n in range(start, min(count, start + per_channel))
        ]
        calls += await asyncio.gather(*batch)
    return channels, calls


async def _hello(stub: worker_service_pb2_grpc.WorkerServiceAsyncStub, worker_id: str) -> Any:
    call: Any = stub.Connect(None, metadata=(("x-worker-token", WORKER_TOKEN),))
    registration = WorkerRegistration(
        worker_id=worker_id, skills=["idle"], resources=WorkerResources(max_concurrent_tasks=1)
    )
    await call.write(ConnectRequest(hello=Hello(registration=registration, initial_credits=1)))
    welcome = await call.read()
    if not (isinstance(welcome, ConnectResponse) and welcome.HasField("welcome")):
        raise RuntimeError(f"{worker_id}: no Welcome but {welcome!r}")
    return call


async def close_streams(channels: Sequence[grpc.aio.Channel], calls: Sequence[Any]) -> None:
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close(None)


async def streams_scenario(counts: Sequence[int], per_channel: int) -> None:
    for count in counts:
        async with server() as process:
            pid = process.process.pid
            base = await settle(pid)
            started = time.perf_counter()
            channels, calls = await open_streams(
                f"127.0.0.1:{process.grpc_port}", count, per_channel, "idle"
            )
            opened = time.perf_counter() - started
            held = await settle(pid)
            report(
                "streams",
                streams=count,
                channels=len(channels),
                rss_base_mb=round(base, 1),
                rss_mb=round(held, 1),
                kb_per_stream=round((held - base) * 1024 / count, 1),
                open_seconds=round(opened, 1),
            )
            await close_streams(channels, calls)


async def followers_scenario(count: int) -> None:
    async with server() as process:
        pid = process.process.pid
        url = f"http://127.0.0.1:{process.rest_port}"
        headers = {"X-Client-Token": CLIENT_TOKEN}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(url, headers=headers, connector=connector) as http:
            # A job nobody serves: it waits for a worker, and its stream stays open.
            job_id = await _create_job(http)
            base = await settle(pid)
            streams = await asyncio.gather(*(_follow(http, job_id) for _ in range(count)))
            held = await settle(pid)
            report(
                "followers",
                followers=count,
                rss_base_mb=round(base, 1),
                rss_mb=round(held, 1),
                kb_per_follower=round((held - base) * 1024 / count, 1),
            )
            for stream in streams:
                stream.close()


async def _create_job(http: aiohttp.ClientSession) -> str:
    """A job of examples/blueprints/echo.py: no worker has its skill here, so
    it waits, and its followers' streams stay open."""
    created = await http.post("/api/v1/jobs/echo", json={"initial_data": {}})
    assert created.status == 202, await created.text()
    job_id: str = (await created.json())["job_id"]
    return job_id


async def _follow(http: aiohttp.ClientSession, job_id: str) -> aiohttp.ClientResponse:
    response = await http.get(f"/api/v1/jobs/{job_id}/events")
    assert response.status == 200, await response.text()
    await response.content.readuntil(b"\n\n")  # the first event: the job as it is
    return response


async def idle_scenario(seconds: float) -> None:
    async with server() as process:
        pid = process.process.pid
        channels, calls = await open_streams(
            f"127.0.0.1:{process.grpc_port}", 100, 100, "idle-grpc"
        )
        url = f"http://127.0.0.1:{process.rest_port}"
        headers = {"X-Worker-Token": WORKER_TOKEN}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(url, headers=headers, connector=connector) as http:
            polls = [asyncio.create_task(_long_poll(http, f"idle-rest-{n}")) for n in range(100)]
            await asyncio.sleep(2)  # registered and polling
            before, started = cpu_seconds(pid), time.perf_counter()
            await asyncio.sleep(seconds)
            used, elapsed = cpu_seconds(pid) - before, time.perf_counter() - started
            for poll in polls:
                poll.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
        await close_streams(channels, calls)
        # The one line to read in `make bench`'s output (target: under 2%).
        print(
            f"Idle server, no job, 100 idle gRPC workers and 100 REST long-polls: "
            f"{100 * used / elapsed:.2f}% of a core ({used:.2f} s of CPU in {elapsed:.0f} s)",
            flush=True,
        )
        report(
            "idle",
            grpc_workers=100,
            rest_long_polls=100,
            seconds=round(elapsed, 1),
            cpu_seconds=round(used, 3),
            core_percent=round(100 * used / elapsed, 2),
        )


async def _long_poll(http: aiohttp.ClientSession, worker_id: str) -> None:
    body = {"worker_id": worker_id, "supported_skills": ["idle"]}
    registered = await http.post("/_worker/workers/register", json=body)
    assert registered.status == 200, await registered.text()
    while True:
        response = await http.get(f"/_worker/workers/{worker_id}/tasks/next")
        await response.read()


def report(scenario: str, **numbers: Any) -> None:
    print(json.dumps({"scenario": scenario, **numbers}), flush=True)


async def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--streams-per-channel", type=int, default=500)
    parser.add_argument("--followers", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    raise_descriptor_limit()
    if args.streams:
        await streams_scenario(args.streams, args.streams_per_channel)
    if args.followers:
        await followers_scenario(args.followers)
    if args.idle_seconds:
        await idle_scenario(args.idle_seconds)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
