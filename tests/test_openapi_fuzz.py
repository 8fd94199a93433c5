"""Property-based run over the live app: schemathesis generates requests
from ``/_public/openapi.json`` for every operation that answers at once, and
no answer may be a 5xx.

501 is allowed and reported as such: it is the documented answer of a
declared route whose feature is not configured (file storage without S3).
Responses must also match the documented schemas. The worker long-poll is
held only for a tiny WORKER_POLL_TIMEOUT_SECONDS here, so it is fuzzed too.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis

# Imported here, on the main thread, rather than lazily by `from_url` in the
# fuzzing thread: these modules run `ast.parse` as they load, and CPython
# 3.11 keeps the AST converter's recursion count in state that threads share
# ("SystemError: AST constructor recursion depth mismatch" when two threads
# convert at once).
import schemathesis.specs.openapi.schemas
from hypothesis import strategies as st
from schemathesis.checks import CheckFunction
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from avtomatika.rest.openapi import HOLDS
from tests.support import CLIENT_TOKEN, WORKER_TOKEN, create_job
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 25
HEADERS = {"X-Client-Token": CLIENT_TOKEN, "X-Worker-Token": WORKER_TOKEN}
# Generated webhook URLs are pointed at a closed loopback port: a job the run
# cancels must never make this machine call a host that a fuzzer made up.
SAFE_WEBHOOK = "http://127.0.0.1:9/hook"
CHECKS: list[CheckFunction] = [response_schema_conformance, status_code_conformance]
# Held operations the run can afford: NextTask answers 204 after the poll timeout.
BOUNDED_HOLDS = {"NextTask"}
WORKER_ID = "fuzz-worker"


@dataclasses.dataclass
class Tally:
    statuses: collections.Counter[tuple[str, int]] = dataclasses.field(
        default_factory=collections.Counter
    )
    server_errors: list[str] = dataclasses.field(default_factory=list)


async def test_no_operation_answers_a_server_error(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint(), echo_blueprint("second")], worker_poll_timeout_seconds=0.01
    )
    http = http_client(orchestrator)
    registered = await http.post(
        "/_worker/workers/register",
        json={"worker_id": WORKER_ID, "supported_skills": ["other"]},
        headers={"X-Worker-Token": WORKER_TOKEN},
    )
    assert registered.status == 200
    # A real job, cancelled so that following it (?wait=, events) ends at once.
    job_id = await create_job(http, "jobs/echo")
    assert (await http.post(f"/api/v1/jobs/{job_id}/cancel")).status == 200
    base_url = f"http://127.0.0.1:{orchestrator.rest_port}"

    # schemathesis and requests are synchronous: they run in a thread while
    # the server keeps serving on this event loop.
    tally = await asyncio.to_thread(_fuzz, base_url, job_id)

    assert not tally.server_errors, "\n".join(tally.server_errors)
    operations = {operation for operation, _ in tally.statuses}
    assert {"CreateJob_echo", "CreateJob_second", "GetJob", "CancelJob"} <= operations
    assert {"RegisterWorker", "Heartbeat", "NextTask", "SubmitResult"} <= operations
    assert tally.statuses[("NextTask", 204)], "the known worker never polled"
    assert tally.statuses[("GetJob", 200)], "the real job was never fetched"


def _fuzz(base_url: str, job_id: str) -> Tally:
    schema = schemathesis.openapi.from_url(f"{base_url}/_public/openapi.json")
    tally = Tally()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()
            operation = result.ok()
            raw = operation.definition.raw
            if raw.get(HOLDS) and raw["operationId"] not in BOUNDED_HOLDS:
                continue  # held open by design (long-poll): not a request-response
            _run(operation, session, base_url, job_id, tally)
    return tally


def _run(
    operation: Any, session: requests.Session, base_url: str, job_id: str, tally: Tally
) -> None:
    name = operation.definition.raw["operationId"]
    query = _fixed_query(operation)
    strategies = [operation.as_strategy(query=query)]
    # Besides made-up ids (404s), requests about things that exist.
    known = {"job_id": job_id, "blueprint_name": "echo", "worker_id": WORKER_ID}
    real = {key: value for key, value in known.items() if f"{{{key}}}" in operation.path}
    if real:
        strategies.append(operation.as_strategy(path_parameters=real, query=query))

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=st.one_of(strategies))
    def check(case: schemathesis.Case[Any]) -> None:
        if isinstance(case.body, dict) and isinstance(case.body.get("webhook_url"), str):
            case.body["webhook_url"] = SAFE_WEBHOOK
        response = case.call(base_url=base_url, session=session, headers=HEADERS, timeout=10)
        tally.statuses[(name, response.status_code)] += 1
        if response.status_code >= 500 and response.status_code != 501:
            tally.server_errors.append(
                f"{name}: {response.status_code} {response.text[:200]} for "
                f"{case.as_curl_command(headers=HEADERS)}"
            )
            return
        if response.status_code != 501:
            case.validate_response(response, checks=CHECKS)

    check()


def _fixed_query(operation: Any) -> dict[str, Any] | None:
    # ?wait= would hold the request on a live job; 0 answers at once.
    names = {p["name"] for p in operation.definition.raw.get("parameters", [])}
    return {"wait": 0} if "wait" in names else None
