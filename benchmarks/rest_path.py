"""``make bench`` (``--rest``): the REST path the users of the system we
replace take, on it (avtomatika 1.0b13 from PyPI) and on ours, side by side.
C clients create a job over REST, then poll ``GET /api/v1/jobs/{id}`` every
20 ms (no ``?wait=``) until it ends; four REST workers on the public SDK
(``avtomatika-worker`` 1.0b7, or 1.0b20, each in a throwaway virtualenv,
concurrency 50 each, the SDK's defaults otherwise) take the tasks by
long-polling. Our orchestrator runs in this process, on the embedded store
(or Redis: ``--stores embedded,redis``).

The reference is :mod:`benchmarks.reference_app`, run by a throwaway
virtualenv's Python with ``avtomatika[redis]==1.0b13`` (and
``opentelemetry-api``: without it 1.0b13 fails every job, its no-op tracing
fallback calling an instance), always on Redis: its ``MemoryStorage`` cannot
take SDK 1.0b7 workers (their registration's ``"hot_skills": null`` fails
every dispatch) nor two tasks of equal priority for one worker (its
``PriorityQueue`` compares the task dicts). SDK 1.0b20 does not work against
it (``--reference-sdk 1.0b7`` only, by default).

Reported per run:

- jobs/s, create -> finished latency (p50, p99) as the clients see it, and
  the polls each job took; a run where any job does not finish is an error;
- the requests the server answered per job, per endpoint and status, from
  its access log (ours: the ``avtomatika.access`` logger; 1.0b13:
  ``aiohttp.access``; both counted, not written), so a run where workers'
  long-polls come back empty (204) shows as such;
- CPU ms per job of the server process, the workers, the clients and the
  redis-server, and Redis commands per job;
- then ours / 1.0b13, per round, SDK and C: jobs/s and server CPU per job.

Configurations are interleaved round by round (``--rounds``), the order
reversed every other round, so a slow regime that comes and goes shows as a
spread, not as a lucky or unlucky configuration.

    python -m benchmarks.rest_path [--jobs 2000] [--clients 32,128]
        [--sdk 1.0b7,1.0b20] [--reference-sdk 1.0b7] [--stores embedded]
        [--rounds 1] [--poll-ms 20] [--no-access-log]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from avtomatika.logs.access import ACCESS_LOG
from benchmarks.cluster import redis_counters
from benchmarks.end_to_end import (
    BENCH_LOG_LEVEL,
    ROOT,
    Run,
    bench_logging,
    client_load,
    load_figures,
    process_cpu_seconds,
    rest_workers,
    throwaway_python,
    tree_cpu_seconds,
)
from tests.support.redis import RedisServer

WORKERS = 4
CONCURRENCY = 50
SDKS = {"1.0b7": "avtomatika-worker==1.0b7", "1.0b20": "avtomatika-worker==1.0b20"}
REFERENCE_VERSION = "1.0b13"
REFERENCE_SYSTEM = "1.0b13"  # its rows' system; ours are "Avtomatika"
REFERENCE = (f"avtomatika[redis]=={REFERENCE_VERSION}", "opentelemetry-api")
REFERENCE_APP = ROOT / "benchmarks" / "reference_app.py"
REFERENCE_SDKS = "1.0b7"  # the SDKs it works with

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


@contextmanager
def maybe_redis(store: str) -> Iterator[RedisServer | None]:
    """A redis-server on a free port for the block when ``store`` is Redis."""
    if store != "redis":
        yield None
        return
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def redis_meter(server: RedisServer | None) -> dict[str, Callable[[], float]]:
    """The redis-server's CPU seconds as a meter of the load, if there is one."""
    return {} if server is None else {"redis": lambda: redis_counters(server)[1]}


def redis_calls(server: RedisServer | None) -> dict[str, int]:
    return {} if server is None else redis_counters(server)[0]


async def measure(
    sdk: str,
    clients: int,
    jobs: int,
    poll_ms: float,
    access_log: bool = True,
    store: str = "embedded",
) -> dict[str, Any]:
    """Our server (in this process) on ``store``, ``embedded`` or ``redis``."""
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as here, maybe_redis(store) as redis:
        run = Run(
            "rest", WORKERS, concurrency=CONCURRENCY, sdk=SDKS[sdk], sdk_env=sdk_env(here),
            redis_url=None if redis is None else redis.url,
        )  # fmt: skip
        # Logging as `serve` configures it (the lifecycle lines written to a
        # file, as 1.0b13's go to one); the access lines are counted instead
        # of written. On before the workers connect: aiohttp decides per
        # connection whether it logs, and theirs are kept alive from
        # registration on.
        with bench_logging(), counted_requests(access_log) as counter:
            await run.start()
            try:
                counter.counts.clear()
                calls_before = redis_calls(redis)
                report = await run.load(jobs, clients, poll_ms, redis_meter(redis))
                report["cpu_s"]["server"] = report["cpu_s"].pop("orchestrator")
                calls = command_delta(calls_before, redis_calls(redis))
                load_counts = counter.counts.copy()
            finally:
                await run.stop()
    return result_row("Avtomatika", store, sdk, clients, jobs, report, load_counts, calls)


def sdk_env(here: str) -> dict[str, str]:
    """The SDK workers' settings beyond the defaults: 1.0b20 reads skills
    and task files from directories of its own."""
    return {"TASK_FILES_DIR": f"{here}/files", "WORKER_SKILLS_DIR": f"{here}/skills"}


def command_delta(before: dict[str, int], after: dict[str, int]) -> int | None:
    """Redis commands between two ``INFO commandstats`` (but INFO's own)."""
    if not after:
        return None
    return sum(calls - before.get(name, 0) for name, calls in after.items() if name != "info")


async def measure_reference(sdk: str, clients: int, jobs: int, poll_ms: float) -> dict[str, Any]:
    """avtomatika 1.0b13 (benchmarks/reference_app.py in its own virtualenv)
    on Redis, with the same workers and clients as ours."""
    python = throwaway_python(*REFERENCE)
    client_token, worker_token = secrets.token_hex(8), secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="bench-ref-") as here, maybe_redis("redis") as redis:
        assert redis is not None
        clients_toml = Path(here) / "clients.toml"
        # A quota far beyond the run: 1.0b13 takes one off per client request.
        clients_toml.write_text(
            f'[bench]\ntoken = "{client_token}"\nplan = "bench"\nmonthly_attempts = 1000000000\n'
        )
        env = {
            # Not the checkout on the path: `avtomatika` there is ours.
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "CLIENTS_CONFIG_PATH": str(clients_toml),
            "GLOBAL_WORKER_TOKEN": worker_token,
            "RATE_LIMITING_ENABLED": "false",
            # A worker's registration lives twice this; its heartbeats do not
            # renew it (1.0b13 answers SDK 1.0b7's with HTTP 500: "hot_cache"
            # is null), so at the default, 60, a run past 120 s loses every
            # worker and quarantines the jobs still to dispatch.
            "WORKER_HEALTH_CHECK_INTERVAL_SECONDS": "3600",
            "LOG_LEVEL": BENCH_LOG_LEVEL,
            "API_HOST": "127.0.0.1",
            "REFERENCE_STORE": "redis",
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis.port),
        }
        # Its log (stdout) goes to a file: 1.0b13 sends the root logger there.
        server_log = Path(here) / "server.log"
        log = os.open(server_log, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            server = await asyncio.create_subprocess_exec(
                str(python), str(REFERENCE_APP), env=env, stdin=asyncio.subprocess.PIPE,
                stdout=log, stderr=asyncio.subprocess.PIPE,
                limit=2**24,  # its request count is one line, a key per job
            )  # fmt: skip
        finally:
            os.close(log)
        workers: list[asyncio.subprocess.Process] = []
        try:
            port = (await announced(server, "port")).split()
            if port[1:] != ["version", REFERENCE_VERSION]:
                raise SystemExit(f"the reference server is not {REFERENCE_VERSION}: {port}")
            url = f"http://127.0.0.1:{port[0]}"
            workers = await rest_workers(
                SDKS[sdk], url, worker_token, WORKERS, CONCURRENCY, sdk_env(here)
            )
            await reference_workers_registered(url, client_token, workers)
            assert server.stdin is not None
            server.stdin.write(b"reset\n")
            calls_before = redis_calls(redis)
            report = await client_load(
                url, client_token, jobs, clients, poll_ms,
                {"server": lambda: tree_cpu_seconds(server.pid),
                 "workers": lambda: sum(process_cpu_seconds(p.pid) for p in workers),
                 **redis_meter(redis)},
            )  # fmt: skip
            calls = command_delta(calls_before, redis_calls(redis))
            log_tail = server_log.read_text(errors="replace").splitlines()[-20:]
            ensure_finished(REFERENCE_SYSTEM, report, jobs, "\n".join(log_tail))
            server.stdin.write(b"requests\n")
            lines = json.loads(await announced(server, "requests"))
        finally:
            for process in workers:
                process.terminate()
            for process in workers:
                await process.wait()
            if server.stdin is not None:
                server.stdin.close()
            await server.wait()
    counts: Counter[tuple[str, int]] = Counter()
    for line, count in lines.items():
        method, target, status = line.split(" ")
        counts[route_of(method, target), int(status)] += count
    return result_row(REFERENCE_SYSTEM, "redis", sdk, clients, jobs, report, counts, calls)


async def announced(server: asyncio.subprocess.Process, what: str) -> str:
    """The rest of the reference server's next ``@@ <what> ...`` line."""
    assert server.stderr is not None
    seen = []
    async for raw in server.stderr:
        line = raw.decode().rstrip("\n")
        if line.startswith(f"@@ {what} "):
            return line.removeprefix(f"@@ {what} ")
        seen.append(line)
    raise SystemExit(f"the reference server ended before '{what}':\n" + "\n".join(seen[-30:]))


async def reference_workers_registered(
    url: str, token: str, workers: list[asyncio.subprocess.Process]
) -> None:
    """Until 1.0b13 lists all the workers (``GET /api/v1/workers``), 30 s
    at most (SDK 1.0b20 cannot register with it: HTTP 500)."""
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession(url, headers={"X-Client-Token": token}) as http:
        while time.monotonic() < deadline:
            async with http.get("/api/v1/workers") as response:
                if response.status == 200 and len(await response.json()) >= len(workers):
                    return
            for process in workers:
                if process.returncode is not None:
                    raise SystemExit(f"a worker process exited with code {process.returncode}")
            await asyncio.sleep(0.05)  # the harness waiting for the workers, not the system
    raise SystemExit(f"the workers did not register with {REFERENCE_SYSTEM} within 30 s")


def result_row(
    system: str,
    store: str,
    sdk: str,
    clients: int,
    jobs: int,
    report: dict[str, Any],
    counts: Counter[tuple[str, int]],
    redis_commands: int | None,
) -> dict[str, Any]:
    """One row of the table; a run where any job did not finish is an error."""
    ensure_finished(f"{system} ({store}, SDK {sdk}, C={clients})", report, jobs)
    per_route: dict[str, float] = {}
    for (route, status), count in sorted(counts.items()):
        per_route[f"{route} {status}"] = round(count / jobs, 2)
    empty_polls = sum(
        count for (route, status), count in counts.items()
        if route.endswith("/tasks/next") and status == 204
    )  # fmt: skip
    cpu = report["cpu_s"]
    return {
        "system": system,
        "store": store,
        "sdk": sdk,
        "clients": clients,
        "jobs": jobs,
        **load_figures(report, jobs),
        "polls_per_job": round(report["follow_requests"] / jobs, 2),
        "requests_per_job": round(sum(counts.values()) / jobs, 2) if counts else None,
        "empty_polls_per_job": round(empty_polls / jobs, 2) if counts else None,
        "requests_per_job_by_route": per_route,
        "redis_commands_per_job": None
        if redis_commands is None
        else round(redis_commands / jobs, 1),
        "cpu_ms_per_job": {name: round(seconds * 1000 / jobs, 2) for name, seconds in cpu.items()},
        "seconds": round(report["seconds"], 2),
    }


def ensure_finished(label: str, report: dict[str, Any], jobs: int, detail: str = "") -> None:
    statuses = dict(report["statuses"])
    if statuses != {"finished": jobs}:
        raise SystemExit(f"{label}: of {jobs} jobs, {statuses}\n{detail}".rstrip())


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of our rows against the reference's row of the same round, SDK
    and C: jobs/s and server CPU per job (and server + Redis per job)."""
    found = []
    for theirs in (row for row in rows if row["system"] == REFERENCE_SYSTEM):
        for ours in rows:
            same = ("round", "sdk", "clients")
            if ours["system"] == REFERENCE_SYSTEM or any(ours[k] != theirs[k] for k in same):
                continue
            their_cpu, our_cpu = theirs["cpu_ms_per_job"], ours["cpu_ms_per_job"]
            found.append({
                "round": ours["round"], "sdk": ours["sdk"], "clients": ours["clients"],
                "store": ours["store"], "reference_store": theirs["store"],
                "jobs_per_s": round(ours["jobs_per_s"] / theirs["jobs_per_s"], 2),
                "server_cpu_per_job": round(our_cpu["server"] / their_cpu["server"], 2),
                "server_and_redis_cpu_per_job": round(
                    (our_cpu["server"] + our_cpu.get("redis", 0))
                    / (their_cpu["server"] + their_cpu.get("redis", 0)), 2
                ),
            })  # fmt: skip
    return found


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("system", "system", 10), ("store", "store", 8), ("sdk", "sdk", 6), ("C", "clients", 4),
        ("jobs/s", "jobs_per_s", 7), ("p50 ms", "latency_p50_ms", 8),
        ("p99 ms", "latency_p99_ms", 8), ("polls/job", "polls_per_job", 9),
        ("req/job", "requests_per_job", 7), ("204/job", "empty_polls_per_job", 7),
        ("Redis cmd/job", "redis_commands_per_job", 13),
    ]  # fmt: skip
    cpu = ["server", "workers", "clients", "redis"]
    print(
        "  ".join(f"{title:>{width}}" for title, _, width in columns),
        *(f"{f'cpu ms/job {c}':>18}" for c in cpu),
    )
    for row in rows:
        print(
            "  ".join(f"{cell(row[key]):>{width}}" for _, key, width in columns),
            *(f"{cell(row['cpu_ms_per_job'].get(c)):>18}" for c in cpu),
        )
    for ratio in ratios(rows):
        print(
            f"round {ratio['round'] + 1}, SDK {ratio['sdk']}, C={ratio['clients']}, "
            f"ours ({ratio['store']}) / {REFERENCE_VERSION} ({ratio['reference_store']}): "
            f"jobs/s x{ratio['jobs_per_s']:.2f}, "
            f"server CPU per job x{ratio['server_cpu_per_job']:.2f} "
            f"(server + Redis x{ratio['server_and_redis_cpu_per_job']:.2f})"
        )
    print("server requests per job, by route and status:")
    for row in rows:
        routes = ", ".join(f"{k} {v}" for k, v in row["requests_per_job_by_route"].items())
        print(f"  {row['system']} {row['store']} {row['sdk']} C={row['clients']}: {routes or '-'}")


def cell(value: Any) -> Any:
    return "-" if value is None else value


async def measure_round(
    round_: int,
    jobs: int,
    clients: str,
    sdks: str,
    reference_sdks: str,
    stores: str,
    poll_ms: float,
    access_log: bool = True,
) -> list[dict[str, Any]]:
    """Every configuration once (``clients``, ``sdks``, ``reference_sdks``:
    the SDKs the reference runs with, and our ``stores``: comma-separated,
    as on the command line), as round ``round_`` (from 0); the order is
    reversed every other round, so the reference and ours take turns going
    first and drift shows as spread. Rows in a fixed order: by C and SDK,
    the reference first, then ours on each store."""
    runs: list[Callable[[], Awaitable[dict[str, Any]]]] = []
    for c in (int(c) for c in clients.split(",")):
        for sdk in sdks.split(","):
            if sdk in reference_sdks.split(","):
                runs.append(partial(measure_reference, sdk, c, jobs, poll_ms))
            for store in stores.split(","):
                runs.append(partial(measure, sdk, c, jobs, poll_ms, access_log, store))
    rows: dict[int, dict[str, Any]] = {}
    for n in reversed(range(len(runs))) if round_ % 2 else range(len(runs)):
        rows[n] = {"round": round_, **await runs[n]()}
        row = rows[n]
        # Progress on stderr (stdout carries the results): a round takes minutes.
        print(
            f"[rest path] round {round_ + 1}: {row['system']} ({row['store']}, SDK {row['sdk']}, "
            f"C={row['clients']}) {row['jobs_per_s']} jobs/s",
            file=sys.stderr,
        )
    return [rows[n] for n in range(len(runs))]


def describe(jobs: int, poll_ms: float) -> str:
    return (
        f"REST path: {jobs} jobs, clients polling every {poll_ms:g} ms, "
        f"{WORKERS} REST workers of the public SDK (concurrency {CONCURRENCY}); "
        f"{REFERENCE_SYSTEM} is avtomatika {REFERENCE_VERSION} from PyPI"
    )


async def main(args: argparse.Namespace) -> None:
    rows = []
    for round_ in range(args.rounds):
        rows += await measure_round(
            round_, args.jobs, args.clients, args.sdk, args.reference_sdk, args.stores,
            args.poll_ms, not args.no_access_log,
        )  # fmt: skip
    print(describe(args.jobs, args.poll_ms))
    print_table(rows)
    print(json.dumps({"benchmark": "rest_path", "results": rows, "ratios": ratios(rows)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", default="32,128", help="client counts, comma-separated")
    parser.add_argument("--sdk", default="1.0b7,1.0b20", help=f"of {', '.join(SDKS)}")
    parser.add_argument(
        "--reference-sdk", default=REFERENCE_SDKS, help="SDKs the reference runs with ('' for none)"
    )
    parser.add_argument("--stores", default="embedded", help="our stores: embedded,redis")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="no access log, so no requests per route (what the access log costs)",
    )
    asyncio.run(main(parser.parse_args()))
