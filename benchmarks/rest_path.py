"""``make bench`` (``--rest``): the REST path the users of the system we
replace take. C clients create a job over REST, then poll
``GET /api/v1/jobs/{id}`` every 20 ms (no ``?wait=``) until it ends; four
REST workers on the public SDK (``avtomatika-worker`` 1.0b7, or 1.0b20,
each in a throwaway virtualenv, concurrency 50 each, the SDK's defaults
otherwise) take the tasks by long-polling. The orchestrator (embedded store)
runs in this process. Reported per run:

- jobs/s, create -> finished latency (p50, p99) as the clients see it, and
  the polls each job took;
- the requests the server answered per job, per endpoint and status, from
  its access log (the ``avtomatika.access`` logger counted, not written), so
  a run where workers' long-polls come back empty (204) shows as such;
- CPU ms per job of the server (this process), the workers and the clients.

Configurations are interleaved round by round (``--rounds``), so a slow
regime that comes and goes shows as a spread, not as a lucky or unlucky
configuration.

    python -m benchmarks.rest_path [--jobs 2000] [--clients 32,128]
        [--sdk 1.0b7,1.0b20] [--rounds 1] [--poll-ms 20] [--no-access-log]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from avtomatika.logs.access import ACCESS_LOG
from benchmarks.end_to_end import Run, load_figures

WORKERS = 4
CONCURRENCY = 50
SDKS = {"1.0b7": "avtomatika-worker==1.0b7", "1.0b20": "avtomatika-worker==1.0b20"}

# Ids in paths, so that requests count per route: /api/v1/jobs/{id}, ...
_IDS = re.compile(r"(?<=/jobs/)[^/]+|(?<=/workers/)(?!register\b)[^/]+")


def route_of(method: str, target: str) -> str:
    """``GET /api/v1/jobs/{id}`` for ``GET /api/v1/jobs/3fa9...?x=1``."""
    return f"{method} {_IDS.sub('{id}', target.partition('?')[0])}"


class RequestCounter(logging.Handler):
    """Counts the access lines by route and status, formatting none."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[tuple[str, int]] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.__dict__
        if "status" in fields and "path" in fields:
            self.counts[route_of(fields["method"], fields["path"]), fields["status"]] += 1


@contextmanager
def counted_requests(enabled: bool = True) -> Iterator[RequestCounter]:
    """The access log on, into a counter only, for the block (left as it
    is, off in this process, when not ``enabled``: to measure its cost)."""
    counter = RequestCounter()
    if not enabled:
        yield counter
        return
    level, propagate = ACCESS_LOG.level, ACCESS_LOG.propagate
    ACCESS_LOG.setLevel(logging.INFO)
    ACCESS_LOG.propagate = False
    ACCESS_LOG.addHandler(counter)
    try:
        yield counter
    finally:
        ACCESS_LOG.removeHandler(counter)
        ACCESS_LOG.setLevel(level)
        ACCESS_LOG.propagate = propagate


async def measure(
    sdk: str, clients: int, jobs: int, poll_ms: float, access_log: bool = True
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as here:
        # 1.0b20 reads skills and task files from directories of its own.
        env = {"TASK_FILES_DIR": f"{here}/files", "WORKER_SKILLS_DIR": f"{here}/skills"}
        run = Run("rest", WORKERS, concurrency=CONCURRENCY, sdk=SDKS[sdk], sdk_env=env)
        # On before the workers connect: aiohttp decides per connection
        # whether it logs, and theirs are kept alive from registration on.
        with counted_requests(access_log) as counter:
            await run.start()
            try:
                counter.counts.clear()
                report = await run.load(jobs, clients, poll_ms)
                load_counts = counter.counts.copy()
            finally:
                await run.stop()
    per_route: dict[str, float] = {}
    for (route, status), count in sorted(load_counts.items()):
        per_route[f"{route} {status}"] = round(count / jobs, 2)
    empty_polls = sum(
        count for (route, status), count in load_counts.items()
        if route.endswith("/tasks/next") and status == 204
    )  # fmt: skip
    cpu = report["cpu_s"]
    return {
        "sdk": sdk,
        "clients": clients,
        "jobs": jobs,
        **load_figures(report, jobs),
        "polls_per_job": round(report["follow_requests"] / jobs, 2),
        "requests_per_job": round(sum(load_counts.values()) / jobs, 2),
        "empty_polls_per_job": round(empty_polls / jobs, 2),
        "requests_per_job_by_route": per_route,
        "cpu_ms_per_job": {
            "server": round(cpu["orchestrator"] * 1000 / jobs, 2),
            "workers": round(cpu["workers"] * 1000 / jobs, 2),
            "clients": round(cpu["clients"] * 1000 / jobs, 2),
        },
        "seconds": round(report["seconds"], 2),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("sdk", "sdk"), ("C", "clients"), ("jobs/s", "jobs_per_s"),
        ("p50 ms", "latency_p50_ms"), ("p99 ms", "latency_p99_ms"),
        ("polls/job", "polls_per_job"), ("req/job", "requests_per_job"),
        ("204/job", "empty_polls_per_job"),
    ]  # fmt: skip
    cpu = ["server", "workers", "clients"]
    print(
        "  ".join(f"{title:>8}" for title, _ in columns),
        *(f"{f'cpu ms/job {c}':>18}" for c in cpu),
    )
    for row in rows:
        print(
            "  ".join(f"{row[key]:>8}" for _, key in columns),
            *(f"{row['cpu_ms_per_job'][c]:>18}" for c in cpu),
        )
    print("server requests per job, by route and status:")
    for row in rows:
        routes = ", ".join(f"{k} {v}" for k, v in row["requests_per_job_by_route"].items())
        print(f"  {row['sdk']} C={row['clients']}: {routes}")


async def main(args: argparse.Namespace) -> None:
    rows = [
        await measure(sdk, int(clients), args.jobs, args.poll_ms, not args.no_access_log)
        for _ in range(args.rounds)
        for sdk in args.sdk.split(",")
        for clients in args.clients.split(",")
    ]
    print(
        f"REST path: {args.jobs} jobs, clients polling every {args.poll_ms:g} ms, "
        f"{WORKERS} REST workers of the public SDK (concurrency {CONCURRENCY})"
    )
    print_table(rows)
    print(json.dumps({"benchmark": "rest_path", "results": rows}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", default="32,128", help="client counts, comma-separated")
    parser.add_argument("--sdk", default="1.0b7,1.0b20", help=f"of {', '.join(SDKS)}")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="no access log, so no requests per route (what the access log costs)",
    )
    asyncio.run(main(parser.parse_args()))
