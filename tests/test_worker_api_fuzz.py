"""Hypothesis-generated JSON bodies for the REST worker endpoints (issue 17):
whatever a worker sends (any JSON value, or a real SDK body with one field
replaced by any JSON value, nested or huge numbers included), the answer is
never a 5xx, and the server keeps serving the real worker afterwards.

schemathesis (tests/test_openapi_fuzz.py) generates from the documented
schemas, so it mostly sends well-typed bodies; this run sends what the
schemas do not describe.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import hypothesis
import pytest
import requests
from hypothesis import strategies as st

from tests.support import WORKER_TOKEN, create_job
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.rest_worker import HEADERS, RestWorkers, heartbeat, registration

pytestmark = pytest.mark.slow

EXAMPLES_PER_ENDPOINT = 60
WORKER_ID = "w-1"

# Any JSON value: what a confused or hostile worker could send.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with one of its fields, or one nested a level down, replaced."""

    def replace(path: tuple[str, ...], value: Any) -> dict[str, Any]:
        body = {key: (dict(v) if isinstance(v, dict) else v) for key, v in base.items()}
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return body

    paths = [(key,) for key in base] + [
        (key, inner) for key, value in base.items() if isinstance(value, dict) for inner in value
    ]
    return st.builds(replace, st.sampled_from(paths), JSON_VALUES)


async def test_no_worker_body_gets_a_server_error(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, rest_worker: RestWorkers
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], worker_poll_timeout_seconds=0.01)
    http = http_client(orchestrator)
    worker = rest_worker(orchestrator, WORKER_ID)
    await worker.register()
    job_id = await create_job(http, "jobs/echo")
    task = await worker.next_task()
    result = {"job_id": job_id, "task_id": task["task_id"], "worker_id": WORKER_ID,
              "status": "success", "data": {"ok": True}, "error": None}  # fmt: skip
    # SDK 1.0b20's event body.
    event = {"event_id": "e-1", "event_type": "progress", "worker_id": WORKER_ID,
             "target_task_id": task["task_id"], "target_job_id": job_id,
             "payload": {"progress": 0.5, "message": "half"}}  # fmt: skip
    endpoints = [
        ("POST", "/_worker/workers/register", registration(WORKER_ID)),
        ("PATCH", f"/_worker/workers/{WORKER_ID}", heartbeat(WORKER_ID)),
        ("POST", "/_worker/tasks/result", result),
        ("POST", "/_worker/events", event),
    ]
    base_url = f"http://127.0.0.1:{orchestrator.rest_port}"

    # hypothesis and requests are synchronous: they run in a thread while the
    # server keeps serving on this event loop.
    statuses, server_errors = await asyncio.to_thread(_fuzz, base_url, endpoints)

    assert not server_errors, "\n".join(server_errors[:10])
    for method, path, _ in endpoints:
        # Each endpoint both refused bodies and took some: the run reached
        # past the parser.
        answered = {status for (m, p, status) in statuses if (m, p) == (method, path)}
        assert 400 in answered, (method, path, answered)
        assert 200 in answered, (method, path, answered)
    # Still serving the real worker: its result lands (or was already
    # decided by a generated body that happened to be valid).
    response = await worker.http.post("/_worker/tasks/result", json=result)
    assert response.status == 200
    assert (await worker.http.get("/_worker/workers/w-1/tasks/next")).status in (200, 204)


Statuses = collections.Counter[tuple[str, str, int]]


def _fuzz(
    base_url: str, endpoints: list[tuple[str, str, dict[str, Any]]]
) -> tuple[Statuses, list[str]]:
    statuses: Statuses = collections.Counter()
    server_errors: list[str] = []
    with requests.Session() as session:
        session.headers.update(HEADERS | {"X-Worker-Token": WORKER_TOKEN})
        for method, path, base in endpoints:
            _fuzz_one(session, base_url + path, method, base, statuses, server_errors)
    return statuses, server_errors


def _fuzz_one(
    session: requests.Session,
    url: str,
    method: str,
    base: dict[str, Any],
    statuses: Statuses,
    server_errors: list[str],
) -> None:
    path = url.split("/", 3)[3]

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_ENDPOINT,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(body=JSON_VALUES | mutated(base))
    def check(body: Any) -> None:
        response = session.request(method, url, json=body, timeout=10)
        statuses[(method, "/" + path, response.status_code)] += 1
        if response.status_code >= 500:
            server_errors.append(
                f"{method} /{path}: {response.status_code} {response.text[:200]} for {body!r:.300}"
            )

    check()
