"""The one worker-id rule (:mod:`avtomatika.ids`): what it takes, what it
says when it refuses, and that the REST API's JSON Schema states the same
pattern (the transports' own tests send bad ids through the wire); and the
random hex of the ids the orchestrator makes, never repeated, in a forked
child either."""

from __future__ import annotations

import os
import re

import pytest

from avtomatika.errors import InvalidArgument
from avtomatika.ids import (
    MAX_WORKER_ID_LENGTH,
    WORKER_ID_PATTERN,
    check_worker_id,
    random_hex,
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


def test_random_ids_are_hex_of_their_size_and_never_repeat() -> None:
    # Enough to draw from the kernel many times over.
    ids = [random_hex(16) for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)
    assert len(set(ids)) == len(ids)
    assert re.fullmatch(r"[0-9a-f]{16}", random_hex(8))


def test_a_forked_child_draws_ids_of_its_own() -> None:
    """A child of ``serve --processes`` must not make its parent's next ids."""
    random_hex(16)  # the parent holds random bytes not handed out yet
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        os.write(write_end, " ".join(random_hex(16) for _ in range(3)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(child, 0)
    ours = {random_hex(16) for _ in range(3)}
    assert len(theirs) == 3
    assert not ours & theirs
