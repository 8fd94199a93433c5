"""The one worker-id rule (:mod:`avtomatika.ids`): what it takes, what it
says when it refuses, and that the REST API's JSON Schema states the same
pattern (the transports' own tests send bad ids through the wire)."""

from __future__ import annotations

import pytest

from avtomatika.errors import InvalidArgument
from avtomatika.ids import (
    MAX_WORKER_ID_LENGTH,
    WORKER_ID_PATTERN,
    check_worker_id,
    worker_id_problem,
)
from avtomatika.rest.api_shapes import SCHEMAS


@pytest.mark.parametrize("worker_id", ["w-1", "GPU_node_07", "0"])
def test_letters_digits_underscores_and_dashes_make_a_worker_id(worker_id: str) -> None:
    assert worker_id_problem(worker_id) is None
    assert check_worker_id(worker_id) == worker_id


@pytest.mark.parametrize("worker_id", ["", "w 1", "w/1", "w.1", "wörker", "w-1\n"])
def test_anything_else_is_refused_saying_the_pattern(worker_id: str) -> None:
    message = f"worker_id {worker_id!r} must match {WORKER_ID_PATTERN}"

    assert worker_id_problem(worker_id) == message
    with pytest.raises(InvalidArgument) as refused:
        check_worker_id(worker_id)
    assert refused.value.message == message


def test_the_rest_schema_states_the_same_pattern_and_length() -> None:
    worker_id = SCHEMAS["WorkerRegistration"]["properties"]["worker_id"]

    assert worker_id == {
        "type": "string",
        "pattern": WORKER_ID_PATTERN,
        "maxLength": MAX_WORKER_ID_LENGTH,
    }


def test_an_overlong_worker_id_is_refused_without_being_echoed() -> None:
    problem = worker_id_problem("w" * 10_000)
    assert problem is not None
    assert "at most 128" in problem
    assert len(problem) < 100
    assert worker_id_problem("w" * MAX_WORKER_ID_LENGTH) is None
