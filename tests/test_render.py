"""``job_body`` (the bytes a job read answers with) says exactly what
``job_json`` says, for every shape of job, and refuses what ``job_json``
refuses."""

from __future__ import annotations

import json

import pytest

from avtomatika.payload import to_payload
from avtomatika.rest.api_shapes import SCHEMAS
from avtomatika.rest.render import JOB_FIELDS, job_body, job_json
from avtomatika.v1 import job_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.payload_pb2 import Payload


def full_job() -> Job:
    job = Job(
        id="j-1",
        blueprint_name='échos "quoted"',
        status=job_pb2.JOB_STATUS_FAILED,
        current_state="done",
        error="boom\nline two",
        progress=0.25,
        progress_message="a quarter ✓",
        retry_count=2,
        parent_job_id="p-1",
        child_job_ids=["c-1", "c-2"],
        created_at_ms=1_795_741_508_000,
        updated_at_ms=1_795_741_508_123,
    )
    job.initial_data.CopyFrom(to_payload({"n": 12345678901234567, "text": "héllo", "none": None}))
    job.state_history.CopyFrom(to_payload({"start": {"ok": True}, "list": [1, 2.5, "x"]}))
    return job


@pytest.mark.parametrize(
    "job",
    [
        full_job(),
        Job(id="bare", blueprint_name="echo", status=job_pb2.JOB_STATUS_PENDING),
        Job(
            id="asking",
            blueprint_name="approve",
            status=job_pb2.JOB_STATUS_WAITING_FOR_HUMAN,
            approval_token="tok",
        ),
        Job(
            id="asking with a timeout",
            status=job_pb2.JOB_STATUS_WAITING_FOR_HUMAN,
            approval_integration="slack",
            approval_message='ship "it"? <b>now</b>',
            pending_transitions={"yes": "a", "no": "b", "timeout": "c"},
            approval_deadline_ms=1_795_741_508_000,
            approval_decisions=["no", "yes"],
        ),
        Job(
            id="asked once",
            status=job_pb2.JOB_STATUS_RUNNING,
            approval_message="left over",
            approval_deadline_ms=1,
        ),
    ],
    ids=[
        "everything set",
        "nothing set",
        "waiting for a human",
        "waiting with a timeout",
        "no longer waiting",
    ],
)
def test_job_body_is_job_json(job: Job) -> None:
    assert json.loads(job_body(job)) == job_json(job)
    # The inline hot path and the table that selections use write the same bytes.
    assert job_body(job, JOB_FIELDS) == job_body(job)


@pytest.mark.parametrize(
    "fields",
    [{"status"}, {"id"}, {"result", "approval_token", "created_at"}, {"initial_data", "error"}],
)
def test_a_selection_is_those_fields_of_job_json_and_the_id(fields: set[str]) -> None:
    for job in (full_job(), Job(id="w", status=job_pb2.JOB_STATUS_WAITING_FOR_HUMAN)):
        whole = job_json(job)
        expected = {name: whole[name] for name in whole if name in fields | {"id"}}
        assert json.loads(job_body(job, fields)) == expected


def test_the_approval_says_what_the_wait_asks_and_only_while_it_waits() -> None:
    waiting = Job(
        id="w",
        status=job_pb2.JOB_STATUS_WAITING_FOR_HUMAN,
        approval_integration="slack",
        approval_message="ship it?",
        pending_transitions={"yes": "a", "no": "b", "timeout": "c"},
    )
    # A record from before the decisions were recorded offers every transition.
    assert job_json(waiting)["approval"] == {
        "integration": "slack",
        "message": "ship it?",
        "decisions": ["no", "timeout", "yes"],
        "expires_at": None,
    }
    waiting.approval_deadline_ms = 1_795_741_508_000
    waiting.approval_decisions[:] = ["no", "yes"]  # as the engine records a timed wait
    assert job_json(waiting)["approval"] == {
        "integration": "slack",
        "message": "ship it?",
        "decisions": ["no", "yes"],
        "expires_at": "2026-11-27T01:05:08.000+00:00",
    }
    assert json.loads(job_body(waiting, {"approval"}))["approval"]["decisions"] == ["no", "yes"]
    waiting.status = job_pb2.JOB_STATUS_FINISHED
    assert "approval" not in job_json(waiting)
    assert json.loads(job_body(waiting, {"approval"})) == {"id": "w"}


def test_the_selectable_fields_are_the_documented_ones_in_order() -> None:
    assert tuple(SCHEMAS["Job"]["properties"]) == JOB_FIELDS


def test_job_body_refuses_a_payload_that_is_not_json() -> None:
    job = Job(id="j-1", initial_data=Payload(encoding="msgpack", data=b"\x81"))
    with pytest.raises(ValueError, match="msgpack"):
        job_json(job)
    with pytest.raises(ValueError, match="msgpack"):
        job_body(job)


def test_result_is_the_final_state_history_once_the_job_is_terminal() -> None:
    running = full_job()
    running.status = job_pb2.JOB_STATUS_WAITING_FOR_WORKER
    assert json.loads(job_body(running))["result"] is None
    for status in (job_pb2.JOB_STATUS_FINISHED, job_pb2.JOB_STATUS_CANCELLED):
        ended = full_job()
        ended.status = status
        rendered = json.loads(job_body(ended))
        assert rendered["result"] == rendered["state_history"] == job_json(ended)["result"]
