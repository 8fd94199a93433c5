"""A job created over REST runs through a worker on the gRPC stream."""

from __future__ import annotations

import asyncio

from tests.blueprints import echo_blueprint
from tests.support import RawWorker


async def wait_for_status(http, job_id: str, status: str) -> dict:  # type: ignore[no-untyped-def]
    """Poll the job until it reaches ``status`` (bounded by the test timeout)."""
    while True:
        response = await http.get(f"/api/v1/jobs/{job_id}")
        assert response.status == 200
        job = await response.json()
        if job["status"] == status:
            return job
        await asyncio.sleep(0.01)


async def test_rest_job_finishes_through_grpc_worker(start_orchestrator, http_client, grpc_channel):  # type: ignore[no-untyped-def]
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-1")
    await worker.hello(["echo"])

    response = await http.post(
        "/api/v1/jobs/echo", json={"initial_data": {"id": 12345678901234567}}
    )
    assert response.status == 202
    accepted = await response.json()
    assert accepted["status"] == "accepted"

    task = await worker.next_task()
    assert task.job_id == accepted["job_id"]
    assert RawWorker.params(task) == {"id": 12345678901234567}
    ack = await worker.succeed(task, {"echoed": RawWorker.params(task)["id"]})
    assert ack.result_ack.accepted
    assert ack.result_ack.transition == "done"

    job = await wait_for_status(http, accepted["job_id"], "finished")
    # A 17-digit integer survives the round trip exactly (no Struct doubles).
    assert job["state_history"] == {"echoed": 12345678901234567}
    assert job["current_state"] == "done"
    await worker.close()
