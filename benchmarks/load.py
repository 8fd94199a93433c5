"""Client load for the benchmark: C concurrent clients create jobs over REST
and follow each one with ``GET /api/v1/jobs/{id}?wait=`` until it ends, or,
with ``POLL_MS``, poll ``GET /api/v1/jobs/{id}`` (no ``?wait=``) every
``POLL_MS`` milliseconds as the REST clients of the system we replace do.
Runs as its own process; prints one JSON line:
``{"created": N, "seconds": s, "cpu_seconds": s, "follow_requests": N,
"latencies_ms": [...], "statuses": {...}}``.

With ``RATE`` (jobs/s) the load is open loop instead: job ``i`` is created
at ``i / RATE`` seconds from the start, on a fixed clock, whatever the
earlier jobs are doing; each is then followed as above. A job takes an idle
connection, or opens one when all are busy, so a creation never waits for
another job's follow (up to 200 connections: past that the server is
saturated); ``CLIENTS`` connections are opened beforehand. The
report adds ``rate`` (asked), ``connections`` (opened in all), ``late``
(creations that started over 1 ms after their time: the client itself
could not keep the clock) and ``late_max_ms``.

Each client holds one keep-alive HTTP/1.1 connection and speaks just the
HTTP it needs (requests with a body of known length, answers with a
``Content-Length``). On a 2-core machine the load generator shares the cores
with what it measures: aiohttp's client spent ~140 us of CPU per request
here, CPU the orchestrator then waited for; this spends under half of that.
Anything else from the server (an answer without a length, a closed
connection) is an error, not something to skip.

    python -m benchmarks.load URL TOKEN ENDPOINT JOBS CLIENTS [POLL_MS [RATE]]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

TERMINAL = {"finished", "failed", "cancelled", "error", "quarantined"}
# An open-loop creation that starts later than this after its time is late.
LATE_SECONDS = 0.001
# Past this many connections (the server allows 256 from one address) an
# open-loop job waits for a connection: the server is saturated by then.
MAX_OPEN_LOOP_CONNECTIONS = 200


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str):
        self._reader = reader
        self._writer = writer
        self._head = head  # the headers every request carries

    @classmethod
    async def open(cls, url: str, token: str) -> Connection:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"Host: {host}:{port}\r\nX-Client-Token: {token}\r\n")

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
        """Send one request; the status and the decoded JSON answer."""
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""
        self._writer.write(f"{method} {path} HTTP/1.1\r\n{self._head}{extra}\r\n".encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"{method} {path}: an answer without Content-Length: {lines}")
        status = int(lines[0].split(" ", 2)[1])
        return status, json.loads(await self._reader.readexactly(length))

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


class Follower:
    """Creates jobs and follows each to its end on one connection, tallying
    what every scenario reports."""

    def __init__(self, endpoint: str, poll_ms: float) -> None:
        self.endpoint = endpoint
        self.poll_ms = poll_ms
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.follows = 0

    async def job(self, http: Connection, n: int) -> None:
        started = time.perf_counter()
        body = json.dumps({"initial_data": {"n": n}}).encode()
        status, answer = await http.request("POST", self.endpoint, body)
        if status != 202:
            raise RuntimeError(f"POST {self.endpoint}: {status} {answer}")
        job_id = answer["job_id"]
        path = f"/api/v1/jobs/{job_id}" if self.poll_ms else f"/api/v1/jobs/{job_id}?wait=30"
        while True:
            self.follows += 1
            status, answer = await http.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET job {job_id}: {status} {answer}")
            if answer["status"] in TERMINAL:
                break
            if self.poll_ms:
                await asyncio.sleep(self.poll_ms / 1000)
        self.latencies.append((time.perf_counter() - started) * 1000)
        self.statuses[answer["status"]] += 1

    def report(self, jobs: int, seconds: float, cpu_seconds: float) -> dict[str, Any]:
        return {
            "created": jobs,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "follow_requests": self.follows,
            "latencies_ms": self.latencies,
            "statuses": self.statuses,
        }


async def closed_loop(
    follower: Follower, connections: list[Connection], jobs: int
) -> dict[str, Any]:
    """Each connection creates its next job when its last one has ended."""
    numbers = iter(range(jobs))

    async def client(http: Connection) -> None:
        for n in numbers:
            await follower.job(http, n)

    await asyncio.gather(*(client(http) for http in connections))
    return {}


async def open_loop(
    follower: Follower,
    connections: list[Connection],
    jobs: int,
    rate: float,
    url: str,
    token: str,
) -> dict[str, Any]:
    """Job ``n`` is created at ``n / rate`` s, on a connection nobody is using."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for http in connections:
        idle.put_nowait(http)
    late, late_max = 0, 0.0
    running: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []

    async def one(n: int) -> None:
        if not idle.empty() or len(connections) >= MAX_OPEN_LOOP_CONNECTIONS:
            http = await idle.get()
        else:
            http = await Connection.open(url, token)
            connections.append(http)
        try:
            await follower.job(http, n)
        finally:
            idle.put_nowait(http)

    def done(task: asyncio.Task[None]) -> None:
        running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            errors.append(task.exception())  # type: ignore[arg-type]

    began = time.perf_counter()
    for n in range(jobs):
        due = began + n / rate
        ahead = due - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)
        behind = time.perf_counter() - due
        if behind > LATE_SECONDS:
            late += 1
            late_max = max(late_max, behind)
        if errors:
            break
        task = asyncio.create_task(one(n))
        running.add(task)
        task.add_done_callback(done)
    await asyncio.gather(*running, return_exceptions=True)
    if errors:
        raise errors[0]
    return {
        "rate": rate,
        "connections": len(connections),
        "late": late,
        "late_max_ms": round(late_max * 1000, 2),
    }


async def run(
    url: str,
    token: str,
    endpoint: str,
    jobs: int,
    clients: int,
    poll_ms: float = 0,
    rate: float = 0,
) -> None:
    follower = Follower(endpoint, poll_ms)
    connections = list(await asyncio.gather(*(Connection.open(url, token) for _ in range(clients))))
    began = time.perf_counter()
    cpu_began = time.process_time()
    try:
        if rate:
            extra = await open_loop(follower, connections, jobs, rate, url, token)
        else:
            extra = await closed_loop(follower, connections, jobs)
    finally:
        seconds = time.perf_counter() - began
        cpu_seconds = time.process_time() - cpu_began
        await asyncio.gather(*(http.close() for http in connections))
    print(json.dumps({**follower.report(jobs, seconds, cpu_seconds), **extra}), flush=True)


if __name__ == "__main__":
    url, token, endpoint, jobs, clients = sys.argv[1:6]
    poll_ms = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    rate = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    asyncio.run(run(url, token, endpoint, int(jobs), int(clients), poll_ms, rate))
