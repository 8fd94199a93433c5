"""A worker process killed mid-task (SIGKILL: no goodbye, no drain) loses no
task: the server sees its stream break, re-queues the task as a new attempt,
and another worker finishes the job."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.support import WORKER_TOKEN, RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

# A real SDK worker in its own process: it announces the task it runs, then
# hangs in it until killed.
WORKER = """
import asyncio, os, sys
from avtomatika.worker import Worker

worker = Worker(worker_id="doomed", addresses=os.environ["ADDRESS"],
                token=os.environ["TOKEN"], max_concurrency=1)

@worker.skill("echo")
async def echo(params, task):
    print("running", task.task_id, flush=True)
    await asyncio.Event().wait()

asyncio.run(worker.run())
"""


async def test_a_killed_worker_process_loses_no_task(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    env = {**os.environ, "ADDRESS": f"127.0.0.1:{orchestrator.grpc_port}", "TOKEN": WORKER_TOKEN}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        job_id = await create_job(http, "jobs/echo", {"text": "survive"})
        words = (await process.stdout.readline()).decode().split()
        assert words[0] == "running", words
        first_attempt = words[1]
    finally:
        process.kill()
        await process.wait()

    rescuer = RawWorker(grpc_channel(orchestrator), "rescuer")
    await rescuer.hello(["echo"])
    task = await rescuer.next_task()
    assert task.job_id == job_id
    assert task.attempt == 2
    assert task.task_id != first_attempt
    ack = await rescuer.succeed(task, {"rescued_by": "rescuer"})
    assert ack.result_ack.accepted

    job = await wait_for_status(http, job_id, "finished")
    assert job["state_history"] == {"rescued_by": "rescuer"}
    await rescuer.close()
