"""An example worker: the ``echo`` skill over the gRPC stream.

    ORCHESTRATOR_GRPC=127.0.0.1:50051 WORKER_TOKEN=... python examples/echo_worker.py

Stops gracefully on SIGTERM or Ctrl-C: running tasks finish first.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from avtomatika.worker import TaskContext, Worker


def build_worker() -> Worker:
    worker = Worker(
        worker_id=os.environ.get("WORKER_ID", f"echo-{os.getpid()}"),
        addresses=os.environ.get("ORCHESTRATOR_GRPC", "127.0.0.1:50051").split(","),
        token=os.environ["WORKER_TOKEN"],
        max_concurrency=int(os.environ.get("MAX_CONCURRENT_TASKS", "4")),
    )

    @worker.skill("echo")
    async def echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        await task.report_progress(0.5, "echoing")
        return {"echo": params, "worker_id": task.worker_id, "attempt": task.attempt}

    return worker


async def main() -> None:
    worker = build_worker()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.stop(grace_seconds=10)))
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
