"""A job created over REST runs through a worker on the gRPC stream."""

from __future__ import annotations

import pytest

from tests.support import RawWorker, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


async def test_rest_job_finishes_through_grpc_worker(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
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
