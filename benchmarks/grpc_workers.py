"""gRPC workers for the benchmark (the Python SDK), in their own process.

Skills: ``echo`` answers at once; ``hold`` prints ``started <task_id>`` when
its handler runs, then runs until cancelled and prints ``cancelled <task_id>
<epoch seconds>`` when the cancel reaches the handler, so the benchmark can
measure cancel delivery to a running handler (a task cancelled before its
handler starts never sees the CancelledError).

    python -m benchmarks.grpc_workers ADDRESS TOKEN COUNT CONCURRENCY

The loop is ``BENCH_LOOP`` (``benchmarks/event_loop.py``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from avtomatika.worker import TaskContext, Worker
from benchmarks import event_loop


def build(n: int, address: str, token: str, concurrency: int) -> Worker:
    worker = Worker(
        worker_id=f"bench-grpc-{n}", addresses=address, token=token, max_concurrency=concurrency
    )

    @worker.skill("echo")
    async def echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        return {"n": params.get("n")}

    @worker.skill("hold")
    async def hold(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        print(f"started {task.task_id}", flush=True)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print(f"cancelled {task.task_id} {time.time():.6f}", flush=True)
            raise
        return {}

    return worker


async def main(address: str, token: str, count: int, concurrency: int) -> None:
    workers = [build(n, address, token, concurrency) for n in range(count)]
    await asyncio.gather(*(w.run() for w in workers))


if __name__ == "__main__":
    address, token, count, concurrency = sys.argv[1:5]
    event_loop.run(main(address, token, int(count), int(concurrency)), event_loop.chosen())
