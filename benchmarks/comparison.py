"""``make bench``: every scenario, then one table against Dramatiq measured
in the same run.

Scenarios (``--scenarios``, comma-separated; all by default):

- ``grpc``: the embedded store, Python SDK workers over gRPC, clients
  following with ``?wait=`` (:mod:`benchmarks.end_to_end`);
- ``redis``: the same with the store in Redis, one instance
  (:mod:`benchmarks.cluster`; ``make bench-redis`` compares 1 and 2);
- ``processes``: the ``redis`` scenario with the instance served by
  ``avtomatika serve --processes 2`` (two server processes sharing its
  ports), then 2 processes / 1 process of the same round;
- ``dramatiq``: Dramatiq on a Redis broker with the Results middleware,
  2 processes x 8 threads, C closed-loop clients doing ``send`` then
  ``get_result`` (:mod:`benchmarks.dramatiq_app`, in a throwaway
  virtualenv, ``.bench-venv-dramatiq-redis-2.2.1``);
- ``rest``: the REST path of the system we replace (:mod:`benchmarks.rest_path`),
  on it (avtomatika 1.0b13 from PyPI, on Redis, SDK 1.0b7 workers) and on
  ours (the embedded store; ``--rest-stores embedded,redis`` adds Redis),
  then ours / 1.0b13 per round and C;
- ``open``: the ``grpc`` scenario's setup under a moderate open-loop load,
  ``--open-rate`` jobs/s (200) created on a fixed clock for ``--open-jobs``
  jobs (3,000), each followed with ``?wait=`` (:mod:`benchmarks.load`): the
  CPU per job when the orchestrator is not saturated, its user/kernel split,
  and its ratio to the ``grpc`` scenario's of the same round.

``grpc``, ``redis``, ``processes`` and ``dramatiq`` share a table: jobs/s,
p50/p99, CPU ms per job of the orchestrator and of everything (orchestrator,
workers, clients, Redis), and Redis commands per job (``INFO commandstats``
deltas of a redis-server started for the run on a free port); then ours /
Dramatiq, jobs/s and total CPU per job. With ``--rounds N`` the scenarios run
interleaved N times.

    python -m benchmarks.comparison [--scenarios grpc,open,redis,processes,dramatiq,rest]
        [--jobs 5000] [--clients 32] [--rounds 1] [--open-rate 200] [--open-jobs 3000]
        [--rest-jobs 2000] [--rest-clients 32,128] [--sdk 1.0b7,1.0b20]
        [--reference-sdk 1.0b7] [--rest-stores embedded]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from contextlib import AsyncExitStack
from typing import Any

from benchmarks import cluster, end_to_end, rest_path
from benchmarks.end_to_end import ROOT, load_figures, throwaway_python
from tests.support.redis import RedisServer

DRAMATIQ = "dramatiq[redis]==2.2.1"
DRAMATIQ_PROCESSES = 2
DRAMATIQ_THREADS = 8
# Connections the open-loop client opens before it starts; it opens more if
# they are all following jobs when one is due (at 200/s and a few ms a job,
# about one is busy).
OPEN_CONNECTIONS = 16


async def dramatiq(jobs: int, clients: int) -> dict[str, Any]:
    """One Dramatiq run on a fresh redis-server."""
    python = throwaway_python(DRAMATIQ)
    server = RedisServer()
    server.start()
    async with AsyncExitStack() as stack:
        stack.callback(server.close)
        env = {"REDIS_URL": server.url}
        command = [
            str(python), "-m", "dramatiq", "benchmarks.dramatiq_app",
            "--processes", str(DRAMATIQ_PROCESSES), "--threads", str(DRAMATIQ_THREADS),
        ]  # fmt: skip
        # Dramatiq logs every process's start and stop on stderr.
        quiet = asyncio.subprocess.DEVNULL
        workers = await stack.enter_async_context(cluster.started(command, env=env, stderr=quiet))
        script = str(ROOT / "benchmarks" / "dramatiq_app.py")
        load = await stack.enter_async_context(
            cluster.started(
                [str(python), script, str(jobs), str(clients)],
                stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.PIPE,
                env=env,
            )
        )
        assert load.stdout is not None
        assert load.stdin is not None
        ready = await load.stdout.readline()
        if ready.strip() != b"ready":
            raise SystemExit(f"the Dramatiq client did not start: {ready!r}")
        calls_before, redis_cpu_before = cluster.redis_counters(server)
        workers_before = end_to_end.tree_cpu_seconds(workers.pid)
        load.stdin.write(b"go\n")
        output, _ = await load.communicate()
        calls_after, redis_cpu_after = cluster.redis_counters(server)
        workers_cpu = end_to_end.tree_cpu_seconds(workers.pid) - workers_before
    report = json.loads(output.decode().strip().splitlines()[-1])
    commands = sum(
        calls - calls_before.get(name, 0) for name, calls in calls_after.items() if name != "info"
    )
    return {
        "system": f"Dramatiq ({DRAMATIQ_PROCESSES} x {DRAMATIQ_THREADS}), Redis",
        "jobs": jobs,
        **load_figures(report, jobs),
        "redis_commands_per_job": round(commands / jobs, 1),
        "cpu_s": {
            "redis": round(redis_cpu_after - redis_cpu_before, 2),
            "workers": round(workers_cpu, 2),
            "clients": round(report["cpu_seconds"], 2),
        },
    }


def summary(system: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row of the comparison table from any scenario's result."""
    cpu = row["cpu_s"]
    jobs = row["jobs"]
    orchestrator = cpu.get("orchestrator", cpu.get("orchestrators"))
    return {
        "system": system,
        "jobs_per_s": row["jobs_per_s"],
        "p50_ms": row["latency_p50_ms"],
        "p99_ms": row["latency_p99_ms"],
        "orchestrator_cpu_ms_per_job": (
            None if orchestrator is None else round(orchestrator * 1000 / jobs, 3)
        ),
        "total_cpu_ms_per_job": round(sum(cpu.values()) * 1000 / jobs, 3),
        "redis_commands_per_job": row.get("redis_commands_per_job"),
    }


ONE_PROCESS = "Avtomatika, Redis store, 1 instance"
TWO_PROCESSES = "Avtomatika, Redis, 1 instance x 2 procs"


def print_comparison(rounds: list[list[dict[str, Any]]]) -> None:
    """The rows of every round, then each of ours against the Dramatiq run
    of its own round."""
    columns = [
        ("system", "system", 36), ("jobs/s", "jobs_per_s", 9), ("p50 ms", "p50_ms", 8),
        ("p99 ms", "p99_ms", 8), ("orch. ms/job", "orchestrator_cpu_ms_per_job", 13),
        ("total ms/job", "total_cpu_ms_per_job", 13),
        ("Redis cmd/job", "redis_commands_per_job", 14),
    ]  # fmt: skip
    print("  ".join(f"{title:>{width}}" for title, _, width in columns))
    for row in (row for rows in rounds for row in rows):
        cells = [f"{'-' if row[key] is None else row[key]:>{width}}" for _, key, width in columns]
        print("  ".join(cells))
    for rows in rounds:
        by_system = {row["system"]: row for row in rows}
        one, two = by_system.get(ONE_PROCESS), by_system.get(TWO_PROCESSES)
        if one is not None and two is not None:
            speed = two["jobs_per_s"] / one["jobs_per_s"]
            cpu = two["orchestrator_cpu_ms_per_job"] / one["orchestrator_cpu_ms_per_job"]
            print(f"Redis, 2 processes / 1: jobs/s x{speed:.2f}, server CPU per job x{cpu:.2f}")
        theirs = next((row for row in rows if row["system"].startswith("Dramatiq")), None)
        if theirs is None:
            continue
        for row in rows:
            if row is not theirs:
                speed = row["jobs_per_s"] / theirs["jobs_per_s"]
                cpu = row["total_cpu_ms_per_job"] / theirs["total_cpu_ms_per_job"]
                print(f"{row['system']} / Dramatiq: jobs/s x{speed:.2f}, CPU per job x{cpu:.2f}")


def open_row(run: dict[str, Any], saturated: float | None) -> dict[str, Any]:
    """A row of the open-loop table: CPU ms per job of each process, the
    orchestrator's user/kernel split, and its CPU per job over the saturated
    ``grpc`` run's of the same round, ``saturated`` CPU seconds per job
    (None without one)."""
    jobs = run["jobs"]
    per_job = {name: round(cpu * 1000 / jobs, 3) for name, cpu in run["cpu_s"].items()}
    split = run["orchestrator_cpu_split_s"]
    ratio = None
    if saturated is not None:
        ratio = round(run["cpu_s"]["orchestrator"] / jobs / saturated, 2)
    return {
        "jobs_per_s": run["jobs_per_s"],
        "p50_ms": run["latency_p50_ms"],
        "p99_ms": run["latency_p99_ms"],
        "orchestrator": per_job["orchestrator"],
        "user_system": f"{split['user'] * 1000 / jobs:.2f}/{split['system'] * 1000 / jobs:.2f}",
        "workers": per_job["workers"],
        "clients": per_job["clients"],
        "late": run["late"],
        "ratio": ratio,
    }


def print_open(rate: float, jobs: int, rows: list[dict[str, Any]]) -> None:
    columns = [
        ("jobs/s", "jobs_per_s", 8), ("p50 ms", "p50_ms", 7), ("p99 ms", "p99_ms", 7),
        ("orch. ms/job", "orchestrator", 13), ("user/sys", "user_system", 10),
        ("workers", "workers", 8), ("clients", "clients", 8), ("late", "late", 5),
        ("orch. vs saturated", "ratio", 19),
    ]  # fmt: skip
    print(
        f"Open loop: {jobs} one-task jobs created at {rate:g}/s, followed with ?wait=, "
        "2 gRPC SDK workers, embedded store; CPU ms per job; orch. vs saturated: "
        "orchestrator CPU per job over the grpc scenario's of the same round"
    )
    print("  ".join(f"{title:>{width}}" for title, _, width in columns))
    for row in rows:
        cells = [f"{'-' if row[key] is None else row[key]:>{width}}" for _, key, width in columns]
        print("  ".join(cells))


async def main(args: argparse.Namespace) -> None:
    scenarios = args.scenarios.split(",")
    unknown = set(scenarios) - {"grpc", "open", "redis", "processes", "dramatiq", "rest"}
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    rounds: list[list[dict[str, Any]]] = []
    runs: list[dict[str, Any]] = []
    rest_rows: list[dict[str, Any]] = []
    open_rows: list[dict[str, Any]] = []
    logging_used = ""
    for round_ in range(args.rounds):
        compared = []
        saturated: float | None = None
        if "grpc" in scenarios:
            with end_to_end.bench_logging() as logging_used:
                runs.append(await end_to_end.measure("grpc", args.jobs, args.clients, 2, 0))
            compared.append(summary("Avtomatika, embedded store, gRPC", runs[-1]))
            saturated = runs[-1]["cpu_s"]["orchestrator"] / args.jobs
        if "open" in scenarios:
            # Logging as the saturated run does, so their ratio compares like with like.
            with end_to_end.bench_logging() as logging_used:
                runs.append(
                    await end_to_end.measure(
                        "grpc", args.open_jobs, OPEN_CONNECTIONS, 2, 0, rate=args.open_rate
                    )
                )
            open_rows.append(open_row(runs[-1], saturated))
        if "redis" in scenarios:
            runs.append(await cluster.measure(1, args.jobs, args.clients, 2, sample=300))
            compared.append(summary(ONE_PROCESS, runs[-1]))
        if "processes" in scenarios:
            runs.append(
                await cluster.measure(1, args.jobs, args.clients, 2, sample=100, processes=2)
            )
            compared.append(summary(TWO_PROCESSES, runs[-1]))
        if "dramatiq" in scenarios:
            runs.append(await dramatiq(args.jobs, args.clients))
            compared.append(summary(runs[-1]["system"], runs[-1]))
        if compared:
            rounds.append(compared)
        if "rest" in scenarios:
            rest_rows += await rest_path.measure_round(
                round_, args.rest_jobs, args.rest_clients, args.sdk, args.reference_sdk,
                args.rest_stores, args.poll_ms,
            )  # fmt: skip
    if rounds:
        print(f"{args.jobs} one-task jobs, {args.clients} closed-loop clients")
        if logging_used:
            print(f"embedded store: {logging_used} (BENCH_LOG_LEVEL)")
        print_comparison(rounds)
    if open_rows:
        print_open(args.open_rate, args.open_jobs, open_rows)
    if rest_rows:
        print(rest_path.describe(args.rest_jobs, args.poll_ms))
        rest_path.print_table(rest_rows)
    print(
        json.dumps(
            {
                "benchmark": "comparison",
                "runs": runs,
                "open": open_rows,
                "rest_path": rest_rows,
                "rest_path_ratios": rest_path.ratios(rest_rows),
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenarios", default="grpc,open,redis,processes,dramatiq,rest")
    parser.add_argument("--open-rate", type=float, default=200.0)
    parser.add_argument("--open-jobs", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rest-jobs", type=int, default=2000)
    parser.add_argument("--rest-clients", default="32,128")
    parser.add_argument("--sdk", default="1.0b7,1.0b20")
    parser.add_argument("--reference-sdk", default=rest_path.REFERENCE_SDKS)
    parser.add_argument("--rest-stores", default="embedded", help="ours: embedded,redis")
    parser.add_argument("--poll-ms", type=float, default=20.0)
    asyncio.run(main(parser.parse_args()))
