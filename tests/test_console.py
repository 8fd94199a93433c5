"""The web console (``/`` and ``/console``) in a real headless Chromium
(Debian's ``chromium``, driven by Playwright): a person with a client token
finds, follows, approves, cancels and retries their jobs, sees the workers,
and never another client's jobs; hostile data shows as text and runs
nothing; the token travels only in a request header.

One orchestrator, one SDK worker and one browser serve the whole module
(each test opens its own browser context): the orchestrator runs in an event
loop of its own thread, since Playwright's sync API drives the browser from
the test's. Screenshots go to each test's ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from avtomatika import ActionFactory, OrchestratorEngine, StateMachineBlueprint
from avtomatika.worker import TaskContext, TaskFailure
from tests.support.history import history_until
from tests.support.orchestrator import make_settings
from tests.support.rest_worker import RestWorker
from tests.support.sdk import serving

CHROMIUM = Path("/usr/bin/chromium")
ALICE, BOB = "alice-console-token-0123456789", "bob-console-token-0123456789"
HOSTILE_STATE = '<img src=x onerror="window.__pwned=3">'
_T = TypeVar("_T")


def console_blueprint() -> StateMachineBlueprint:
    """``jobs/console``: a task for the SDK worker (its params are the
    initial data), then a person's decision."""
    bp = StateMachineBlueprint("console", api_endpoint="jobs/console", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        actions.dispatch_task(
            "console_work", params=initial_data, transitions={"success": "review"}
        )

    @bp.handler_for("review")
    async def review(actions: ActionFactory) -> None:
        actions.await_human_approval(
            integration="console",
            message="Ship the <b>cut</b>?",
            transitions={"approved": "finished", "rejected": "rejected"},
        )

    @bp.handler_for("finished", is_end=True, outcome="finished")
    @bp.handler_for("rejected", is_end=True, outcome="failed")
    async def done() -> None:
        return None

    return bp


def hostile_blueprint() -> StateMachineBlueprint:
    """``jobs/hostile``: a state whose name is markup."""
    bp = StateMachineBlueprint("hostile", api_endpoint="jobs/hostile", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task(
            "console_work",
            params={"mode": "hostile"},
            transitions={"success": '<img src=x onerror="window.__pwned=3">'},
        )

    @bp.handler_for(HOSTILE_STATE, is_end=True, outcome="finished")
    async def end() -> None:
        return None

    return bp


def orphan_blueprint() -> StateMachineBlueprint:
    """``jobs/orphan``: a task of a skill no worker has; ``n``, if given,
    must be an integer."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    bp = StateMachineBlueprint(
        "orphan", api_endpoint="jobs/orphan", api_version="v1", input_schema=schema
    )

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task("gpu_render", params={}, transitions={"success": "done"})

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


@dataclass
class Worked:
    """What the module's SDK worker does, by ``params["mode"]``."""

    attempts: dict[str, int] = field(default_factory=dict)

    async def work(self, params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        mode = params.get("mode")
        self.attempts[task.job_id] = self.attempts.get(task.job_id, 0) + 1
        await task.report_progress(0.5, "half way")
        if mode == "hold":
            await asyncio.Event().wait()  # until the job is cancelled
        if mode == "flaky" and self.attempts[task.job_id] == 1:
            raise TaskFailure(TaskFailure.PERMANENT, "the disk was full")
        if mode == "hostile":
            return {
                "html": '<img src=x onerror="window.__pwned=1">',
                "script": "<script>window.__pwned=2</script>",
            }
        return {"worked": True}


class Server:
    """The orchestrator and its SDK worker in an event loop of their own
    thread; ``run`` runs a coroutine there."""

    def __init__(self, clients: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.worked = Worked()
        self._rest_workers: list[RestWorker] = []
        self.orchestrator = self.run(self._start(clients))
        self.base = f"http://127.0.0.1:{self.orchestrator.rest_port}"

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 20) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self, clients: Path) -> OrchestratorEngine:
        settings = make_settings(clients_config_path=clients)
        orchestrator = OrchestratorEngine(
            config=settings,
            blueprints=[console_blueprint(), hostile_blueprint(), orphan_blueprint()],
        )
        await orchestrator.start()
        self._worker = serving(
            orchestrator,
            {"console_work": self.worked.work},
            worker_id="grpc-sdk-1",
            max_concurrency=8,
        )
        await self._worker.__aenter__()
        return orchestrator

    def create(self, token: str, initial_data: dict[str, Any], blueprint: str = "console") -> str:
        async def post() -> str:
            async with aiohttp.ClientSession(self.base, headers={"X-Client-Token": token}) as http:
                response = await http.post(
                    f"/api/v1/jobs/{blueprint}", json={"initial_data": initial_data}
                )
                assert response.status == 202, await response.text()
                job_id: str = (await response.json())["job_id"]
                return job_id

        return self.run(post())

    def picked_up_task(self, token: str, job_id: str) -> str:
        """The id of the job's task once a worker holds it (from its history)."""

        async def picked() -> str:
            async with aiohttp.ClientSession(self.base, headers={"X-Client-Token": token}) as http:
                events = await history_until(
                    http, job_id, lambda events: any(e["type"] == "task_picked_up" for e in events)
                )
            task_id: str = next(e["task_id"] for e in events if e["type"] == "task_picked_up")
            return task_id

        return self.run(picked())

    def rest_worker(self, worker_id: str, skills: list[str]) -> None:
        """Register a REST worker (it stays listed while the module runs)."""

        async def register() -> None:
            worker = RestWorker(self.orchestrator, worker_id)
            self._rest_workers.append(worker)
            await worker.register(skills)
            await worker.beat(supported_skills=skills)

        self.run(register())

    def stop(self) -> None:
        async def stop() -> None:
            for worker in self._rest_workers:
                await worker.http.close()
            await self._worker.__aexit__(None, None, None)
            await self.orchestrator.stop()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    clients = tmp_path_factory.mktemp("console") / "clients.toml"
    clients.write_text(f'[alice]\ntoken = "{ALICE}"\n\n[bob]\ntoken = "{BOB}"\n')
    running = Server(clients)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        message = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true requires it")
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@dataclass
class Console:
    """A browser tab on the console, recording every request URL it sends."""

    page: Page
    base: str
    shots: Path
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    """(URL, headers) of every request the page sent."""
    problems: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def login(self, token: str) -> None:
        self.page.goto(f"{self.base}/console")
        self.page.get_by_label("Client token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("heading", name="Jobs").wait_for()

    def open_job(self, job_id: str, token: str | None = None) -> None:
        """The job's page (signed in with ``token`` first, if given)."""
        if token is not None:
            self.login(token)
        self.page.goto(f"{self.base}/console#/jobs/{job_id}")

    def status_is(self, status: str) -> None:
        summary = self.page.locator(".summary")
        expect(summary.locator(".badge")).to_have_text(status.replace("_", " "), timeout=15_000)


@pytest.fixture
def console(server: Server, browser: Browser, tmp_path: Path) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    tab = Console(page, server.base, tmp_path)
    page.on("request", lambda request: tab.requests.append((request.url, request.headers)))
    page.on("pageerror", lambda error: tab.problems.append(str(error)))
    yield tab
    # Whatever the test did: the token stayed in sessionStorage and in the
    # X-Client-Token header of API requests, never in a URL, another header,
    # a cookie or localStorage; and no script failed.
    assert context.cookies() == []
    assert page.evaluate("localStorage.length") == 0
    context.close()
    assert [url for url, _ in tab.requests if "/api/" in url]
    for url, headers in tab.requests:
        for token in (ALICE, BOB):
            assert token not in url
            assert token not in str({k: v for k, v in headers.items() if k != "x-client-token"})
        if "/api/" in url:
            assert headers.get("x-client-token"), url
    assert tab.problems == []


def test_create_follow_and_approve_a_job(console: Console, server: Server) -> None:
    page = console.page
    console.login(ALICE)
    assert page.evaluate("sessionStorage.length") == 1
    page.get_by_role("link", name="Blueprints").click()
    # The server checks the input schema; its refusal is shown.
    orphan = page.get_by_role("form", name="Create a job of orphan")
    orphan.get_by_label("Initial data (JSON object)").fill('{"n": "<b>x</b>"}')
    orphan.get_by_role("button", name="Create job").click()
    expect(orphan.locator("output")).to_contain_text(
        "Refused (400): initial_data.n: '<b>x</b>' is not of type 'integer'"
    )
    form = page.get_by_role("form", name="Create a job of console")
    form.get_by_label("Initial data (JSON object)").fill("not json")
    form.get_by_role("button", name="Create job").click()
    expect(form.locator("output")).to_contain_text("Not JSON")
    form.get_by_label("Initial data (JSON object)").fill('{"mode": "quick", "n": 1}')
    console.shot("blueprints")
    form.get_by_role("button", name="Create job").click()
    created = form.locator("[data-created-job]")
    created.wait_for()
    job_id = created.get_attribute("data-created-job")
    assert job_id

    page.get_by_role("link", name="Jobs").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=job_id))
    expect(row.locator(".badge")).to_have_text("waiting for human", timeout=15_000)
    console.shot("jobs")

    row.get_by_role("link", name=job_id).click()
    console.status_is("waiting_for_human")
    approval = page.get_by_role("group", name="Waiting for a decision")
    expect(approval).to_contain_text("Ship the <b>cut</b>?")
    console.shot("waiting")
    approval.get_by_role("button", name="approved").click()
    console.status_is("finished")
    expect(page.locator(".answer")).to_contain_text('Decision "approved"')
    timeline = page.locator(".timeline")
    expect(timeline).to_contain_text("decision")
    expect(timeline).to_contain_text("ended")
    tasks = page.get_by_role("table").first
    expect(tasks).to_contain_text("console_work")
    expect(tasks).to_contain_text("grpc-sdk-1")
    graph = page.locator("figure.graph svg")
    expect(graph.locator('g.state.current[data-state="finished"]')).to_have_count(1)
    expect(graph.locator('g.state.visited[data-state="review"]')).to_have_count(1)
    taken = graph.locator('g.transition.taken[data-from="review"][data-to="finished"]')
    expect(taken).to_have_count(1)
    expect(graph.locator('g.transition.taken[data-to="rejected"]')).to_have_count(0)
    console.shot("finished")


def test_cancel_a_running_job(console: Console, server: Server) -> None:
    job_id = server.create(ALICE, {"mode": "hold"})
    console.open_job(job_id, ALICE)
    page = console.page
    tasks = page.get_by_role("table").first
    expect(tasks).to_contain_text("grpc-sdk-1", timeout=15_000)
    expect(tasks).to_contain_text("50%")
    console.shot("running")

    # Cancelling asks first, in the page and from the keyboard: Escape
    # keeps the job, and only the confirming button calls the API.
    page.get_by_role("button", name="Cancel job").click()
    question = page.get_by_role("group", name="Cancel this job?")
    expect(question.get_by_role("button", name="No, keep it")).to_be_focused()
    console.shot("cancel-question")
    page.keyboard.press("Escape")
    expect(question).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel job")).to_be_focused()
    console.status_is("waiting_for_worker")
    page.keyboard.press("Enter")
    question.get_by_role("button", name="Yes, cancel the job").click()

    console.status_is("cancelled")
    expect(page.locator(".answer")).to_contain_text("Cancel: ")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(page.locator(".timeline")).to_contain_text("cancelled")
    console.shot("cancelled")


def test_retry_a_quarantined_job(console: Console, server: Server) -> None:
    job_id = server.create(ALICE, {"mode": "flaky"})
    console.open_job(job_id, ALICE)
    page = console.page
    console.status_is("quarantined")
    expect(page.locator(".job-error")).to_contain_text("the disk was full")
    failed = page.get_by_role("table").first.get_by_role("row").nth(1)
    expect(failed).to_contain_text("failure — ")
    expect(failed).to_contain_text("the disk was full")
    console.shot("quarantined")

    page.get_by_role("button", name="Retry job").click()

    expect(page.locator(".answer")).to_contain_text("Retry: job is now")
    console.status_is("waiting_for_human")
    assert server.worked.attempts[job_id] == 2
    tasks = page.get_by_role("table").first
    expect(tasks.get_by_role("row")).to_have_count(3)  # heading, two attempts
    expect(page.locator(".timeline")).to_contain_text("retry")
    console.shot("retried")


def test_another_client_sees_none_of_them(console: Console, server: Server) -> None:
    held = server.create(ALICE, {"mode": "hold"})
    task_id = server.picked_up_task(ALICE, held)
    page = console.page
    page.goto(f"{console.base}/")
    page.get_by_label("Client token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token was refused.")
    console.login(BOB)

    expect(page.get_by_text("No jobs match.")).to_be_visible()
    console.open_job(held)
    expect(page.get_by_role("alert")).to_contain_text("not found")
    page.get_by_role("link", name="Workers").click()
    workers = page.get_by_role("table", name="Workers connected to this orchestrator")
    expect(workers).to_contain_text("grpc-sdk-1")
    # The worker holds Alice's task; Bob is not told its id.
    expect(workers.get_by_role("row").filter(has_text="grpc-sdk-1")).to_contain_text("busy")
    assert task_id not in page.content()
    console.shot("bob")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Client token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_the_workers_page_shows_grpc_and_rest_workers_and_orphan_skills(
    console: Console, server: Server
) -> None:
    server.rest_worker("rest-worker-1", ["resize"])
    server.create(ALICE, {}, blueprint="orphan")
    console.login(ALICE)
    page = console.page
    page.get_by_role("link", name="Workers").click()

    workers = page.get_by_role("table", name="Workers connected to this orchestrator")
    grpc_row = workers.get_by_role("row").filter(has_text="grpc-sdk-1")
    rest_row = workers.get_by_role("row").filter(has_text="rest-worker-1")
    expect(grpc_row).to_contain_text("grpc")
    expect(grpc_row).to_contain_text("console_work")
    expect(rest_row).to_contain_text("rest")
    expect(rest_row).to_contain_text("resize")
    expect(rest_row).to_contain_text("aiohttp")  # its agent: what its User-Agent said
    warning = page.locator('.warning[data-skill="gpu_render"]')
    expect(warning).to_contain_text("No worker has gpu_render")
    queue = page.get_by_role("row").filter(has_text="gpu_render")
    expect(queue).to_contain_text(" ago)")  # since the oldest task was queued
    console.shot("workers")


def test_hostile_data_is_shown_as_text_and_runs_nothing(console: Console, server: Server) -> None:
    initial = {
        "note": '<img src=x onerror="window.__pwned=4">',
        "script": "<script>window.__pwned=5</script>",
    }
    job_id = server.create(ALICE, initial, blueprint="hostile")
    console.open_job(job_id, ALICE)
    page = console.page
    console.status_is("finished")

    data = page.locator(".data")
    for text in ('window.__pwned=1', "<script>window.__pwned=2</script>", "window.__pwned=4",
                 "<script>window.__pwned=5</script>"):  # fmt: skip
        expect(data).to_contain_text(text)
    expect(page.locator(".summary")).to_contain_text(HOSTILE_STATE)
    drawn = page.locator("figure.graph svg g.state.current")
    assert drawn.get_attribute("data-state") == HOSTILE_STATE
    page.get_by_role("link", name="All jobs").click()
    expect(page.get_by_role("table")).to_contain_text(HOSTILE_STATE)
    console.shot("hostile")

    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert page.locator("main script").count() == 0


def test_the_console_fits_a_phone(console: Console, server: Server) -> None:
    job_id = server.create(ALICE, {"mode": "quick"})
    page = console.page
    page.set_viewport_size({"width": 390, "height": 844})
    console.login(ALICE)
    expect(page.get_by_role("link", name=job_id)).to_be_visible()
    console.shot("phone-jobs")
    # Rows are cards: no page wider than the phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.get_by_role("link", name=job_id).focus()
    page.keyboard.press("Enter")
    console.status_is("waiting_for_human")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    console.shot("phone-job")


def test_the_page_is_served_at_the_root_and_under_console_with_a_strict_policy(
    server: Server,
) -> None:
    # Requests from the server's loop: this module's browser keeps an event
    # loop of Playwright's running in the test's thread.
    async def get(path: str) -> tuple[int, str, str, str]:
        async with aiohttp.ClientSession(server.base) as http, http.get(path) as response:
            policy = response.headers.get("Content-Security-Policy", "")
            return response.status, response.content_type, policy, await response.text()

    for path in ("/", "/console"):
        status, content_type, policy, page = server.run(get(path))
        assert status == 200
        assert content_type == "text/html"
        assert "default-src 'none'" in policy
        assert "script-src 'self';" in policy
        assert "unsafe-inline" not in policy
        # No inline script or style, nothing from elsewhere.
        assert not re.search(r"<script(?![^>]*\ssrc=)|<style|\sstyle=|https?://", page)
    status, content_type, _, _ = server.run(get("/console/app.js"))
    assert (status, content_type) == (200, "text/javascript")
    status, content_type, _, body = server.run(get("/console/nope.js"))
    assert (status, content_type) == (404, "application/json")
    assert "nope.js" in body


def test_filter_page_and_count_the_jobs(console: Console, server: Server) -> None:
    created = {server.create(ALICE, {}, blueprint="orphan") for _ in range(3)}
    console.login(ALICE)
    page = console.page
    page.get_by_label("Blueprint").fill("orphan")
    page.get_by_label("Status", exact=True).select_option("waiting_for_worker")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"blueprint=orphan&?"))
    rows = page.get_by_role("table").locator("tbody tr")
    expect(rows.first).to_contain_text("waiting for worker")
    # Only what the filters admit.
    expect(rows.filter(has_not_text="orphan")).to_have_count(0)
    expect(rows.filter(has_not_text="waiting for worker")).to_have_count(0)
    listed = set(rows.locator("a").all_inner_texts())
    assert created <= listed

    page.goto(f"{console.base}/console#/jobs?blueprint=orphan&size=2")
    expect(rows).to_have_count(2)
    first = set(rows.locator("a").all_inner_texts())
    page.get_by_role("button", name="Next page").click()
    expect(page.get_by_text("Page 2")).to_be_visible()
    second = set(rows.locator("a").all_inner_texts())
    assert second
    assert not first & second
    page.get_by_role("button", name="Previous page").click()
    expect(page.get_by_text("Page 1")).to_be_visible()
    # The counts are of all the caller's jobs, whatever the filters.
    count = page.locator('.count[data-status="waiting_for_worker"] .count-n')
    count.wait_for()
    assert int(count.inner_text()) >= len(created)
    console.shot("filtered")
