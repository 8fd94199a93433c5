"""Client load for the benchmark: C concurrent clients create jobs over REST
and follow each one with ``GET /api/v1/jobs/{id}?wait=`` until it ends, or,
with ``POLL_MS``, poll ``GET /api/v1/jobs/{id}`` (no ``?wait=``) every
``POLL_MS`` milliseconds as the REST clients of the system we replace do.
Runs as its own process; prints one JSON line:
``{"created": N, "seconds": s, "cpu_seconds": s, "follow_requests": N,
"latencies_ms": [...], "statuses": {...}}``.

Each client holds one keep-alive HTTP/1.1 connection and speaks just the
HTTP it needs (requests with a body of known length, answers with a
``Content-Length``). On a 2-core machine the load generator shares the cores
with what it measures: aiohttp's client spent ~140 us of CPU per request
here, CPU the orchestrator then waited for; this spends under half of that.
Anything else from the server (an answer without a length, a closed
connection) is an error, not something to skip.

    python -m benchmarks.load URL TOKEN ENDPOINT JOBS CLIENTS [POLL_MS]
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


async def run(
    url: str, token: str, endpoint: str, jobs: int, clients: int, poll_ms: float = 0
) -> None:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    follows = 0
    numbers = iter(range(jobs))

    async def client(http: Connection) -> None:
        nonlocal follows
        for n in numbers:
            started = time.perf_counter()
            body = json.dumps({"initial_data": {"n": n}}).encode()
            status, answer = await http.request("POST", endpoint, body)
            if status != 202:
                raise RuntimeError(f"POST {endpoint}: {status} {answer}")
            job_id = answer["job_id"]
            path = f"/api/v1/jobs/{job_id}" if poll_ms else f"/api/v1/jobs/{job_id}?wait=30"
            while True:
                follows += 1
                status, answer = await http.request("GET", path)
                if status != 200:
                    raise RuntimeError(f"GET job {job_id}: {status} {answer}")
                if answer["status"] in TERMINAL:
                    break
                if poll_ms:
                    await asyncio.sleep(poll_ms / 1000)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[answer["status"]] += 1

    connections = await asyncio.gather(*(Connection.open(url, token) for _ in range(clients)))
    began = time.perf_counter()
    cpu_began = time.process_time()
    try:
        await asyncio.gather(*(client(http) for http in connections))
    finally:
        seconds = time.perf_counter() - began
        cpu_seconds = time.process_time() - cpu_began
        await asyncio.gather(*(http.close() for http in connections))
    print(
        json.dumps(
            {
                "created": jobs,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "follow_requests": follows,
                "latencies_ms": latencies,
                "statuses": statuses,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    url, token, endpoint, jobs, clients = sys.argv[1:6]
    poll_ms = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    asyncio.run(run(url, token, endpoint, int(jobs), int(clients), poll_ms))
