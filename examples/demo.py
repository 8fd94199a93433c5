"""``make demo``: the whole system on one machine, in one command.

Starts the orchestrator with the embedded store and the example blueprints,
starts the example worker as its own process (it connects over gRPC), submits
a handful of jobs over REST, prints each job's result, then shuts everything
down. Ports are chosen by the OS, so nothing else on the machine is disturbed.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import aiohttp

from avtomatika import OrchestratorEngine, Settings
from avtomatika.server import console_url

HERE = Path(__file__).resolve().parent
TERMINAL = {"finished", "failed", "cancelled", "error", "quarantined"}


async def wait_until_done(http: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
    while True:
        async with http.get(f"/api/v1/jobs/{job_id}") as response:
            job: dict[str, Any] = await response.json()
        if job["status"] in TERMINAL:
            return job
        await asyncio.sleep(0.05)


async def main() -> int:
    # CLIENT_TOKEN, when set, is the one to sign in to the console with.
    client_token = os.environ.get("CLIENT_TOKEN") or secrets.token_urlsafe(16)
    worker_token = secrets.token_urlsafe(16)
    settings = Settings(
        api_host="127.0.0.1",
        api_port=0,
        grpc_host="127.0.0.1",
        grpc_port=0,
        blueprints_dir=HERE / "blueprints",
        client_token=client_token,
        global_worker_token=worker_token,
    )
    async with OrchestratorEngine(config=settings) as orchestrator:
        print(
            f"orchestrator up: REST http://127.0.0.1:{orchestrator.rest_port}, "
            f"gRPC 127.0.0.1:{orchestrator.grpc_port}, embedded store"
        )
        print(
            f"web console: {console_url('127.0.0.1', orchestrator.rest_port)} while the demo "
            "runs (sign in with CLIENT_TOKEN when you set it; `make run` keeps serving)"
        )
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "echo_worker.py"),
            env={
                **os.environ,
                "ORCHESTRATOR_GRPC": f"127.0.0.1:{orchestrator.grpc_port}",
                "WORKER_TOKEN": worker_token,
                "WORKER_ID": "demo-echo-worker",
            },
        )
        print(f"worker started (pid {worker.pid})")
        base = f"http://127.0.0.1:{orchestrator.rest_port}"
        async with aiohttp.ClientSession(base, headers={"X-Client-Token": client_token}) as http:
            job_ids = []
            for n in range(5):
                body = {"initial_data": {"message": f"hello #{n}", "n": n}}
                async with http.post("/api/v1/jobs/echo", json=body) as response:
                    accepted = await response.json()
                print(f"POST /api/v1/jobs/echo -> {response.status} {json.dumps(accepted)}")
                job_ids.append(accepted["job_id"])
            jobs = await asyncio.wait_for(
                asyncio.gather(*(wait_until_done(http, j) for j in job_ids)), timeout=30
            )
        for job in jobs:
            print(f"job {job['id']}: {job['status']}, result {json.dumps(job['state_history'])}")
        worker.terminate()
        await worker.wait()
        print("worker stopped; shutting the orchestrator down")
    ok = all(job["status"] == "finished" for job in jobs)
    print("demo finished: all jobs done" if ok else "demo FAILED: some jobs did not finish")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
