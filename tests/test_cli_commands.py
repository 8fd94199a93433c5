"""The client commands (``avtomatika jobs|workers|blueprints ...``) as a
user runs them: ``python -m avtomatika`` as a real process against a live
orchestrator, with a real SDK worker running the jobs' tasks.

One orchestrator and one worker serve the whole module (each test uses
blueprints of its own, so what one test creates never shows in another's
listing).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import pty
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from avtomatika import ActionFactory, OrchestratorEngine, StateMachineBlueprint
from avtomatika.worker import TaskContext, TaskFailure
from tests.support import CLIENT_TOKEN, wait_until
from tests.support.blueprints import approval_blueprint, echo_blueprint, instant_blueprint
from tests.support.net import free_port
from tests.support.orchestrator import OTHER_CLIENT_TOKEN, make_settings, with_other_client
from tests.support.sdk import serving
from tests.support.tls import Authority

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "blueprints"
WORKER_ID = "cli-worker"

# The gated skill reports half its progress, then waits for the test to
# open its gate (named in the job's initial data).
GATES: dict[str, asyncio.Event] = {}
# Jobs whose flaky task already failed once (it succeeds on a retry).
FAILED_ONCE: set[str] = set()


async def _echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
    await task.report_progress(0.5, "echoing")
    return {"echo": params}


async def _gated(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
    await task.report_progress(0.5, "half way")
    await GATES[params["gate"]].wait()
    return {}


async def _flaky(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
    if task.job_id not in FAILED_ONCE:
        FAILED_ONCE.add(task.job_id)
        raise TaskFailure(TaskFailure.PERMANENT, "the disk is on fire")
    return {"second": "time lucky"}


def _doomed_blueprint() -> StateMachineBlueprint:
    """``jobs/doomed``: from its start straight to an end state that fails
    the job (the transition written out, so the graph draws it)."""
    bp = StateMachineBlueprint("doomed", api_endpoint="jobs/doomed", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("failed")

    @bp.handler_for("failed", is_end=True, outcome="failed")
    async def failed() -> None:
        return None

    return bp


@dataclass(frozen=True)
class Ran:
    """A finished ``avtomatika`` process."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass(frozen=True)
class Cli:
    """``avtomatika`` pointed (by its environment) at the module's server."""

    url: str
    orchestrator: OrchestratorEngine

    def env(self, token: str | None = CLIENT_TOKEN) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AVTOMATIKA_")}
        env["AVTOMATIKA_URL"] = self.url
        if token is not None:
            env["AVTOMATIKA_TOKEN"] = token
        return env

    async def start(self, *args: str, **streams: Any) -> asyncio.subprocess.Process:
        streams.setdefault("stdout", asyncio.subprocess.PIPE)
        streams.setdefault("stderr", asyncio.subprocess.PIPE)
        streams.setdefault("env", self.env())
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "avtomatika", *args, **streams
        )

    async def __call__(self, *args: str, token: str | None = CLIENT_TOKEN, **env: str) -> Ran:
        """Run ``avtomatika *args`` to its end; ``env`` adds variables."""
        process = await self.start(*args, env=self.env(token) | env)
        out, err = await process.communicate()
        assert process.returncode is not None
        ran = Ran(process.returncode, out.decode(), err.decode())
        assert "Traceback" not in ran.err, ran.err
        return ran

    async def create(self, blueprint: str, data: dict[str, Any] | None = None) -> str:
        ran = await self("jobs", "create", blueprint, "--data", json.dumps(data or {}), "--json")
        assert ran.code == 0, ran.err
        job_id: str = ran.json()["job_id"]
        return job_id


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cli(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cli]:
    blueprints = [
        echo_blueprint("echo"),
        echo_blueprint("gated", task_type="gated"),
        echo_blueprint("flaky", task_type="flaky"),
        echo_blueprint("stuck", task_type="nobody_has_this_skill"),
        _doomed_blueprint(),
        instant_blueprint(),
        approval_blueprint("review"),
    ]
    # The other client never creates a job: it is the one whose list is empty.
    settings = make_settings(**with_other_client(tmp_path_factory.mktemp("clients")))
    orchestrator = OrchestratorEngine(config=settings, blueprints=blueprints)
    await orchestrator.start()
    try:
        skills = {"echo": _echo, "gated": _gated, "flaky": _flaky}
        async with serving(orchestrator, skills, worker_id=WORKER_ID, max_concurrency=4):
            await wait_until(lambda: orchestrator.engine.workers.info(WORKER_ID) is not None)
            yield Cli(f"http://127.0.0.1:{orchestrator.rest_port}", orchestrator)
    finally:
        await orchestrator.stop()


def _one_line(ran: Ran) -> str:
    """The error line of a refused command: exactly one, on stderr."""
    assert ran.code != 0
    assert ran.out == ""
    lines = ran.err.splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("avtomatika: ")
    return lines[0]


async def test_version_is_the_installed_distributions() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    assert out.decode() == f"avtomatika {importlib.metadata.version('avtomatika')}\n"


async def test_create_by_name_and_watch_until_finished(cli: Cli) -> None:
    ran = await cli("jobs", "create", "echo", "--data", '{"text": "hi"}', "--watch")
    assert ran.code == 0, ran.err
    job_id, *changes = ran.out.splitlines()
    assert len(job_id) > 8
    assert "finished" in changes[-1]
    assert "done" in changes[-1]
    job = (await cli("jobs", "get", job_id, "--json")).json()
    assert job["status"] == "finished"
    assert job["result"] == {"echo": {"text": "hi"}}


async def test_create_by_route_and_watch_as_json_lines(cli: Cli) -> None:
    ran = await cli("jobs", "create", "v1/jobs/echo", "--data", '{"n": 1}', "--watch", "--json")
    assert ran.code == 0, ran.err
    created, *events = [json.loads(line) for line in ran.out.splitlines()]
    assert created["status"] == "accepted"
    assert {event["event"] for event in events} <= {"status", "progress"}
    assert all(event["data"]["job_id"] == created["job_id"] for event in events)
    assert events[-1]["data"]["status"] == "finished"


async def test_initial_data_from_a_file_and_refused_data(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"from": "file"}')
    job_id = (await cli("jobs", "create", "jobs/instant", "--data", f"@{data}", "--json")).json()[
        "job_id"
    ]
    assert (await cli("jobs", "get", job_id, "--json")).json()["initial_data"] == {"from": "file"}

    assert "--data is not JSON" in _one_line(
        await cli("jobs", "create", "instant", "--data", "{nope")
    )
    assert "must be a JSON object, got list" in _one_line(
        await cli("jobs", "create", "instant", "--data", "[1]")
    )
    assert f"cannot read {tmp_path / 'missing.json'}" in _one_line(
        await cli("jobs", "create", "instant", "--data", f"@{tmp_path / 'missing.json'}")
    )
    assert _one_line(await cli("jobs", "create", "no-such-blueprint")) == (
        "avtomatika: no blueprint is served at /api/v1/no-such-blueprint (HTTP 404)"
    )


async def test_get_shows_a_job_to_a_person(cli: Cli) -> None:
    job_id = await cli.create("instant", {"colour": "green\x1b[31m"})
    ran = await cli("jobs", "get", job_id)
    assert ran.code == 0
    shown = dict(line.split(None, 1) for line in ran.out.splitlines() if " " in line)
    assert shown["id"] == job_id
    assert shown["status"] == "finished"
    assert "\x1b" not in ran.out  # the data's escape sequence is shown, not sent
    assert _one_line(await cli("jobs", "get", "no-such-job")) == (
        "avtomatika: job 'no-such-job' not found (HTTP 404)"
    )


async def test_ls_filters_limits_and_follows_every_page(cli: Cli) -> None:
    created = [await cli.create("instant", {"i": i}) for i in range(5)]
    newest_first = created[::-1]

    every = await cli("jobs", "ls", "--blueprint", "instant", "--all", "--page-size", "2", "--json")
    listed = [job["id"] for job in every.json()["jobs"]]
    assert listed[:5] == newest_first  # three pages, one document
    assert every.json()["next_page_token"] == ""

    some = (await cli("jobs", "ls", "--blueprint", "instant", "--limit", "3", "--json")).json()
    assert [job["id"] for job in some["jobs"]] == newest_first[:3]
    assert some["next_page_token"]

    finished = await cli(
        "jobs", "ls", "--blueprint", "instant", "--status", "finished", "--state", "done", "--json"
    )
    assert set(created) <= {job["id"] for job in finished.json()["jobs"]}
    failed = await cli("jobs", "ls", "--blueprint", "instant", "--status", "failed,error", "--json")
    assert failed.json()["jobs"] == []

    table = await cli("jobs", "ls", "--blueprint", "instant", "--limit", "2")
    header, first, second, *rest = table.out.splitlines()
    assert header.split() == ["ID", "BLUEPRINT", "STATUS", "STATE", "PROGRESS", "CREATED"]
    assert first.split()[:4] == [newest_first[0], "instant", "finished", "done"]
    assert second.split()[0] == newest_first[1]
    assert "(more jobs: raise --limit, or --all)" in rest

    assert _one_line(await cli("jobs", "ls", "--status", "sleeping")) == (
        "avtomatika: statuses: 'sleeping' is not a job status (HTTP 400)"
    )


async def test_watch_exits_1_for_a_failed_job(cli: Cli) -> None:
    ran = await cli("jobs", "create", "doomed", "--watch")
    assert ran.code == 1
    job_id = ran.out.splitlines()[0]
    assert ran.err == f"avtomatika: job {job_id} ended failed in state failed\n"
    again = await cli("jobs", "watch", job_id, "--json")
    assert again.code == 1
    assert json.loads(again.out.splitlines()[-1])["data"]["status"] == "failed"


async def test_watch_exits_1_for_a_job_cancelled_while_watched(cli: Cli) -> None:
    job_id = await cli.create("stuck")
    watching = await cli.start("jobs", "watch", job_id)
    cancelled = await cli("jobs", "cancel", job_id, "--json")
    assert cancelled.code == 0
    assert cancelled.json()["status"] in {
        "cancellation_request_sent",
        "cancellation_request_accepted",
    }
    out, err = await watching.communicate()
    assert watching.returncode == 1
    assert out.decode().splitlines()[-1].split()[2] == "cancelled"
    assert err.decode().startswith(f"avtomatika: job {job_id} ended cancelled")
    again = await cli("jobs", "cancel", job_id)
    assert "already cancelled (HTTP 409)" in _one_line(again)


async def test_watch_draws_a_progress_bar_on_a_terminal(cli: Cli) -> None:
    GATES["bar"] = asyncio.Event()
    job_id = await cli.create("gated", {"gate": "bar"})
    terminal, screen = pty.openpty()
    watching = await cli.start("jobs", "watch", job_id, stdout=screen)
    os.close(screen)
    shown = bytearray()
    reading = asyncio.create_task(asyncio.to_thread(_read_terminal, terminal, shown))
    try:
        await wait_until(lambda: b"50%" in shown, message="the bar at half way")
        GATES["bar"].set()
        assert await watching.wait() == 0
        await reading
    finally:
        os.close(terminal)
    text = shown.decode()
    assert "[###############---------------]  50%  half way" in text
    assert "\r\x1b[2K" in text  # the bar is redrawn in place, then cleared
    assert text.rstrip().splitlines()[-1].split()[2:] == ["finished", "done"]


def _read_terminal(terminal: int, into: bytearray) -> None:
    """Everything written to the terminal until the process closes it."""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the other side closed
            return
        if not chunk:
            return
        into.extend(chunk)


async def test_history_lists_the_lifecycle(cli: Cli) -> None:
    job_id = await cli.create("instant")
    events = await wait_until(
        lambda: _ended_history(cli, job_id), message="the history's job_ended event"
    )
    assert events[0]["type"] == "job_created"
    table = await cli("jobs", "history", job_id)
    assert table.out.splitlines()[0].split() == [
        "TIME", "EVENT", "STATE", "WORKER", "DURATION", "MESSAGE"
    ]  # fmt: skip
    assert any(line.split()[2:4] == ["job_ended", "done"] for line in table.out.splitlines())


async def _ended_history(cli: Cli, job_id: str) -> list[dict[str, Any]] | None:
    events: list[dict[str, Any]] = (await cli("jobs", "history", job_id, "--json")).json()
    return events if events and events[-1]["type"] == "job_ended" else None


async def test_workers_ls_shows_the_connected_worker(cli: Cli) -> None:
    workers = (await cli("workers", "ls", "--json")).json()
    (worker,) = [w for w in workers if w["worker_id"] == WORKER_ID]
    assert worker["transport"] == "grpc"
    table = (await cli("workers", "ls")).out.splitlines()
    assert table[0].split()[:3] == ["WORKER", "TRANSPORT", "STATUS"]
    row = next(line.split() for line in table if line.startswith(WORKER_ID))
    assert row[1] == "grpc"
    assert "echo," in row


async def test_blueprints_ls_and_graph(cli: Cli) -> None:
    listed = (await cli("blueprints", "ls", "--json")).json()["blueprints"]
    routes = {bp["name"]: bp["route"] for bp in listed}
    assert routes["echo"] == "/api/v1/jobs/echo"
    table = (await cli("blueprints", "ls")).out.splitlines()
    assert table[0].split()[:2] == ["NAME", "ROUTE"]
    assert any(line.split()[:2] == ["doomed", "/api/v1/jobs/doomed"] for line in table)

    dot = await cli("blueprints", "graph", "doomed")
    assert dot.out.startswith('digraph "doomed" {')
    assert '"start" -> "failed"' in dot.out
    as_json = (await cli("blueprints", "graph", "doomed", "--json")).json()
    assert as_json == {"blueprint": "doomed", "format": "dot", "graph": dot.out}
    assert "no-such-blueprint" in _one_line(await cli("blueprints", "graph", "no-such-blueprint"))


async def test_an_unreachable_server_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "jobs", "ls", "--url", url, "--token", "t",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    ran = Ran(process.returncode or 0, out.decode(), err.decode())
    assert _one_line(ran) == f"avtomatika: cannot reach {url}: connection refused"


async def test_a_wrong_token_is_the_apis_401_and_a_missing_one_says_so(cli: Cli) -> None:
    for command in (("jobs", "ls"), ("workers", "ls"), ("jobs", "watch", "some-job")):
        ran = await cli(*command, token="not-the-token")
        assert _one_line(ran) == "avtomatika: missing or invalid X-Client-Token (HTTP 401)"
        assert _one_line(await cli(*command, token=None)) == (
            "avtomatika: no client token: pass --token or set AVTOMATIKA_TOKEN"
        )
    given = await cli("jobs", "ls", "--token", "a-secret-in-the-flag", token=None)
    assert "a-secret-in-the-flag" not in given.err
    assert _one_line(given).endswith("(HTTP 401)")


async def test_https_with_the_sdks_tls_variables(cli: Cli, tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    server, client = authority.server(), authority.client("cli-user")
    settings = make_settings(
        tls_cert_path=server.cert,
        tls_key_path=server.key,
        tls_ca_path=authority.cert,
        tls_require_client_cert=True,
    )
    orchestrator = OrchestratorEngine(config=settings, blueprints=[instant_blueprint()])
    await orchestrator.start()
    try:
        url = f"https://localhost:{orchestrator.rest_port}"
        trusted = {"AVTOMATIKA_URL": url, "AVTOMATIKA_TLS_CA": str(authority.cert)}
        mutual = trusted | {
            "AVTOMATIKA_TLS_CERT": str(client.cert),
            "AVTOMATIKA_TLS_KEY": str(client.key),
        }
        ran = await cli("jobs", "create", "instant", "--watch", **mutual)
        assert ran.code == 0, ran.err
        assert (await cli("jobs", "ls", "--json", **mutual)).json()["jobs"][0]["status"] == (
            "finished"
        )
        # No client certificate: the server ends the handshake.
        assert _one_line(await cli("jobs", "ls", **trusted)).startswith(
            f"avtomatika: cannot reach {url}: "
        )
        # The system's roots do not know the test CA.
        assert "certificate verify failed" in _one_line(await cli("jobs", "ls", AVTOMATIKA_URL=url))
        assert _one_line(
            await cli("jobs", "ls", **trusted, AVTOMATIKA_TLS_CERT=str(client.cert))
        ) == (
            "avtomatika: TLS: a client certificate needs its key: set both cert_path and "
            "key_path (AVTOMATIKA_TLS_CA, AVTOMATIKA_TLS_CERT, AVTOMATIKA_TLS_KEY)"
        )
    finally:
        await orchestrator.stop()


async def test_blueprints_check_a_good_directory() -> None:
    ran = await _check(EXAMPLES)
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == [
        f"ok       echo  {EXAMPLES / 'echo.py'}",
        f"1 valid, 0 invalid in {EXAMPLES}",
    ]
    report = (await _check(EXAMPLES, "--json")).json()
    assert report["valid"] is True
    assert [(bp["blueprint"], bp["route"]) for bp in report["blueprints"]] == [
        ("echo", "/api/v1/jobs/echo")
    ]


async def test_blueprints_check_a_broken_directory(tmp_path: Path) -> None:
    (tmp_path / "a_good.py").write_text((EXAMPLES / "echo.py").read_text())
    (tmp_path / "b_lost.py").write_text(
        "from avtomatika import StateMachineBlueprint\n"
        "lost = StateMachineBlueprint('lost', api_endpoint='jobs/lost', api_version='v1')\n"
        "@lost.handler_for('start', is_start=True)\n"
        "async def start(actions):\n"
        "    actions.transition_to('nowhere')\n"
        "@lost.handler_for('end', is_end=True)\n"
        "async def end():\n"
        "    pass\n"
    )
    (tmp_path / "c_crash.py").write_text("raise RuntimeError('no good')\n")
    (tmp_path / "d_twin.py").write_text((EXAMPLES / "echo.py").read_text())
    ran = await _check(tmp_path, "--json")
    assert ran.code == 1
    report = ran.json()
    assert report["valid"] is False
    verdicts = {
        Path(bp["file"]).name: (bp["blueprint"], bp["valid"]) for bp in report["blueprints"]
    }
    assert verdicts == {
        "a_good.py": ("echo", True),
        "b_lost.py": ("lost", False),
        "c_crash.py": (None, False),
        "d_twin.py": ("echo", False),
    }
    errors = {Path(bp["file"]).name: bp["error"] for bp in report["blueprints"]}
    assert "'nowhere'" in errors["b_lost.py"]
    assert "RuntimeError: no good" in errors["c_crash.py"]
    assert "already registered" in errors["d_twin.py"]
    (lost,) = [bp for bp in report["blueprints"] if bp["blueprint"] == "lost"]
    assert lost["warnings"] == []  # refused before registration could warn

    human = await _check(tmp_path)
    assert human.code == 1
    assert human.out.splitlines()[-1] == f"1 valid, 3 invalid in {tmp_path}"
    assert sum(line.startswith("INVALID") for line in human.out.splitlines()) == 3


async def test_blueprints_check_warns_and_refuses_nothing_to_check(tmp_path: Path) -> None:
    warned = tmp_path / "warned"
    warned.mkdir()
    (warned / "shipped.py").write_text(
        "from avtomatika import StateMachineBlueprint\n"
        "bp = StateMachineBlueprint('shipped')\n"
        "@bp.handler_for('start', is_start=True)\n"
        "async def start(actions):\n"
        "    actions.transition_to('shipped')\n"
        "@bp.handler_for('shipped', is_end=True)\n"
        "async def shipped():\n"
        "    pass\n"
    )
    ran = await _check(warned)
    assert ran.code == 0
    assert ran.out.splitlines()[1].startswith("         warning: blueprint 'shipped': end state")
    assert ran.err == ""

    empty = tmp_path / "empty"
    empty.mkdir()
    ran = await _check(empty)
    assert ran.code == 1
    assert ran.err == f"avtomatika: no blueprint found in {empty} (its *.py files define none)\n"
    assert _one_line(await _check(tmp_path / "absent")) == (
        f"avtomatika: {tmp_path / 'absent'} is not a directory"
    )


async def _check(directory: Path, *options: str) -> Ran:
    """``blueprints check`` with no server and no URL anywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVTOMATIKA_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "blueprints", "check", str(directory), *options,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def test_a_command_line_mistake_exits_2(cli: Cli) -> None:
    ran = await cli("jobs", "ls", "--limit", "0")
    assert ran.code == 2
    assert "expected a whole number >= 1, got '0'" in ran.err
    assert (await cli("jobs")).code == 2


async def test_retry_a_quarantined_job(cli: Cli) -> None:
    ran = await cli("jobs", "create", "flaky", "--watch")
    assert ran.code == 1
    job_id = ran.out.splitlines()[0]
    assert ran.err == (
        f"avtomatika: job {job_id} ended quarantined: "
        "task 'flaky' failed (PERMANENT_ERROR): the disk is on fire\n"
    )
    retried = await cli("jobs", "retry", job_id, "--json")
    assert retried.code == 0, retried.err
    assert retried.json()["id"] == job_id
    assert (await cli("jobs", "watch", job_id)).code == 0
    assert _one_line(await cli("jobs", "retry", job_id)).endswith("(HTTP 409)")  # finished now


async def test_approve_a_job_waiting_for_a_person(cli: Cli) -> None:
    job_id = await cli.create("review")
    job = (await cli("jobs", "get", job_id, "--json")).json()
    assert job["status"] == "waiting_for_human"
    assert sorted(job["approval"]["decisions"]) == ["approved", "rejected"]
    shown = (await cli("jobs", "get", job_id)).out
    assert "ship it? (decide: " in shown

    watching = await cli.start("jobs", "watch", job_id, "--json")
    assert watching.stdout is not None
    first = json.loads(await watching.stdout.readline())  # following before the decision
    assert first["data"]["status"] == "waiting_for_human"
    assert "(HTTP 400)" in _one_line(await cli("jobs", "approve", job_id, "maybe"))
    approved = await cli("jobs", "approve", job_id, "approved")
    assert approved.code == 0, approved.err
    assert approved.out.startswith(f"job {job_id}: ")
    out, _ = await watching.communicate()
    assert watching.returncode == 0
    assert json.loads(out.decode().splitlines()[-1])["data"]["status"] == "finished"
    assert "(HTTP 409)" in _one_line(await cli("jobs", "approve", job_id, "approved"))


async def test_ls_counts_every_status(cli: Cli) -> None:
    await cli.create("doomed")
    listed = (await cli("jobs", "ls", "--json", "--limit", "1")).json()
    counts = listed["counts"]
    assert counts["failed"] >= 1
    assert {"finished", "failed", "cancelled", "running"} <= set(counts)
    table = (await cli("jobs", "ls", "--limit", "1")).out
    assert "all your jobs: " in table


async def test_graph_as_svg(cli: Cli) -> None:
    ran = await cli("blueprints", "graph", "doomed", "--svg")
    assert ran.code == 0, ran.err
    assert "<svg" in ran.out
    assert '<g class="state" data-state="failed"' in ran.out


async def test_connection_options_go_at_every_level_the_innermost_winning(cli: Cli) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    for command in (
        ("--url", cli.url, "--token", CLIENT_TOKEN, "--json", "jobs", "ls"),
        ("jobs", "--url", cli.url, "--token", CLIENT_TOKEN, "--json", "ls"),
        ("--url", nowhere, "jobs", "--url", nowhere, "ls", "--url", cli.url, "--json"),
        ("--token", "not-the-token", "jobs", "ls", "--token", CLIENT_TOKEN, "--json"),
    ):
        ran = await cli(*command, token=None if "--token" in command else CLIENT_TOKEN,
                        AVTOMATIKA_URL=nowhere if "--url" in command else cli.url)  # fmt: skip
        assert ran.code == 0, (command, ran.err)
        assert isinstance(ran.json()["jobs"], list)
    assert _one_line(await cli("--url", cli.url, "workers", "ls", "--url", nowhere)) == (
        f"avtomatika: cannot reach {nowhere}: connection refused"
    )
    for helped in (("--help",), ("jobs", "--help"), ("jobs", "ls", "--help")):
        shown = (await cli(*helped)).out
        assert "AVTOMATIKA_URL" in shown
        assert "AVTOMATIKA_TOKEN" in shown


async def test_ls_with_no_job_says_so(cli: Cli) -> None:
    assert (await cli("jobs", "ls", token=OTHER_CLIENT_TOKEN)).out == "no jobs\n"
    assert (await cli("jobs", "ls", "--json", token=OTHER_CLIENT_TOKEN)).json()["jobs"] == []
    await cli.create("doomed")
    filtered = await cli("jobs", "ls", "--blueprint", "doomed", "--status", "finished")
    assert filtered.code == 0
    assert filtered.out.splitlines()[0] == "no jobs match"
    assert "all your jobs: " in filtered.out


async def test_an_ended_job_shows_no_progress_percentage(cli: Cli) -> None:
    GATES["progress"] = asyncio.Event()
    job_id = await cli.create("gated", {"gate": "progress"})

    async def half_way() -> dict[str, str] | None:
        shown = await _job_shown(cli, job_id)
        return shown if shown["progress"].startswith("50%") else None

    running = await wait_until(half_way, message="the job at half way")
    assert running["progress"] == "50%  half way"  # the job is still going
    GATES["progress"].set()
    assert (await cli("jobs", "watch", job_id)).code == 0
    finished = await _job_shown(cli, job_id)
    assert finished["status"] == "finished"
    assert finished["progress"] == "-"
    listed = (await cli("jobs", "ls", "--blueprint", "gated", "--limit", "1")).out.splitlines()
    assert listed[1].split()[:5] == [job_id, "gated", "finished", "done", "-"]


async def _job_shown(cli: Cli, job_id: str) -> dict[str, str]:
    """``jobs get``'s listing, key to value."""
    ran = await cli("jobs", "get", job_id)
    assert ran.code == 0, ran.err
    return dict(line.split(None, 1) for line in ran.out.splitlines() if " " in line)
