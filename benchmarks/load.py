"""Client load for the benchmark: C concurrent clients create jobs over REST
and follow each one with ``GET /api/v1/jobs/{id}?wait=`` (no tight polling)
until it ends. Runs as its own process; prints one JSON line:
``{"created": N, "seconds": s, "cpu_seconds": s, "follow_requests": N,
"latencies_ms": [...], "statuses": {...}}``.

    python -m benchmarks.load URL TOKEN ENDPOINT JOBS CLIENTS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp

TERMINAL = {"finished", "failed", "cancelled", "error", "quarantined"}


async def run(url: str, token: str, endpoint: str, jobs: int, clients: int) -> None:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    follows = 0
    numbers = iter(range(jobs))
    connector = aiohttp.TCPConnector(limit=clients * 2)
    timeout = aiohttp.ClientTimeout(total=None)
    headers = {"X-Client-Token": token}
    async with aiohttp.ClientSession(
        url, headers=headers, connector=connector, timeout=timeout
    ) as http:

        async def client() -> None:
            for n in numbers:
                started = time.perf_counter()
                async with http.post(endpoint, json={"initial_data": {"n": n}}) as response:
                    job_id = (await response.json())["job_id"]
                while True:
                    nonlocal follows
                    follows += 1
                    async with http.get(f"/api/v1/jobs/{job_id}?wait=30") as response:
                        status = (await response.json())["status"]
                    if status in TERMINAL:
                        break
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] += 1

        began = time.perf_counter()
        cpu_began = time.process_time()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - began
        cpu_seconds = time.process_time() - cpu_began
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
    asyncio.run(run(url, token, endpoint, int(jobs), int(clients)))
