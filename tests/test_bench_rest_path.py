"""``make bench``'s REST path, briefly: the system we replace (avtomatika
1.0b13 from PyPI, on a redis-server of its own) and ours, each with four
real SDK 1.0b7 workers and polling clients, side by side in one round. A
few jobs only: this checks that the harness measures both sides (every job
finished, requests counted per route, CPU per job, the ratio), never how
fast either is.

The throwaway virtualenvs come from the package index: without it the test
is skipped, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from benchmarks import rest_path
from benchmarks.end_to_end import throwaway_python

JOBS = 40


@pytest.fixture
def installed() -> None:
    """The reference and the SDK in their virtualenvs (made once)."""
    try:
        throwaway_python(*rest_path.REFERENCE)
        throwaway_python(rest_path.SDKS["1.0b7"])
    except subprocess.CalledProcessError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"could not install from the package index ({error}); CI=true requires it")
        pytest.skip(f"could not install from the package index: {error}")


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("installed")
async def test_the_reference_and_ours_side_by_side() -> None:
    rows = await rest_path.measure_round(0, JOBS, "4", "1.0b7", "1.0b7", "embedded", 20)

    assert [(row["system"], row["store"]) for row in rows] == [
        ("1.0b13", "redis"),
        ("Avtomatika", "embedded"),
    ]
    for row in rows:
        assert row["statuses"] == {"finished": JOBS}
        routes = row["requests_per_job_by_route"]
        # Every job: one create, one task handed out, one result, and the
        # client's polls, which the server counted as the client did.
        assert routes["POST /api/v1/jobs/{id} 202"] == 1.0
        assert routes["GET /_worker/workers/{id}/tasks/next 200"] == 1.0
        assert routes["POST /_worker/tasks/result 200"] == 1.0
        assert routes["GET /api/v1/jobs/{id} 200"] == row["polls_per_job"]
        assert row["cpu_ms_per_job"]["server"] > 0
        assert row["cpu_ms_per_job"]["workers"] > 0
    reference = rows[0]
    assert reference["cpu_ms_per_job"]["redis"] > 0
    assert reference["redis_commands_per_job"] > 0
    [ratio] = rest_path.ratios(rows)
    assert ratio["store"] == "embedded"
    assert ratio["reference_store"] == "redis"
    assert ratio["jobs_per_s"] == round(rows[1]["jobs_per_s"] / reference["jobs_per_s"], 2)
