"""The legacy REST worker API (``/_worker``), endpoint by endpoint, as SDK
``avtomatika-worker`` 1.0b7 speaks it: bodies, replies and status codes.
The real SDK runs against it in ``test_rest_worker_sdk.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import create_job, get_job, wait_for, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.rest_worker import heartbeat, registration
from tests.support.waiting import wait_until


async def error(response: aiohttp.ClientResponse, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert isinstance(body["error"], str)
    return body["error"]


# -- register --


async def test_register_answers_the_protocol_version_and_lists_the_worker(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = rest_worker(orchestrator)
    response = await worker.http.post("/_worker/workers/register", json=registration())

    assert response.status == 200
    assert response.headers["X-RXON-Version"] == "1.0b3"
    assert await response.json() == {"status": "registered", "version": "1.0b3", "warning": None}
    (listed,) = await (await http_client(orchestrator).get("/api/v1/workers")).json()
    assert listed["worker_id"] == "w-1"
    assert listed["transport"] == "rest"
    assert listed["skills"] == ["echo"]
    assert listed["resources"]["gpu_info"] == {"model": "RTX 4090", "vram_gb": 24}
    assert listed["resources"]["installed_models"] == [{"name": "llama", "version": "3"}]
    assert listed["cost_per_skill"] == {"echo": 0.5}
    assert listed["labels"] == {"websockets": "true", "region": "eu"}


async def test_the_workers_list_gives_a_rest_workers_supported_skills_as_registered(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    """1.0b13 clients read ``supported_skills``: the registration's list, in
    its order, beside our ``skills``."""
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = rest_worker(orchestrator)
    skills = ["transcode", "echo", "ocr"]
    body = registration(skills=skills)
    assert (await worker.http.post("/_worker/workers/register", json=body)).status == 200

    (listed,) = await (await http_client(orchestrator).get("/api/v1/workers")).json()

    assert listed["supported_skills"] == listed["skills"] == skills


async def test_register_warns_about_another_protocol_version_and_takes_old_skill_names(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = rest_worker(orchestrator)
    body = registration()
    body["supported_tasks"] = body.pop("supported_skills")  # SDKs before 1.0b7
    response = await worker.http.post(
        "/_worker/workers/register", json=body, headers={"X-RXON-Version": "1.0b9"}
    )
    reply = await response.json()

    assert response.status == 200
    assert "1.0b9" in reply["warning"]
    job_id = await create_job(http_client(orchestrator), "jobs/echo")
    assert (await worker.next_task())["job_id"] == job_id


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"worker_type": "x"}, 400),
        ({"worker_id": "has space"}, 400),
        ({"worker_id": "../x"}, 400),
        ({"worker_id": 7}, 400),
        ({"worker_id": "w", "supported_skills": "echo"}, 400),
        ({"worker_id": "w", "resources": {"cpu_cores": "many"}}, 400),
        ({"worker_id": "w", "capabilities": {"cost_per_skill": {"echo": "cheap"}}}, 400),
        ({"worker_id": "w" * 10_000}, 400),
        ({"worker_id": "w", "supported_skills": [f"s{n}" for n in range(257)]}, 400),
        ({"worker_id": "w", "installed_software": {f"p{n}": "1" for n in range(65)}}, 400),
        ({"worker_id": "w", "capabilities": {"extra": {"region": "x" * 1025}}}, 400),
        ([], 400),
    ],
)
async def test_register_refuses_bad_bodies_with_400_json(
    start_orchestrator: StartOrchestrator, rest_worker: Any, body: Any, status: int
) -> None:
    worker = rest_worker(await start_orchestrator())
    response = await worker.http.post("/_worker/workers/register", json=body)
    assert len(await error(response, status)) < 300  # an oversized value is not echoed
    assert response.headers["X-RXON-Version"] == "1.0b3"


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_every_endpoint_needs_the_worker_token(
    start_orchestrator: StartOrchestrator, token: str | None
) -> None:
    orchestrator = await start_orchestrator()
    headers = {"X-Worker-Token": token} if token else {}
    base = f"http://127.0.0.1:{orchestrator.rest_port}"
    async with aiohttp.ClientSession(base, headers=headers) as http:
        await error(await http.post("/_worker/workers/register", json=registration()), 401)
        await error(await http.patch("/_worker/workers/w-1", json=heartbeat()), 401)
        await error(await http.patch("/_worker/workers/w-1"), 401)
        await error(await http.get("/_worker/workers/w-1/tasks/next"), 401)
        await error(await http.post("/_worker/tasks/result", json={}), 401)
        await error(await http.get("/_worker/ws"), 401)
        await error(await http.get("/_worker/ws/w-1"), 401)


# -- heartbeat --


async def test_an_empty_heartbeat_is_a_ttl_ping_and_404_for_an_unknown_worker(
    start_orchestrator: StartOrchestrator, rest_worker: Any
) -> None:
    worker = rest_worker(await start_orchestrator())
    assert "not registered" in await error(await worker.http.patch("/_worker/workers/w-1"), 404)
    await worker.register()

    response = await worker.http.patch("/_worker/workers/w-1")
    assert response.status == 200
    assert await response.json() == {"status": "ttl_refreshed"}
    await error(await worker.http.patch("/_worker/workers/bad%20id"), 400)


async def test_a_busy_heartbeat_with_no_skills_keeps_the_skills(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = rest_worker(orchestrator)
    await worker.register()

    assert await worker.beat(status="busy", supported_skills=[]) == {"status": "ok"}
    assert await worker.beat(status="busy", supported_skills=None, current_tasks=None) == {
        "status": "ok"
    }

    (listed,) = await (await http_client(orchestrator).get("/api/v1/workers")).json()
    assert listed["skills"] == ["echo"]
    assert listed["status"] == "busy"
    job_id = await create_job(http_client(orchestrator), "jobs/echo")
    assert (await worker.next_task())["job_id"] == job_id


async def test_a_heartbeat_from_an_unknown_worker_restores_it(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = rest_worker(orchestrator, "w-restored")

    assert await worker.beat() == {"status": "ok"}

    (listed,) = await (await http_client(orchestrator).get("/api/v1/workers")).json()
    assert (listed["worker_id"], listed["skills"]) == ("w-restored", ["echo"])
    job_id = await create_job(http_client(orchestrator), "jobs/echo")
    assert (await worker.next_task())["job_id"] == job_id


async def test_a_heartbeat_names_the_tasks_of_cancelled_jobs(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = rest_worker(orchestrator)
    await worker.register()
    job_id = await create_job(http, "jobs/echo")
    task = await worker.next_task()
    assert await worker.beat(status="busy", current_tasks=[task["task_id"]]) == {"status": "ok"}

    cancelled = await (await http.post(f"/api/v1/jobs/{job_id}/cancel")).json()

    # No socket: the cancel waits for the heartbeat.
    assert cancelled == {"status": "cancellation_request_accepted"}
    reply = await worker.beat(status="busy", current_tasks=[task["task_id"]])
    assert reply == {"status": "ok", "cancel_task_ids": [task["task_id"]]}
    assert await worker.report(task, status="cancelled") == {
        "status": "ignored",
        "reason": "cancelled",
        "message": "the task was cancelled",
    }
    assert await worker.beat() == {"status": "ok"}


async def test_a_heartbeat_crossing_the_result_does_not_cancel_the_task(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = rest_worker(orchestrator)
    await worker.register()
    await create_job(http_client(orchestrator), "jobs/echo")
    task = await worker.next_task()

    assert (await worker.report(task))["status"] == "accepted"
    # Sent before the result's reply arrived: the task is still listed.
    assert await worker.beat(current_tasks=[task["task_id"]]) == {"status": "ok"}


async def test_a_task_the_worker_never_lists_in_its_heartbeats_is_requeued(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    # Its poll's answer was lost (the instance that leased it died before
    # replying): the worker's heartbeats, two intervals on, still do not
    # list the task, so it goes back to the queue as a new attempt. The
    # worker beats until then, as a real one does every interval.
    orchestrator = await start_orchestrator(
        [echo_blueprint()], worker_heartbeat_interval_seconds=0.05
    )
    http = http_client(orchestrator)
    worker = rest_worker(orchestrator)
    await worker.register()
    job_id = await create_job(http, "jobs/echo", {"n": 1})
    lost = await worker.next_task()

    async def beaten_back() -> bool:
        assert await worker.beat(status="idle", current_tasks=[]) == {"status": "ok"}
        return not await orchestrator.engine.storage.leased_to("w-1")

    await wait_until(beaten_back)

    again = await worker.next_task()
    assert (again["job_id"], again["task_id"] != lost["task_id"]) == (job_id, True)
    assert (await worker.report(again))["status"] == "accepted"
    assert (await worker.report(lost))["status"] == "ignored"
    await wait_for_status(http, job_id, "finished")


async def test_a_heartbeat_body_must_be_well_formed(
    start_orchestrator: StartOrchestrator, rest_worker: Any
) -> None:
    worker = rest_worker(await start_orchestrator())
    path = "/_worker/workers/w-1"
    await error(await worker.http.patch(path, json=heartbeat("w-2")), 400)
    await error(await worker.http.patch(path, json=heartbeat(load="high")), 400)
    await error(await worker.http.patch(path, json=heartbeat(current_tasks="t")), 400)
    await error(await worker.http.patch(path, data=b"{not json"), 400)


# -- next task --


async def test_next_task_answers_the_task_or_204(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], worker_poll_timeout_seconds=0.05)
    worker = rest_worker(orchestrator)
    await error(await worker.http.get("/_worker/workers/w-1/tasks/next"), 404)
    await error(await worker.http.get("/_worker/workers/a.b/tasks/next"), 400)
    await worker.register()

    assert await worker.poll() is None  # 204 after WORKER_POLL_TIMEOUT_SECONDS
    job_id = await create_job(http_client(orchestrator), "jobs/echo", {"big": 12345678901234567})
    task = await worker.poll()

    assert task is not None
    assert set(task) == {"job_id", "task_id", "type", "params", "tracing_context",
                         "params_metadata"}  # fmt: skip
    assert task["job_id"] == job_id
    assert task["type"] == "echo"
    assert task["params"] == {"big": 12345678901234567}
    assert task["params_metadata"] is None


async def test_a_long_poll_is_released_at_shutdown(
    start_orchestrator: StartOrchestrator, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], worker_poll_timeout_seconds=3600)
    worker = rest_worker(orchestrator)
    await worker.register()
    poll = asyncio.create_task(worker.poll())
    await wait_until(lambda: orchestrator.polling_workers.polling("w-1"))

    # Without the release, stopping would wait for the poll (the test's
    # timeout would fail it).
    await orchestrator.stop()

    assert await poll is None


# -- results --


async def test_results_take_the_blueprint_transitions(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    transitions = {"success": "done", "needs_review": "review", "failure": "failed"}
    orchestrator = await start_orchestrator([echo_blueprint(transitions=transitions)])
    http = http_client(orchestrator)
    worker = rest_worker(orchestrator)
    await worker.register()

    ok = await create_job(http, "jobs/echo")
    reply = await worker.report(await worker.next_task(), data={"n": 12345678901234567})
    assert reply == {"status": "accepted", "transition": "done"}
    assert (await wait_for_status(http, ok, "finished"))["state_history"]["n"] == 12345678901234567

    review = await create_job(http, "jobs/echo")
    reply = await worker.report(await worker.next_task(), status="needs_review")
    assert reply == {"status": "accepted", "transition": "review"}
    assert (await wait_for_status(http, review, "finished"))["current_state"] == "review"

    failed = await create_job(http, "jobs/echo")
    error_body = {"code": "PERMANENT_ERROR", "message": "no", "details": {"why": 1}}
    reply = await worker.report(await worker.next_task(), status="failure", error=error_body)
    assert reply == {"status": "accepted", "transition": "failed"}
    await wait_for_status(http, failed, "finished")


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("PERMANENT_ERROR", "quarantined"),
        ("INVALID_INPUT_ERROR", "failed"),
        ("TRANSIENT_ERROR", "quarantined"),  # after JOB_MAX_RETRIES retries
        ("SOMETHING_ELSE", "quarantined"),  # unknown codes are transient
    ],
)
async def test_error_codes_without_a_failure_transition(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    rest_worker: Any,
    code: str,
    outcome: str,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], job_max_retries=1)
    http = http_client(orchestrator)
    worker = rest_worker(orchestrator)
    await worker.register()
    job_id = await create_job(http, "jobs/echo")

    attempts = 0
    while (await get_job(http, job_id))["status"] not in ("quarantined", "failed"):
        task = await worker.next_task()
        attempts += 1
        error_body = {"code": code, "message": f"attempt {attempts}", "details": None}
        reply = await worker.report(task, status="failure", error=error_body)
        assert reply["status"] == "accepted"

    job = await get_job(http, job_id)
    assert job["status"] == outcome
    assert code in job["error"]
    assert attempts == (2 if code in ("TRANSIENT_ERROR", "SOMETHING_ELSE") else 1)


async def test_results_that_no_longer_count_are_ignored_with_a_reason(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = rest_worker(orchestrator)
    other = rest_worker(orchestrator, "w-2")
    await worker.register()
    await create_job(http_client(orchestrator), "jobs/echo")
    task = await worker.next_task()

    stale = await other.report(task)  # w-2 does not hold the lease
    assert (stale["status"], stale["reason"]) == ("ignored", "stale")
    assert (await worker.report(task))["status"] == "accepted"
    late = await worker.report(task)
    assert (late["status"], late["reason"]) == ("ignored", "late")
    unknown = await worker.report({"job_id": "j", "task_id": "nope"})
    assert (unknown["status"], unknown["reason"]) == ("ignored", "stale")


@pytest.mark.parametrize(
    "body",
    [
        {"task_id": "t", "worker_id": "w-1"},
        {"job_id": "j", "worker_id": "w-1"},
        {"job_id": "j", "task_id": "t"},
        {"job_id": "j", "task_id": "t", "worker_id": "w 1"},
        {"job_id": "j", "task_id": "t", "worker_id": "w-1", "status": 3},
        {"job_id": "j", "task_id": "t", "worker_id": "w-1", "error": [1]},
        {"job_id": "j", "task_id": "t", "worker_id": "w-1", "error": {"code": 1}},
    ],
)
async def test_a_malformed_result_is_a_400(
    start_orchestrator: StartOrchestrator, rest_worker: Any, body: dict[str, Any]
) -> None:
    worker = rest_worker(await start_orchestrator())
    await error(await worker.http.post("/_worker/tasks/result", json=body), 400)


# -- liveness --


async def test_a_silent_worker_expires_and_its_task_goes_to_another(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], worker_health_check_interval_seconds=0.05
    )
    http = http_client(orchestrator)
    silent = rest_worker(orchestrator, "w-silent")
    await silent.register()
    job_id = await create_job(http, "jobs/echo")
    first = await silent.next_task()

    # w-silent sends nothing more; its TTL (0.1 s) passes and the task is
    # queued again as a new attempt, for whoever asks.
    rescuer = rest_worker(orchestrator, "w-rescuer")
    await rescuer.register()
    second = await rescuer.next_task()

    assert second["job_id"] == job_id
    assert second["task_id"] != first["task_id"]
    assert (await silent.report(first))["status"] == "ignored"
    assert (await rescuer.report(second))["status"] == "accepted"
    await wait_for_status(http, job_id, "finished")
    workers = await (await http.get("/api/v1/workers")).json()
    assert "w-silent" not in {w["worker_id"] for w in workers}


async def test_an_offline_heartbeat_without_tasks_unregisters(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator()
    worker = rest_worker(orchestrator)
    await worker.register()

    assert await worker.beat(status="offline", supported_skills=[]) == {"status": "ok"}

    assert await (await http_client(orchestrator).get("/api/v1/workers")).json() == []


# -- WebSocket --


async def test_the_socket_is_authenticated_before_the_upgrade(
    start_orchestrator: StartOrchestrator, rest_worker: Any
) -> None:
    worker = rest_worker(await start_orchestrator())
    for path in ("/_worker/ws", "/_worker/ws/w-1"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await worker.http.ws_connect(path, headers={"X-Worker-Token": "wrong"})
        assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as bad:
        await worker.http.ws_connect("/_worker/ws/not%20ok")
    assert bad.value.status == 400
    await error(await worker.http.get("/_worker/ws/w-1"), 400)  # no upgrade


async def test_the_socket_carries_cancels_down_and_progress_up(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = rest_worker(orchestrator)
    await worker.register()
    async with worker.http.ws_connect("/_worker/ws/w-1") as ws:
        job_id = await create_job(http, "jobs/echo")
        task = await worker.next_task()

        await ws.send_json({"event": "progress_update", "task_id": task["task_id"],
                            "job_id": job_id, "progress": 0.5, "message": "half way"})  # fmt: skip
        job = await wait_for(http, job_id, lambda j: j["progress"] == 0.5)
        assert job["progress_message"] == "half way"

        cancelled = await (await http.post(f"/api/v1/jobs/{job_id}/cancel")).json()
        assert cancelled == {"status": "cancellation_request_sent"}
        assert await ws.receive_json() == {
            "command": "cancel_task",
            "task_id": task["task_id"],
            "job_id": job_id,
        }


async def test_an_anonymous_socket_reports_progress_for_the_task_holder(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = rest_worker(orchestrator)
    await worker.register()
    async with worker.http.ws_connect("/_worker/ws") as ws:
        job_id = await create_job(http, "jobs/echo")
        task = await worker.next_task()
        await ws.send_str("not json")
        await ws.send_json({"event": "progress_update", "task_id": task["task_id"],
                            "job_id": job_id, "progress": 10**400})  # fmt: skip
        await ws.send_json({"event": "progress_update", "task_id": task["task_id"],
                            "job_id": job_id, "progress": 0.25, "message": None})  # fmt: skip

        await wait_for(http, job_id, lambda j: j["progress"] == 0.25)
        # Anonymous: the cancel cannot be pushed; the heartbeat carries it.
        cancelled = await (await http.post(f"/api/v1/jobs/{job_id}/cancel")).json()
        assert cancelled == {"status": "cancellation_request_accepted"}


async def test_a_second_socket_replaces_the_first(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    worker = rest_worker(orchestrator)
    await worker.register()
    first = await worker.http.ws_connect("/_worker/ws/w-1")
    async with worker.http.ws_connect("/_worker/ws/w-1") as second:
        closed = await first.receive()
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        job_id = await create_job(http, "jobs/echo")
        task = await worker.next_task()
        await http.post(f"/api/v1/jobs/{job_id}/cancel")
        assert (await second.receive_json())["task_id"] == task["task_id"]
    await first.close()


# -- per-worker tokens (workers.toml) --


async def test_a_per_worker_token_speaks_for_its_worker_only(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    rest_worker: Any,
    tmp_path: Path,
) -> None:
    config = tmp_path / "workers.toml"
    config.write_text('[w-own]\ntoken = "own-token"\n')
    orchestrator = await start_orchestrator([echo_blueprint()], workers_config_path=config)
    http = http_client(orchestrator)
    own = rest_worker(orchestrator, "w-own")
    own.http.headers["X-Worker-Token"] = "own-token"
    shared = rest_worker(orchestrator, "w-own")  # the global token

    await error(
        await shared.http.post("/_worker/workers/register", json=registration("w-own")), 401
    )
    await error(await own.http.post("/_worker/workers/register", json=registration("w-2")), 401)
    await error(await own.http.get("/_worker/workers/w-2/tasks/next"), 401)
    await own.register()

    # The SDK's anonymous socket is identified by the token: cancels are pushed.
    async with own.http.ws_connect("/_worker/ws") as ws:
        job_id = await create_job(http, "jobs/echo")
        task = await own.next_task()
        cancelled = await (await http.post(f"/api/v1/jobs/{job_id}/cancel")).json()
        assert cancelled == {"status": "cancellation_request_sent"}
        assert (await ws.receive_json())["task_id"] == task["task_id"]


async def test_the_global_token_cannot_touch_a_task_of_a_worker_with_its_own_token(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    rest_worker: Any,
    tmp_path: Path,
) -> None:
    """An anonymous socket opened with the global token speaks only for
    workers that use the global token too (issue 17, finding 5)."""
    config = tmp_path / "workers.toml"
    config.write_text('[w-own]\ntoken = "own-token"\n')
    orchestrator = await start_orchestrator([echo_blueprint()], workers_config_path=config)
    http = http_client(orchestrator)
    own = rest_worker(orchestrator, "w-own")
    own.http.headers["X-Worker-Token"] = "own-token"
    await own.register()
    job_id = await create_job(http, "jobs/echo")
    task = await own.next_task()
    shared = rest_worker(orchestrator, "w-shared")  # the global token
    await shared.register()
    other_job = await create_job(http, "jobs/echo")
    other_task = await shared.next_task()

    async with shared.http.ws_connect("/_worker/ws") as ws:
        await ws.send_json({"event": "progress_update", "task_id": task["task_id"],
                            "job_id": job_id, "progress": 0.9, "message": "hijacked"})  # fmt: skip
        await ws.send_json({"event_type": "progress", "worker_id": "w-own",
                            "task_id": task["task_id"], "job_id": job_id,
                            "payload": {"progress": 0.8, "message": "hijacked"}})  # fmt: skip
        # A socket's messages are handled in order: once this one has landed,
        # the two before it were handled.
        await ws.send_json({"event": "progress_update", "task_id": other_task["task_id"],
                            "job_id": other_job, "progress": 0.3})  # fmt: skip
        await wait_for(http, other_job, lambda j: j["progress"] == 0.3)
    job = await get_job(http, job_id)
    assert (job["progress"], job["progress_message"]) == (0, None)


async def test_a_rest_worker_is_dispatched_to_by_what_it_registered(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    requirements = {
        "gpu_info": {"model": "rtx", "vram_gb": 16},
        "installed_models": [{"name": "llama", "version": "3"}],
        "extra_requirements": {"region": "eu", "websockets": True},
    }
    orchestrator = await start_orchestrator(
        [echo_blueprint(resource_requirements=requirements)], worker_poll_timeout_seconds=0.05
    )
    plain = rest_worker(orchestrator, "w-plain")
    response = await plain.http.post(
        "/_worker/workers/register", json={"worker_id": "w-plain", "supported_skills": ["echo"]}
    )
    assert response.status == 200
    gpu = rest_worker(orchestrator, "w-gpu")
    await gpu.register()  # RTX 4090, 24 GB, llama 3, region eu, websockets
    job_id = await create_job(http_client(orchestrator), "jobs/echo")

    assert await plain.poll() is None
    assert (await gpu.next_task())["job_id"] == job_id


async def test_a_worker_registering_again_gives_back_what_it_was_handed(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: Any
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    worker = rest_worker(orchestrator)
    await worker.register()
    job_id = await create_job(http_client(orchestrator), "jobs/echo")
    before = await worker.next_task()

    # SDK 1.0b7 registers once per process: this is a restarted worker, and
    # the task died with the old process.
    await worker.register()

    after = await worker.next_task()
    assert (after["job_id"], after["task_id"] != before["task_id"]) == (job_id, True)
    assert (await worker.report(before))["status"] == "ignored"
    assert (await worker.report(after))["status"] == "accepted"
