"""``make bench``: end-to-end throughput and latency with the embedded store.

Everything runs on this machine, each part in its own process so both cores
are used: the orchestrator (this process), the workers (the Python SDK over
gRPC, or the public SDK 1.0b7 over the legacy REST API), and C clients that
create jobs over REST and follow each with ``?wait=``. Reported:

- jobs/s end to end, and create -> finished latency as the clients see it;
- dispatch latency: task queued -> picked up by a worker (from the engine's
  events, exact);
- cancel delivery: ``POST .../cancel`` -> the cancel reaches the running
  handler of a gRPC worker (wall clocks of two processes on one host).

A table is printed, then one JSON line with every number, including the CPU
seconds each process spent during the load (``cpu_s``: orchestrator,
workers, clients), which shows which one bounds throughput.

Profiling the orchestrator during the load: ``BENCH_PROFILE=out.prof`` writes
a cProfile file (``python -m pstats out.prof``); ``BENCH_PROFILER=pyinstrument``
or ``yappi`` uses that sampler instead, if it is importable (it is not a
dependency: e.g. ``pip install --target /tmp/prof pyinstrument`` and
``PYTHONPATH=/tmp/prof``). Profilers slow the process down; the throughput of
a profiled run is not a measurement.

The orchestrator logs as ``avtomatika serve`` does by default: INFO (an
access line per request and per gRPC call, a line per job lifecycle event),
in the text format, so the figures include what its users pay for the log.
The lines go to a file in a temporary directory (its path is printed), not
to the terminal. ``BENCH_LOG_LEVEL`` (e.g. WARNING) and ``LOG_FORMAT``
(``json``) change that, to measure what the log lines cost.

    python -m benchmarks.end_to_end [--jobs 5000] [--clients 32] [--workers 2]
        [--transport grpc|rest|both] [--cancels 200] [--loop asyncio|uvloop]

``--loop uvloop`` runs the orchestrator and the gRPC SDK workers on uvloop
(not a dependency: ``pip install uvloop`` first; see ``benchmarks/event_loop.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from avtomatika import OrchestratorEngine, Settings, StateMachineBlueprint
from avtomatika.blueprint.actions import ActionFactory
from avtomatika.engine.events import E, JobEvent
from avtomatika.logs.formats import configure_logging
from benchmarks import event_loop
from tests.support.blueprints import echo_blueprint

ROOT = Path(__file__).resolve().parent.parent
LEGACY_SDK = "avtomatika-worker==1.0b7"
REST_WORKER_SCRIPT = ROOT / "benchmarks" / "rest_worker.py"
BENCH_LOG_LEVEL = os.environ.get("BENCH_LOG_LEVEL", "INFO").upper()


def hold_blueprint() -> StateMachineBlueprint:
    """A task that runs until cancelled, to time cancel delivery."""
    bp = StateMachineBlueprint("hold", api_endpoint="jobs/hold", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task("hold", params={}, transitions={"success": "done"})

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


@contextlib.contextmanager
def bench_logging() -> Iterator[str]:
    """This process's logging (the embedded orchestrator's) configured as
    ``avtomatika serve`` configures it, at ``BENCH_LOG_LEVEL`` in
    ``LOG_FORMAT``, written to a file in a temporary directory, removed
    after; what was used, in words."""
    log_format = os.environ.get("LOG_FORMAT", "text")
    level = logging.getLevelNamesMapping()[BENCH_LOG_LEVEL]
    with tempfile.TemporaryDirectory(prefix="avtomatika-bench-") as directory:
        path = Path(directory) / "orchestrator.log"
        with path.open("w", encoding="utf-8") as stream:
            configure_logging(level, log_format, stream=stream)
            try:
                yield f"orchestrator logging at {BENCH_LOG_LEVEL} ({log_format}) to a file"
            finally:
                # The lines still batched are written before the file closes;
                # the handler goes with it.
                root = logging.getLogger()
                for handler in list(root.handlers):
                    handler.flush()
                    root.removeHandler(handler)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load_figures(report: dict[str, Any], jobs: int) -> dict[str, Any]:
    """What every scenario reports of a client load's JSON report: the jobs'
    ends, jobs/s, and the p50 and p99 of create -> end as the clients saw it."""
    latencies = report["latencies_ms"]
    return {
        "statuses": report["statuses"],
        "jobs_per_s": round(jobs / report["seconds"], 1),
        "latency_p50_ms": round(percentile(latencies, 0.5), 2),
        "latency_p99_ms": round(percentile(latencies, 0.99), 2),
    }


def throwaway_python(*requirements: str) -> Path:
    """The interpreter of a virtualenv of the benchmark's own with
    ``requirements`` installed (made once, under the checkout: ``.bench-venv``
    for the public SDK 1.0b7, ``.bench-venv-<names>-<versions>`` otherwise),
    so what we compare with never enters the project's dependencies."""
    # Letters, digits and dots only: Dramatiq finds its Lua scripts by a
    # glob, which the brackets of "dramatiq[redis]" in the path would break.
    name = (
        ""
        if requirements == (LEGACY_SDK,)
        else "-" + re.sub(r"[^\w.]+", "-", " ".join(requirements)).strip("-")
    )
    where = ROOT / f".bench-venv{name}"
    python = where / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements], check=True)
    return python


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5): indexes 11 and 12 after the ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a live process and of its live descendants (Dramatiq
    forks its worker processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += process_cpu_seconds(current)
        stack.extend(children.get(current, []))
    return total


async def rest_workers(
    sdk: str, url: str, token: str, count: int, concurrency: int, sdk_env: Mapping[str, str]
) -> list[asyncio.subprocess.Process]:
    """``count`` REST worker processes of the public SDK ``sdk`` (a
    requirement, installed in a throwaway virtualenv) working for ``url``."""
    python = throwaway_python(sdk)
    processes = []
    for n in range(count):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            **sdk_env,
            "ORCHESTRATOR_URL": url,
            "WORKER_TOKEN": token,
            "WORKER_ID": f"bench-rest-{n}",
            "MAX_CONCURRENT_TASKS": str(concurrency),
        }
        processes.append(
            await asyncio.create_subprocess_exec(
                str(python),
                str(REST_WORKER_SCRIPT),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    return processes


async def client_load(
    url: str,
    token: str,
    jobs: int,
    clients: int,
    poll_ms: float,
    meters: Mapping[str, Callable[[], float]],
    rate: float = 0,
) -> dict[str, Any]:
    """Run the client process (following with ``?wait=``, or polling every
    ``poll_ms``; closed loop, or open loop at ``rate`` jobs/s); its JSON
    report, with ``cpu_s``: what each of ``meters`` (CPU seconds so far)
    counted during the load, and the clients' own."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.load", url, token,
        "/api/v1/jobs/echo", str(jobs), str(clients), str(poll_ms), str(rate),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    before = {name: meter() for name, meter in meters.items()}
    # Jobs that never end are an error, not a long wait: no run this
    # measures is slower than 5 jobs/s unless something is stuck.
    deadline = max(60.0, jobs / 5)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), deadline)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SystemExit(f"{jobs} jobs not all ended within {deadline:g} s") from None
    after = {name: meter() for name, meter in meters.items()}
    if process.returncode != 0:
        raise SystemExit(f"the load client exited with code {process.returncode}")
    report: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
    report["cpu_s"] = {name: round(after[name] - before[name], 2) for name in meters}
    report["cpu_s"]["clients"] = round(report.pop("cpu_seconds", 0.0), 2)
    return report


@contextlib.contextmanager
def profiled(label: str) -> Iterator[None]:
    """Profile this process in the block when BENCH_PROFILE / BENCH_PROFILER say so."""
    out = os.environ.get("BENCH_PROFILE")
    tool = os.environ.get("BENCH_PROFILER", "cprofile" if out else "")
    if not tool:
        yield
        return
    target = f"{out or 'bench'}.{label}"
    if tool == "cprofile":
        profile = cProfile.Profile()
        profile.enable()
        try:
            yield
        finally:
            profile.disable()
            profile.dump_stats(target)
    elif tool == "pyinstrument":
        profiler = importlib.import_module("pyinstrument").Profiler(interval=0.0005)
        profiler.start()
        try:
            yield
        finally:
            profiler.stop()
            Path(f"{target}.txt").write_text(profiler.output_text(show_all=False))
    elif tool == "yappi":
        yappi = importlib.import_module("yappi")
        yappi.set_clock_type("cpu")
        yappi.start()
        try:
            yield
        finally:
            yappi.stop()
            yappi.get_func_stats().save(target, type="pstat")
            yappi.clear_stats()
    else:
        raise SystemExit(f"BENCH_PROFILER must be cprofile, pyinstrument or yappi, not {tool!r}")
    print(f"profile of the {label} load written to {target}*", file=sys.stderr)


class Run:
    """One orchestrator with its workers, measured."""

    def __init__(
        self,
        transport: str,
        workers: int,
        *,
        concurrency: int = 64,
        sdk: str = LEGACY_SDK,
        sdk_env: Mapping[str, str] | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.transport = transport
        self.worker_count = workers
        self.concurrency = concurrency
        self.sdk = sdk
        # The REST workers' SDK settings beyond their address, id and
        # concurrency (the SDK's defaults where unset).
        self.sdk_env = {"IDLE_POLL_DELAY": "0"} if sdk_env is None else dict(sdk_env)
        self.client_token = secrets.token_hex(8)
        self.worker_token = secrets.token_hex(8)
        self.dispatch_ms: list[float] = []
        self.processes: list[asyncio.subprocess.Process] = []
        settings = Settings(
            api_host="127.0.0.1",
            api_port=0,
            grpc_host="127.0.0.1",
            grpc_port=0,
            client_token=self.client_token,
            global_worker_token=self.worker_token,
            log_level=BENCH_LOG_LEVEL,
            job_wait_max_seconds=30,
            redis_url=redis_url,  # the embedded store when None
        )
        self.orchestrator = OrchestratorEngine(
            config=settings, blueprints=[echo_blueprint(), hold_blueprint()]
        )
        self.orchestrator.engine.events.subscribe(self._observe)

    def _observe(self, item: JobEvent) -> None:
        if item.event.type == E.HISTORY_EVENT_TYPE_TASK_PICKED_UP:
            self.dispatch_ms.append(float(item.event.duration_ms))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.orchestrator.rest_port}"

    async def start(self) -> None:
        await self.orchestrator.start()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.transport == "grpc":
            command = [
                sys.executable, "-m", "benchmarks.grpc_workers",
                f"127.0.0.1:{self.orchestrator.grpc_port}", self.worker_token,
                str(self.worker_count), str(self.concurrency),
            ]  # fmt: skip
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    *command, env=env, stdout=asyncio.subprocess.PIPE
                )
            )
        else:
            self.processes = await rest_workers(
                self.sdk, self.url, self.worker_token, self.worker_count, self.concurrency,
                self.sdk_env,
            )  # fmt: skip
        while len(self.orchestrator.engine.workers.list()) < self.worker_count:
            await asyncio.sleep(0.05)  # the harness waiting for its workers, not the system
            for process in self.processes:
                if process.returncode is not None:
                    raise SystemExit(f"a worker process exited with code {process.returncode}")

    async def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            await process.wait()
        await self.orchestrator.stop()

    async def load(
        self,
        jobs: int,
        clients: int,
        poll_ms: float = 0,
        meters: Mapping[str, Callable[[], float]] | None = None,
        rate: float = 0,
    ) -> dict[str, Any]:
        """Run the client process (following with ``?wait=``, or polling
        every ``poll_ms``; closed loop, or open loop at ``rate`` jobs/s);
        its JSON report, with the CPU seconds of the orchestrator, the
        workers, the clients and any other ``meters``."""
        times_before = os.times()
        with profiled(self.transport if not rate else f"{self.transport}-open"):
            report = await client_load(
                self.url, self.client_token, jobs, clients, poll_ms,
                {"orchestrator": time.process_time, "workers": self.workers_cpu_seconds,
                 **(meters or {})},
                rate,
            )  # fmt: skip
        times_after = os.times()
        # The orchestrator's CPU in user space and in the kernel (syscalls,
        # wake-ups), every thread of this process (grpc's poller too).
        report["orchestrator_cpu_split_s"] = {
            "user": round(times_after.user - times_before.user, 2),
            "system": round(times_after.system - times_before.system, 2),
        }
        return report

    def workers_cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(p.pid) for p in self.processes)

    async def cancels(self, count: int) -> list[float]:
        """Cancel ``count`` running gRPC tasks one by one (each once its
        handler runs); delivery delays in ms."""
        stdout = self.processes[0].stdout
        assert stdout is not None
        delays = []
        headers = {"X-Client-Token": self.client_token}
        async with aiohttp.ClientSession(self.url, headers=headers) as http:
            for _ in range(count):
                async with http.post("/api/v1/jobs/hold", json={"initial_data": {}}) as r:
                    job_id = (await r.json())["job_id"]
                started = (await stdout.readline()).decode().split()
                assert started[0] == "started", started
                sent = time.time()
                async with http.post(f"/api/v1/jobs/{job_id}/cancel") as r:
                    await r.read()
                line = (await stdout.readline()).decode().split()
                assert line[0] == "cancelled", line
                delays.append((float(line[2]) - sent) * 1000)
        return delays


async def measure(
    transport: str, jobs: int, clients: int, workers: int, cancels: int, rate: float = 0
) -> dict[str, Any]:
    """One run; open loop at ``rate`` jobs/s when given (``clients`` is then
    the connections opened beforehand)."""
    run = Run(transport, workers)
    await run.start()
    try:
        report = await run.load(jobs, clients, rate=rate)
        cancel_ms = await run.cancels(cancels) if transport == "grpc" and cancels else []
    finally:
        await run.stop()
    dispatch = run.dispatch_ms[:jobs]
    return {
        "transport": transport,
        "jobs": jobs,
        "clients": clients,
        "workers": workers,
        **load_figures(report, jobs),
        "dispatch_p50_ms": round(percentile(dispatch, 0.5), 2),
        "dispatch_p99_ms": round(percentile(dispatch, 0.99), 2),
        "cancel_p50_ms": round(percentile(cancel_ms, 0.5), 2) if cancel_ms else None,
        "cancel_p99_ms": round(percentile(cancel_ms, 0.99), 2) if cancel_ms else None,
        "seconds": round(report["seconds"], 2),
        "follows_per_job": round(report["follow_requests"] / jobs, 2),
        "cpu_s": report["cpu_s"],
        "orchestrator_cpu_split_s": report["orchestrator_cpu_split_s"],
        **{key: report[key] for key in ("rate", "connections", "late", "late_max_ms") if rate},
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("transport", "transport"), ("jobs/s", "jobs_per_s"),
        ("p50 ms", "latency_p50_ms"), ("p99 ms", "latency_p99_ms"),
        ("dispatch p50", "dispatch_p50_ms"), ("dispatch p99", "dispatch_p99_ms"),
        ("cancel p50", "cancel_p50_ms"), ("cancel p99", "cancel_p99_ms"),
    ]  # fmt: skip
    print("  ".join(f"{title:>12}" for title, _ in columns))
    for row in rows:
        print("  ".join(f"{row[key] if row[key] is not None else '-':>12}" for _, key in columns))


async def main(args: argparse.Namespace) -> None:
    transports = ["grpc", "rest"] if args.transport == "both" else [args.transport]
    with bench_logging() as logging_used:
        rows = [
            await measure(t, args.jobs, args.clients, args.workers, args.cancels)
            for t in transports
        ]
    print(
        f"{args.jobs} jobs, {args.clients} clients following with ?wait=, "
        f"{args.workers} workers, loop {args.loop}, {logging_used}"
    )
    print_table(rows)
    print(
        json.dumps(
            {
                "benchmark": "end_to_end",
                "loop": args.loop,
                "log_level": BENCH_LOG_LEVEL,
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--transport", choices=["grpc", "rest", "both"], default="grpc")
    parser.add_argument("--cancels", type=int, default=200)
    parser.add_argument("--loop", choices=event_loop.LOOPS, default=event_loop.chosen())
    args = parser.parse_args()
    os.environ[event_loop.ENV] = args.loop  # the SDK workers' process inherits it
    event_loop.run(main(args), args.loop)
