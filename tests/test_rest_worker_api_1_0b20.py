"""The REST worker API as SDK ``avtomatika-worker`` 1.0b20 (protocol 1.0b17)
speaks it, request by request: its bodies, what it reads in the replies, and
bad input. The real SDK runs against it in ``test_rest_worker_sdk20.py``."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import aiohttp
import pytest

from avtomatika.rest.worker_api import bodies
from tests.support import create_job, wait_for
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.rest_worker import RestWorker
from tests.support.tokens import WORKER_TOKEN

HEADERS = {"X-Worker-Token": WORKER_TOKEN, "X-Worker-ID": "w20", "X-RXON-Version": "1.0b17"}
"""What SDK 1.0b20 sends with every request."""


def registration(**fields: Any) -> dict[str, Any]:
    """What SDK 1.0b20 sends to register; ``fields`` override it."""
    body: dict[str, Any] = {
        "worker_id": "w20",
        "worker_type": "echo-worker",
        "supported_skills": [
            {
                "name": "echo",
                "type": "echo",
                "description": "Echo params back.",
                "input_schema": {"type": "object"},
            },
            {"name": "ocr", "type": "ocr"},
        ],
        "available_skills": ["echo", "ocr"],
        "hot_skills": [],
        "resources": {
            "properties": {"cpu_cores": 4, "ram_gb": 8},
            "devices": [
                {"type": "gpu", "model": "RTX 4090", "id": "0", "properties": {"memory_gb": 24}}
            ],
        },
        "installed_software": {"python": "3.11"},
        "installed_artifacts": [
            {"name": "llama", "version": "3", "type": "model", "properties": {}}
        ],
        "capabilities": {
            "hostname": "vm",
            "ip_address": "127.0.0.1",
            "cost_per_skill": {},
            "s3_config_hash": "x",
            "extra": {"websockets": False},
        },
        "skills_hash": "hash-1",
        "timestamp": 1796513040,
        "security": {"signature": "ab", "signer_id": "w20"},
    }
    body.update(fields)
    return body


def heartbeat(**fields: Any) -> dict[str, Any]:
    """A 1.0b20 heartbeat whose skills hash is unchanged (so no skills)."""
    body: dict[str, Any] = {
        "worker_id": "w20", "status": "idle",
        "usage": {"cpu_load_percent": 0, "ram_used_gb": 0, "devices_usage": []},
        "current_tasks": [], "available_skills": ["echo", "ocr"], "hot_skills": [],
        "skills_hash": "hash-1", "timestamp": 1796513040,
    }  # fmt: skip
    body.update(fields)
    return body


def progress(task: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": "e1", "worker_id": "w20", "origin_worker_id": "w20",
        "event_type": "progress", "payload": {"progress": 0.5, "message": "half way"},
        "origin_task_id": task["task_id"], "bubbling_chain": [],
        "target_job_id": task["job_id"], "target_task_id": task["task_id"],
        "trace_context": {}, "priority": 0, "timestamp": 1796513040,
    }  # fmt: skip
    body.update(fields)
    return body


@pytest.fixture
async def w20(start_orchestrator: StartOrchestrator) -> Any:
    """An orchestrator with the echo blueprint and a 1.0b20-speaking session."""
    orchestrator = await start_orchestrator([echo_blueprint()], worker_poll_timeout_seconds=5)
    worker = RestWorker(orchestrator, "w20")
    worker.http.headers.update(HEADERS)
    yield orchestrator, worker
    await worker.http.close()


async def answer(response: aiohttp.ClientResponse, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def test_registration_reads_skill_objects_properties_and_devices(
    w20: Any, http_client: HttpClient
) -> None:
    orchestrator, worker = w20
    response = await worker.http.post("/_worker/workers/register", json=registration())

    # Its own version comes back: the SDK warns of nothing.
    assert response.headers["X-RXON-Version"] == "1.0b17"
    assert await answer(response) == {"status": "registered", "version": "1.0b17", "warning": None}
    (listed,) = await (await http_client(orchestrator).get("/api/v1/workers")).json()
    assert listed["skills"] == ["echo", "ocr"]
    assert listed["resources"]["cpu_cores"] == 4
    assert listed["resources"]["gpu_info"] == {"model": "RTX 4090", "vram_gb": 24}
    assert listed["resources"]["installed_models"] == [{"name": "llama", "version": "3"}]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"supported_skills": [{"type": "echo"}]}, "supported_skills[0].name"),
        ({"supported_skills": [{"name": ""}]}, "supported_skills[0].name"),
        ({"supported_skills": [{"name": "echo", "colour": "red"}]}, "supported_skills[0].colour"),
        ({"supported_skills": [7]}, "supported_skills[0]"),
        ({"resources": ["cpu"]}, "resources"),
        ({"resources": {"properties": []}}, "resources.properties"),
        ({"resources": {"cpus": 4}}, "resources.cpus"),
        ({"flavour": "vanilla"}, "flavour"),
        ({"available_skills": [""]}, "available_skills"),
    ],
)
async def test_bad_registrations_are_400s_naming_the_field(
    w20: Any, fields: dict[str, Any], named: str
) -> None:
    _, worker = w20
    response = await worker.http.post("/_worker/workers/register", json=registration(**fields))

    assert named in (await answer(response, 400))["error"]


async def test_a_heartbeat_with_another_skills_hash_asks_for_a_full_sync(w20: Any) -> None:
    _, worker = w20
    await answer(await worker.http.post("/_worker/workers/register", json=registration()))
    url = "/_worker/workers/w20"

    same = await answer(await worker.http.patch(url, json=heartbeat()))
    changed = await answer(await worker.http.patch(url, json=heartbeat(skills_hash="hash-2")))
    # The full sync: the skills, under their new hash.
    skills = [{"name": "echo"}]
    synced = heartbeat(skills_hash="hash-2", supported_skills=skills, status="full")
    after = await answer(await worker.http.patch(url, json=synced))

    assert (same, changed, after) == (
        {"status": "ok"},
        {"status": "ok", "require_full_sync": True},
        {"status": "ok"},
    )


async def test_a_heartbeat_without_skills_from_an_unknown_worker_says_not_found(
    w20: Any, http_client: HttpClient
) -> None:
    orchestrator, worker = w20
    response = await worker.http.patch("/_worker/workers/w20", json=heartbeat())

    # SDK 1.0b20 registers again on "not found"; restored with no skills, it
    # would never get a task.
    assert "not found" in (await answer(response, 404))["error"]
    assert await (await http_client(orchestrator).get("/api/v1/workers")).json() == []


async def test_the_poll_offers_only_the_available_skills_and_honours_timeout(
    w20: Any, http_client: HttpClient
) -> None:
    orchestrator, worker = w20
    await answer(await worker.http.post("/_worker/workers/register", json=registration()))
    job_id = await create_job(http_client(orchestrator), "jobs/echo")
    url = "/_worker/workers/w20/tasks/next"

    # "echo" is not available now: nothing, after the worker's own timeout
    # (shorter than the server's).
    unavailable = await worker.http.get(url, params={"timeout": "0.05", "available_skills": "ocr"})
    available = await worker.http.get(url, params={"timeout": "5", "available_skills": "ocr,echo"})

    assert unavailable.status == 204
    assert (await answer(available))["job_id"] == job_id
    bad = await worker.http.get(url, params={"timeout": "soon"})
    assert "timeout" in (await answer(bad, 400))["error"]


async def test_events_record_progress_of_held_tasks_and_refuse_others(
    w20: Any, http_client: HttpClient
) -> None:
    orchestrator, worker = w20
    http = http_client(orchestrator)
    await answer(await worker.http.post("/_worker/workers/register", json=registration()))
    job_id = await create_job(http, "jobs/echo")
    task = await worker.next_task()

    held = await worker.http.post("/_worker/events", json=progress(task))
    stranger = {"job_id": job_id, "task_id": "not-its-task"}
    other = await worker.http.post("/_worker/events", json=progress(stranger))
    malformed = await worker.http.post("/_worker/events", json=progress(task, payload=[]))
    unknown = await worker.http.post("/_worker/events", json=progress(task, mood="happy"))

    assert await answer(held) == {"status": "event_accepted"}
    job = await (await http.get(f"/api/v1/jobs/{job_id}")).json()
    assert (job["progress"], job["progress_message"]) == (0.5, "half way")
    assert (await answer(other))["reason"] == "stale"
    assert "payload" in (await answer(malformed, 400))["error"]
    assert "mood" in (await answer(unknown, 400))["error"]


async def test_results_carry_1_0b20s_fields_and_unknown_fields_are_refused(
    w20: Any, http_client: HttpClient
) -> None:
    orchestrator, worker = w20
    await answer(await worker.http.post("/_worker/workers/register", json=registration()))
    await create_job(http_client(orchestrator), "jobs/echo")
    task = await worker.next_task()
    extra = {"origin_worker_id": "w20", "security": None, "metadata": None,
             "timestamp": 1796513040, "costs": {"execution_time_seconds": 0.01}}  # fmt: skip

    with pytest.raises(AssertionError, match="colour"):
        await worker.report(task, colour="red")
    assert (await worker.report(task, **extra))["status"] == "accepted"


def hmac_hex(key: str, content: str) -> str:
    return hmac.new(key.encode(), content.encode(), hashlib.sha256).hexdigest()


async def test_a_forged_signature_is_a_401_and_logged_when_signatures_are_required(
    start_orchestrator: StartOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], worker_signatures_required=True)
    worker = RestWorker(orchestrator, "w20")
    worker.http.headers.update(HEADERS)
    body = registration(timestamp=1, security=None)
    # As the SDK signs: keyed with its token, over the body without security,
    # keys sorted, compact, nulls left out ("s3_config_hash" here).
    body["capabilities"]["s3_config_hash"] = None
    content = json.dumps(
        {k: v for k, v in body.items() if k != "security"},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).replace(',"s3_config_hash":null', "")
    signed = {
        **body,
        "security": {"signature": hmac_hex(WORKER_TOKEN, content), "signer_id": "w20"},
    }
    forged = {**body, "security": {"signature": hmac_hex("guess", content), "signer_id": "w20"}}

    try:
        unsigned = await worker.http.post("/_worker/workers/register", json=body)
        bad = await worker.http.post("/_worker/workers/register", json=forged)
        good = await worker.http.post("/_worker/workers/register", json=signed)

        assert "signature" in (await answer(unsigned, 401))["error"]
        assert "signature" in (await answer(bad, 401))["error"]
        assert (await answer(good))["status"] == "registered"
        assert "worker request refused: bad signature" in caplog.text
    finally:
        await worker.http.close()


async def test_tasks_are_signed_over_what_the_sdk_parses_them_into(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], worker_task_signing_secret="s3cret")
    worker = RestWorker(orchestrator, "w20")
    worker.http.headers.update(HEADERS)
    try:
        await answer(await worker.http.post("/_worker/workers/register", json=registration()))
        params = {"b": 2.0, "a": None, "c": [1.5, None, {"z": None}]}
        job_id = await create_job(http_client(orchestrator), "jobs/echo", params)
        task = await worker.next_task()

        # The SDK's model drops the nulls (params_metadata, nested ones too),
        # writes 2.0 as 2 and leaves "sig" out.
        content = (
            f'{{"job_id":"{job_id}","params":{{"b":2,"c":[1.5,null,{{}}]}},'
            f'"task_id":"{task["task_id"]}","tracing_context":{{}},"type":"echo"}}'
        )
        assert task["params_metadata"] is None
        assert task["sig"] == hmac_hex("s3cret", content)
    finally:
        await worker.http.close()


def test_the_task_signature_leaves_out_what_the_sdk_model_leaves_out() -> None:
    task = {"job_id": "j", "task_id": "t", "type": "echo", "params": {"x": 3.0},
            "step": 0, "depth": 0, "priority": 0, "unknown": 1, "params_metadata": None,
            "sig": "old", "security": {"signature": "s"}}  # fmt: skip

    assert (
        bodies.task_content(task) == b'{"job_id":"j","params":{"x":3},"task_id":"t","type":"echo"}'
    )
    assert b'"step":2' in bodies.task_content({**task, "step": 2})


async def test_heartbeats_sooner_than_the_minimum_interval_get_429_with_retry_after(
    start_orchestrator: StartOrchestrator,
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], worker_heartbeat_min_interval_seconds=3600
    )
    worker = RestWorker(orchestrator, "w20")
    worker.http.headers.update(HEADERS)
    try:
        await answer(await worker.http.post("/_worker/workers/register", json=registration()))
        url = "/_worker/workers/w20"
        first = await worker.http.patch(url, json=heartbeat())
        second = await worker.http.patch(url, json=heartbeat())
        leaving = await worker.http.patch(url, json=heartbeat(status="offline"))

        assert first.status == 200
        assert (second.status, second.headers["Retry-After"]) == (429, "3600")
        assert leaving.status == 200  # a worker saying goodbye is never refused
    finally:
        await worker.http.close()


async def test_a_task_too_large_to_sign_is_handed_out_unsigned_not_stuck(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], worker_task_signing_secret="k")
    worker = RestWorker(orchestrator, "w20")
    worker.http.headers.update(HEADERS)
    try:
        await answer(await worker.http.post("/_worker/workers/register", json=registration()))
        await create_job(http_client(orchestrator), "jobs/echo", {"huge": 2**70})

        task = await worker.next_task()

        assert (task["params"]["huge"], "sig" in task) == (2**70, False)
    finally:
        await worker.http.close()


def signed_event(task: dict[str, Any], key: str, **payload: Any) -> dict[str, Any]:
    """A progress event signed as SDK 1.0b20 signs it with ``key``."""
    body = progress(task, payload=payload)
    unsigned = {k: v for k, v in body.items() if k != "bubbling_chain"}
    content = json.dumps(unsigned, sort_keys=True, separators=(",", ":"))
    return {**body, "security": {"signature": hmac_hex(key, content), "signer_id": "w20"}}


async def test_over_the_socket_a_forged_event_is_dropped_and_logged(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], worker_signatures_required=True)
    http = http_client(orchestrator)
    worker = RestWorker(orchestrator, "w20")
    worker.http.headers.update(HEADERS)
    try:
        body = registration(security=None, capabilities=None, installed_artifacts=None)
        content = json.dumps(
            {k: v for k, v in body.items() if v is not None}, sort_keys=True, separators=(",", ":")
        )
        body["security"] = {"signature": hmac_hex(WORKER_TOKEN, content)}
        await answer(await worker.http.post("/_worker/workers/register", json=body))
        job_id = await create_job(http, "jobs/echo")
        task = await worker.next_task()

        async with worker.http.ws_connect("/_worker/ws/w20") as ws:
            await ws.send_json(signed_event(task, "guess", progress=0.3, message="forged"))
            await ws.send_json(signed_event(task, WORKER_TOKEN, progress=0.5, message="real"))
            # In order on one socket: once the real one shows, the forged
            # one was seen before it.
            job = await wait_for(http, job_id, lambda j: j["progress"] == 0.5)

        assert job["progress_message"] == "real"
        assert "worker request refused: bad signature" in caplog.text
    finally:
        await worker.http.close()
