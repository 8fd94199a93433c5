"""``GET /_public/metrics``: Prometheus text, parsed with prometheus_client's
own parser, counting what really happened to jobs, tasks and workers."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from avtomatika import ActionFactory, StateMachineBlueprint
from avtomatika.engine.core import Engine
from avtomatika.engine.followers import JobFollowers
from avtomatika.errors import RateLimited
from avtomatika.monitoring.metrics import Metrics
from avtomatika.rest.metrics_api import METRICS, count_rate_limited_middleware, metrics
from avtomatika.rest.middleware import error_middleware
from avtomatika.rest.state import PUBLIC_API
from avtomatika.services.public_api import PublicApi
from tests.support import RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint, instant_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator
from tests.support.waiting import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession) -> Samples:
    """Every sample of ``GET /_public/metrics`` by (name, labels)."""
    response = await http.get("/_public/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_jobs_tasks_and_workers_are_counted(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, grpc_channel: GrpcChannel
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint(), _transcode_blueprint("stuck")])
    http = http_client(orchestrator)
    worker = RawWorker(grpc_channel(orchestrator), "w-metrics")
    await worker.hello(["echo"], credits=3)

    finished = [await create_job(http, "jobs/echo") for _ in range(2)]
    for task in [await worker.next_task() for _ in finished]:
        await worker.succeed(task, {"ok": True})
    for job_id in finished:
        await wait_for_status(http, job_id, "finished")
    # A third job's task is taken, then the job is cancelled: the worker's
    # late result is ignored with reason "cancelled".
    cancelled = await create_job(http, "jobs/echo")
    task = await worker.next_task()
    assert (await http.post(f"/api/v1/jobs/{cancelled}/cancel")).status == 200
    await worker.expect("cancel")
    assert not (await worker.succeed(task, {})).result_ack.accepted
    # No worker has the skill of this one: its task stays queued.
    stuck = await create_job(http, "jobs/stuck")
    await wait_for_status(http, stuck, "waiting_for_worker")

    samples = await scrape(http)

    assert value(samples, "avtomatika_jobs_created_total", blueprint="echo") == 3
    assert value(samples, "avtomatika_jobs_created_total", blueprint="stuck") == 1
    ended = "avtomatika_jobs_ended_total"
    assert value(samples, ended, blueprint="echo", status="finished") == 2
    assert value(samples, ended, blueprint="echo", status="cancelled") == 1
    assert value(samples, ended, blueprint="stuck", status="finished") == 0
    assert value(samples, "avtomatika_job_duration_seconds_count", blueprint="echo") == 3
    assert (
        value(samples, "avtomatika_job_duration_seconds_bucket", blueprint="echo", le="+Inf") == 3
    )
    latency = "avtomatika_task_dispatch_latency_seconds_count"
    assert value(samples, latency, skill="echo") == 3
    assert value(samples, "avtomatika_results_ignored_total", reason="cancelled") == 1
    assert value(samples, "avtomatika_queue_depth", skill="transcode") == 1
    connected = {
        labels: count
        for (name, labels), count in samples.items()
        if name == "avtomatika_workers_connected"
    }
    assert sum(connected.values()) == 1
    assert sum(c for labels, c in connected.items() if ("transport", "grpc") in labels) == 1
    assert value(samples, "avtomatika_workers_connected", transport="rest", status="idle") == 0
    assert value(samples, "avtomatika_history_events_dropped_total") == 0

    ids = {*finished, cancelled, task.task_id, "w-metrics"}
    assert not {v for _, labels in samples for _, v in labels} & ids, "an id leaked into a label"


async def test_webhook_deliveries_are_counted_by_outcome(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    async def accept(request: web.Request) -> web.Response:
        return web.json_response({})

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({}, status=400)  # not retried: fails at once

    receiver = web.Application()
    receiver.router.add_post("/ok", accept)
    receiver.router.add_post("/gone", refuse)
    server = TestServer(receiver, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        # The receiver is on loopback, which webhooks refuse unless allowed.
        orchestrator = await start_orchestrator([instant_blueprint()], webhook_allow_private=True)
        http = http_client(orchestrator)
        for path in ("/ok", "/ok", "/gone"):
            body = {"initial_data": {}, "webhook_url": str(server.make_url(path))}
            assert (await http.post("/api/v1/jobs/instant", json=body)).status == 202

        deliveries = "avtomatika_webhook_deliveries_total"

        async def all_three() -> Samples | None:
            samples = await scrape(http)
            return (
                samples if sum(v for (n, _), v in samples.items() if n == deliveries) >= 3 else None
            )

        samples = await wait_until(all_three)
    finally:
        await server.close()

    assert value(samples, deliveries, outcome="delivered") == 2
    assert value(samples, deliveries, outcome="failed") == 1


async def test_each_orchestrator_counts_in_its_own_registry(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    busy = await start_orchestrator([echo_blueprint()])
    quiet = await start_orchestrator([echo_blueprint()])
    await create_job(http_client(busy), "jobs/echo")

    assert value(await scrape(http_client(busy)), "avtomatika_jobs_created_total", blueprint="echo")
    assert not value(
        await scrape(http_client(quiet)), "avtomatika_jobs_created_total", blueprint="echo"
    )


async def test_openmetrics_is_served_when_asked_for(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator()
    response = await http_client(orchestrator).get(
        "/_public/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")


async def test_every_429_is_counted_by_route_template() -> None:
    async def limited(request: web.Request) -> web.Response:
        raise RateLimited("slow down", retry_after_seconds=1)

    app = web.Application(middlewares=[count_rate_limited_middleware, error_middleware])
    app.router.add_get("/api/v1/jobs/{job_id}", limited)
    app.router.add_get("/_public/metrics", metrics)
    engine = Engine()
    app[METRICS] = Metrics(engine)
    app[PUBLIC_API] = PublicApi(engine, JobFollowers(engine.events), app[METRICS])
    server = TestServer(app, host="127.0.0.1", port=0)
    async with server, aiohttp.ClientSession(str(server.make_url("/"))) as http:
        for job_id in ("a", "b"):
            response = await http.get(f"/api/v1/jobs/{job_id}")
            assert response.status == 429
            assert response.headers["Retry-After"] == "1"
        samples = await scrape(http)

    route = "/api/v1/jobs/{job_id}"
    assert value(samples, "avtomatika_rate_limited_requests_total", route=route) == 2


def _transcode_blueprint(name: str) -> StateMachineBlueprint:
    bp = StateMachineBlueprint(name, api_endpoint=f"/jobs/{name}", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.dispatch_task("transcode", params={}, transitions={"success": "done"})

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


async def test_rate_limited_requests_are_counted(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator(
        rate_limiting_enabled=True, rate_limit_limit=2, rate_limit_period=3600
    )
    http = http_client(orchestrator)
    statuses = [(await http.get("/api/v1/workers")).status for _ in range(5)]

    assert statuses == [200, 200, 429, 429, 429]
    samples = await scrape(http)
    route = "/api/v1/workers"
    assert value(samples, "avtomatika_rate_limited_requests_total", route=route) == 3
