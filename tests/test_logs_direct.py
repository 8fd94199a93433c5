"""The access and lifecycle lines written without a LogRecord
(:mod:`avtomatika.logs.direct`) are the lines :mod:`logging` writes, and an
application's own handlers still get real records.

An orchestrator in the test's loop, its logging configured as ``serve``
configures it (:func:`configure_logging`) but to a file: real REST requests
and a job, then the file read back.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO
from unittest import mock

import pytest

from avtomatika.logs.access import ACCESS_LOG
from avtomatika.logs.direct import log_line
from avtomatika.logs.formats import configure_logging
from avtomatika.logs.lifecycle import JOB_LOG
from avtomatika.logs.scope import close_scope, open_scope
from tests.support.blueprints import instant_blueprint
from tests.support.jobs import create_job, wait_for_status
from tests.support.orchestrator import HttpClient, StartOrchestrator


class Logs:
    """The process's logging configured to a file, as ``serve`` does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stream: TextIO | None = None

    def configure(self, log_format: str, instance: str | None = None) -> None:
        self.close()
        self._stream = self.path.open("w", encoding="utf-8")
        configure_logging(logging.INFO, log_format, instance=instance, stream=self._stream)

    def lines(self) -> list[str]:
        for handler in logging.getLogger().handlers:
            handler.flush()
        return self.path.read_text(encoding="utf-8").splitlines()

    def close(self) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            handler.flush()
            root.removeHandler(handler)
        if self._stream is not None:
            self._stream.close()
            self._stream = None


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Logs]:
    """Configures logging for the test, and puts back what was there."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    switches = (logging._srcfile, logging.logThreads, logging.logProcesses)
    quieted = {name: logging.getLogger(name).level for name in ("grpc", "grpc.aio")}
    configured = Logs(tmp_path / "orchestrator.log")
    yield configured
    configured.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging._srcfile, logging.logThreads, logging.logProcesses = switches
    for name, old in quieted.items():
        logging.getLogger(name).setLevel(old)


class Collector(logging.Handler):
    """An application's handler: keeps the records it gets."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_line_without_a_record_is_the_line_logging_writes(logs: Logs) -> None:
    """Each format, with and without an instance tag, a request id from the
    scope or the line's own: the same text either way."""
    # A handler that takes nothing (above CRITICAL) still sits on the
    # path, so log_line must hand the same line to logging instead.
    bystander = logging.NullHandler()
    bystander.setLevel(logging.CRITICAL + 1)
    cases: list[tuple[int, str, tuple[Any, ...], dict[str, Any]]] = [
        (logging.INFO, "job %s entered state %s", ("j1", "start"), {"job_id": "j1"}),
        (logging.WARNING, "job %s ended: %s", ("j2", "boom"), {"job_id": "j2", "n": 1.5}),
        (logging.INFO, "GET %s %d", ("/x?token=***", 200), {"request_id": "own-id"}),
    ]
    for log_format in ("text", "json"):
        for instance in (None, "i3"):
            logs.configure(log_format, instance)
            _scope, token = open_scope("scope-id")
            with mock.patch("time.time", return_value=1_765_000_000.042):
                for level, template, args, fields in cases:
                    log_line(JOB_LOG, level, template, args, dict(fields))
                    logging.getLogger().addHandler(bystander)
                    log_line(JOB_LOG, level, template, args, dict(fields))
                    logging.getLogger().removeHandler(bystander)
            close_scope(token)
            lines = logs.lines()
            assert len(lines) == 2 * len(cases)
            for direct, through_logging in zip(lines[::2], lines[1::2], strict=True):
                assert direct == through_logging
            first = lines[0]
            if log_format == "json":
                assert json.loads(first)["request_id"] == "scope-id"
                assert json.loads(lines[4])["request_id"] == "own-id"
            else:
                assert first.startswith(
                    f"{_local_stamp(1_765_000_000)},042 INFO avtomatika.jobs: "
                    "job j1 entered state start [request_id=scope-id]"
                )
            if instance is not None and log_format == "json":
                assert all(json.loads(line)["instance"] == "i3" for line in lines)
            elif instance is not None:
                assert all(line.endswith(" [instance=i3]") for line in lines)


def _local_stamp(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


async def test_served_requests_and_jobs_write_their_lines(
    logs: Logs, start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """Through a real orchestrator, JSON: the access line of each request
    with the request id it answered with, and the job's lifecycle lines
    with its id and client."""
    logs.configure("json")
    orchestrator = await start_orchestrator([instant_blueprint()])
    http = http_client(orchestrator)
    response = await http.post(
        "/api/v1/jobs/instant", json={"initial_data": {}}, headers={"X-Request-ID": "req-42"}
    )
    assert response.status == 202
    job_id = (await response.json())["job_id"]
    await wait_for_status(http, job_id, "finished")
    lines = [json.loads(line) for line in logs.lines()]
    posts = [line for line in lines if line.get("method") == "POST"]
    assert len(posts) == 1
    post = posts[0]
    assert post["logger"] == "avtomatika.access"
    assert post["level"] == "INFO"
    assert post["status"] == 202
    assert post["path"] == "/api/v1/jobs/instant"
    assert post["request_id"] == "req-42"
    assert post["caller"] == "client:default"
    assert post["client_id"] == "default"
    assert re.fullmatch(
        r"POST /api/v1/jobs/instant 202 \d+\.\d ms caller=client:default remote=127\.0\.0\.1",
        post["message"],
    )
    job_lines = [line for line in lines if line.get("job_id") == job_id]
    events = [line["event"] for line in job_lines]
    assert events[0] == "job_created"
    assert events[-1] == "job_ended"
    assert "state_entered" in events
    created = job_lines[0]
    assert created["logger"] == "avtomatika.jobs"
    assert created["client_id"] == "default"
    # Logged while the POST was served: its request id.
    assert created["request_id"] == "req-42"
    assert job_lines[-1]["status"] == "finished"
    assert job_lines[-1]["message"] == f"job {job_id} ended: finished"


async def test_an_applications_handler_gets_the_records(
    logs: Logs, start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    """A handler attached to the access logger receives every access line
    as a record with its fields, and the orchestrator's own handler, which
    the record propagates to, writes the same line it writes without it."""
    logs.configure("text")
    collector = Collector()
    ACCESS_LOG.addHandler(collector)
    try:
        orchestrator = await start_orchestrator([instant_blueprint()])
        http = http_client(orchestrator)
        job_id = await create_job(http, "jobs/instant")
        await wait_for_status(http, job_id, "finished")
    finally:
        ACCESS_LOG.removeHandler(collector)
    posts = [r for r in collector.records if r.__dict__.get("method") == "POST"]
    assert len(posts) == 1
    record = posts[0]
    assert record.__dict__["status"] == 202
    assert record.__dict__["path"] == "/api/v1/jobs/instant"
    request_id = record.__dict__["request_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", request_id)
    written = [line for line in logs.lines() if " avtomatika.access: POST " in line]
    assert len(written) == 1
    assert written[0].endswith(f"{record.getMessage()} [request_id={request_id}]")
