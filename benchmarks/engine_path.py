"""The engine's CPU per one-task job, in process (issue 18, target 2).

An orchestrator on the embedded store with the ``echo`` blueprint and all
its listeners (history, webhooks, lifecycle log, metrics, followers), but no
servers and no network: jobs are created through the client use case the
transports call, their tasks claimed with :meth:`Engine.next_tasks` and
their results applied with :meth:`Engine.submit_result`, as a gRPC worker
stream does. What it prints is CPU time of this process per job, which a
loaded machine hardly moves (wall time it does).

    python -m benchmarks.engine_path [--jobs 2000] [--batch 32] [--rounds 5] [--listeners]

``BENCH_PROFILE=cprofile`` (or ``yappi``) profiles the last round and
prints its top functions by own and cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from avtomatika.blueprint.context import ClientInfo
from avtomatika.config import Settings
from avtomatika.engine.events import EventBus, JobEvent, Listener
from avtomatika.server import Orchestrator
from avtomatika.services.requests import JobRequest
from avtomatika.v1 import task_pb2
from avtomatika.v1.history_pb2 import HistoryEventType
from avtomatika.v1.task_pb2 import TaskResult
from benchmarks.end_to_end import bench_logging
from tests.support.blueprints import echo_blueprint

WORKER = "bench-worker"
CLIENT = ClientInfo(id="bench-client")


async def one_batch(orchestrator: Orchestrator, route: str, batch: int) -> None:
    """``batch`` jobs through their whole life: created, their tasks claimed
    by one worker, their results applied."""
    engine = orchestrator.engine
    for n in range(batch):
        await orchestrator.client_api.create_job(CLIENT, route, JobRequest({"n": n}))
    tasks = await engine.next_tasks(WORKER, ["echo"], 0, batch)
    assert len(tasks) == batch, f"claimed {len(tasks)} of {batch} tasks"
    for task in tasks:
        result = TaskResult(
            task_id=task.task_id,
            job_id=task.job_id,
            worker_id=WORKER,
            status=task_pb2.TASK_RESULT_STATUS_SUCCESS,
            data=task.params,
        )
        verdict = await engine.submit_result(result)
        assert verdict.accepted, verdict
    # The listeners' own tasks (history, logs) run their share of the work.
    for _ in range(3):
        await asyncio.sleep(0)


class ListenerClock:
    """CPU spent in each event listener, by its name: the services
    subscribe through :meth:`subscribe` in place of the bus's own."""

    def __init__(self, bus: EventBus) -> None:
        self.spent: Counter[str] = Counter()  # nanoseconds
        self._subscribe = bus.subscribe
        # An instance attribute shadows the method for the services' start().
        setattr(bus, "subscribe", self.subscribe)  # noqa: B010

    def subscribe(
        self, listener: Listener, types: Iterable[HistoryEventType.ValueType] | None = None
    ) -> Callable[[], None]:
        name = getattr(listener, "__qualname__", repr(listener))

        def timed(item: JobEvent) -> None:
            # The loop's thread does nothing else meanwhile: elapsed time is
            # its CPU, and perf_counter_ns costs far less than process_time.
            started = time.perf_counter_ns()
            try:
                listener(item)
            finally:
                self.spent[name] += time.perf_counter_ns() - started

        return self._subscribe(timed, types)


async def measure(
    jobs: int, batch: int, rounds: int, profile: str, listeners: bool = False
) -> list[float]:
    settings = Settings(api_port=0, grpc_port=0, client_token="bench", job_wait_max_seconds=30)
    orchestrator = Orchestrator(config=settings, blueprints=[echo_blueprint()])
    engine = orchestrator.engine
    engine.add_client(CLIENT)
    clock = ListenerClock(engine.events) if listeners else None
    route = "v1/jobs/echo"
    engine.blueprint_for_route(route)
    await engine.storage.open()
    for service in orchestrator.services:
        await service.start()
    await engine.start()
    results = []
    try:
        for _ in range(max(1, 200 // batch)):  # warm-up
            await one_batch(orchestrator, route, batch)
        for index in range(rounds):
            profiler = _profiler(profile) if index == rounds - 1 else contextlib.nullcontext()
            with profiler:
                started = time.process_time()
                for _ in range(jobs // batch):
                    await one_batch(orchestrator, route, batch)
                await asyncio.sleep(0.05)  # history batches written before the clock stops
                spent = time.process_time() - started
            results.append(spent / (jobs // batch * batch) * 1e6)
    finally:
        await engine.stop()
        for service in reversed(orchestrator.services):
            await service.stop()
    if clock is not None:
        # Every job measured or warming up, all rounds together.
        done = (max(1, 200 // batch) + rounds * (jobs // batch)) * batch
        for name, nanoseconds in clock.spent.most_common():
            print(f"  {nanoseconds / done / 1000:6.1f} µs per job in {name}")
    return results


@contextlib.contextmanager
def _profiler(name: str) -> Iterator[None]:
    if not name:
        yield
        return
    if name == "yappi":
        import yappi  # type: ignore[import-not-found,unused-ignore]

        yappi.set_clock_type("cpu")
        yappi.start()
        yield
        yappi.stop()
        yappi.get_func_stats().sort("tsub").print_all(
            columns={0: ("name", 80), 1: ("ncall", 8), 2: ("tsub", 8), 3: ("ttot", 8)}
        )
        return
    profiler = cProfile.Profile()
    profiler.enable()
    yield
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(35)
    stats.sort_stats("cumulative").print_stats(45)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--listeners",
        action="store_true",
        help="also print the CPU per job of each event listener (timing them costs a little)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds of --jobs")
    args = parser.parse_args()
    profile = os.environ.get("BENCH_PROFILE", "")
    with bench_logging() as logging_used:
        per_job = asyncio.run(measure(args.jobs, args.batch, args.rounds, profile, args.listeners))
    print(logging_used)
    print(
        f"engine path, {args.jobs} one-task jobs x {args.rounds} rounds: CPU µs per job "
        f"min {min(per_job):.0f} median {statistics.median(per_job):.0f} "
        f"max {max(per_job):.0f} ({', '.join(f'{v:.0f}' for v in per_job)})"
    )


if __name__ == "__main__":
    main()
