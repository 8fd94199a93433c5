"""Blueprint files written for avtomatika 1.0b13, using only its documented
API, load from ``BLUEPRINTS_DIR`` and run unchanged: under
``avtomatika serve``, and embedded the 1.0b13 way
(``OrchestratorEngine(MemoryStorage(), Config())``, ``config.CLIENT_TOKEN``,
``register_blueprint``, ``start``/``stop``, ``create_background_job``).

The files below are the docs' examples as printed, except where the print
itself is broken (a stray parenthesis in the README's fan-out, the cookbook's
``from orchestrator.blueprint`` import); workers run over gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from avtomatika import (
    ActionFactory,
    Config,
    MemoryStorage,
    OrchestratorEngine,
    StateMachineBlueprint,
)
from avtomatika.errors import ConfigError
from avtomatika.status import TERMINAL, job_status_name
from avtomatika.worker import TaskContext, TaskOutcome
from tests.support import (
    CLIENT_TOKEN,
    RawWorker,
    custom,
    wait_for_status,
)
from tests.support.sdk import Params, serving
from tests.support.serve import serve_env, served
from tests.support.waiting import wait_until

# docs/cookbook/creating_blueprint.md, the whole blueprint.
ORDERS = '''
from avtomatika import StateMachineBlueprint

# Create blueprint instance
order_pipeline = StateMachineBlueprint(
    name="order_processing_flow",
    api_version="v1",
    api_endpoint="/jobs/process_order"  # URL for task creation
)


@order_pipeline.handler_for("start", is_start=True)
async def start_handler(context):
    """
    Initial handler. Called when Job is created.
    """
    print(f"Job {context.job_id}: order processing started.")
    print(f"Input data: {context.initial_data}")

    # Save something to history for next steps
    context.state_history["processed_by"] = "start_handler"

    # Transition to next step
    context.actions.transition_to("dispatch_to_worker")


@order_pipeline.handler_for("dispatch_to_worker")
async def dispatch_handler(context):
    """
    This handler dispatches task to worker.
    """
    print(f"Job {context.job_id}: dispatching 'check_inventory' task to worker.")

    # Pause pipeline and wait for worker result
    context.actions.dispatch_task(
        task_type="check_inventory",  # Task type worker understands
        params={"items": context.initial_data.get("items")},

        # Define where process goes depending on worker response
        transitions={
            "success": "inventory_ok",      # If worker returns status="success"
            "out_of_stock": "inventory_failed", # If worker returns custom status
            "failure": "generic_failure"    # If worker returns status="failure"
        }
    )

@order_pipeline.handler_for("inventory_ok")
async def inventory_ok_handler(context):
    """
    Called if worker confirmed item availability.
    """
    # Data returned by worker is available in state_history
    worker_data = context.state_history.get("warehouse_info")
    print(f"Job {context.job_id}: items in stock. Info from worker: {worker_data}")

    context.actions.transition_to("finished_successfully")


@order_pipeline.handler_for("inventory_failed", is_end=True)
async def inventory_failed_handler(context):
    """
    Final state if items out of stock.
    """
    print(f"Job {context.job_id}: cannot process order, items out of stock.")


@order_pipeline.handler_for("generic_failure", is_end=True)
async def failed_handler(context):
    """
    Final state for generic failures.
    """
    print(f"Job {context.job_id}: processing error occurred.")


@order_pipeline.handler_for("finished_successfully", is_end=True)
async def finished_handler(context):
    """
    Final state on success.
    """
    print(f"Job {context.job_id}: order processed successfully!")
'''

# README.md @1.0b13: the DI, .when(), dispatch_task and fan-out snippets,
# joined into two blueprints with the states the snippets leave out.
README = """
from avtomatika.blueprint.state_machine import StateMachineBlueprint
from avtomatika.blueprint.context import ActionFactory

my_blueprint = StateMachineBlueprint(
    name="media_flow",
    api_version="v1",
    api_endpoint="/jobs/media"
)

@my_blueprint.handler_for("start", is_start=True)
async def start_handler(job_id: str, initial_data: dict, actions: ActionFactory):
    print(f"Job {job_id} | Start: {initial_data}")
    actions.transition_to("decision_step")

# The `.when()` condition still refers to `context`.
@my_blueprint.handler_for("decision_step").when("context.initial_data.type == 'urgent'")
async def handle_urgent(actions):
    actions.transition_to("urgent_processing")

# The default handler if no `.when()` condition matches.
@my_blueprint.handler_for("decision_step")
async def handle_normal(actions):
    actions.transition_to("transcode_video")

@my_blueprint.handler_for("transcode_video")
async def transcode_handler(initial_data, actions):
    actions.dispatch_task(
        task_type="video_transcoding",
        params={"input_path": initial_data.get("path")},
        # Define the next step based on the worker's response status
        transitions={
            "success": "publish_video",
            "failure": "transcoding_failed",
            "needs_review": "manual_review" # Example of a custom status
        }
    )

@my_blueprint.handler_for("publish_video")
async def publish_handler(
    job_id: str,
    output_path: str, # Injected from state_history
    duration: int,    # Injected from state_history
    actions: ActionFactory
):
    print(f"Job {job_id}: Publishing video at {output_path} ({duration}s).")
    actions.transition_to("complete")

@my_blueprint.handler_for("urgent_processing", is_end=True)
async def urgent_processing(context):
    print(f"Job {context.job_id} | Urgent.")

@my_blueprint.handler_for("complete", is_end=True)
async def complete(context):
    print(f"Job {context.job_id} | Complete.")

@my_blueprint.handler_for("transcoding_failed", is_end=True)
async def transcoding_failed(context):
    print(f"Job {context.job_id} | Transcoding failed.")

@my_blueprint.handler_for("manual_review", is_end=True)
async def manual_review(context):
    print(f"Job {context.job_id} | Needs review.")


files_blueprint = StateMachineBlueprint(
    name="files_flow",
    api_version="v1",
    api_endpoint="/jobs/files"
)

# 1. Fan-out: Dispatch multiple tasks to be aggregated into a single state
@files_blueprint.handler_for("process_files", is_start=True)
async def fan_out_handler(initial_data, actions):
    tasks_to_dispatch = [
        {"task_type": "file_analysis", "params": {"file": file}}
        for file in initial_data.get("files", [])
    ]
    # Use dispatch_parallel to send all tasks at once.
    # All successful tasks will implicitly lead to the 'aggregate_into' state.
    actions.dispatch_parallel(
        tasks=tasks_to_dispatch,
        aggregate_into="aggregate_results"
    )

# 2. Fan-in: Collect results using the @aggregator_for decorator
@files_blueprint.aggregator_for("aggregate_results")
async def aggregator_handler(aggregation_results, state_history, actions):
    # This handler will only execute AFTER ALL tasks
    # dispatched by dispatch_parallel are complete.

    # aggregation_results is a dictionary of {task_id: result_dict}
    summary = [res.get("data") for res in aggregation_results.values()]
    state_history["summary"] = summary
    actions.transition_to("processing_complete")

@files_blueprint.handler_for("processing_complete", is_end=True)
async def processing_complete(context):
    print(f"Job {context.job_id} | Files done.")
"""

# docs/cookbook/README.md, recipes 9 and 14 as printed.
COOKBOOK = """
from avtomatika import StateMachineBlueprint

analytics_bp = StateMachineBlueprint(
    name="analytics_flow",
    api_version="v1",
    api_endpoint="jobs/analytics"
)
analytics_bp.add_data_store("request_counter", {"total_requests": 0})


@analytics_bp.handler_for("start", is_start=True)
async def count_request(context, actions):
    current_count = await context.data_stores.request_counter.get("total_requests")
    new_count = current_count + 1
    await context.data_stores.request_counter.set("total_requests", new_count)
    context.state_history["request_number"] = new_count
    actions.transition_to("finished")

@analytics_bp.handler_for("finished", is_end=True)
async def show_result(context, actions):
    request_num = context.state_history.get("request_number")
    print(f"Job {context.job_id} processed. Request number {request_num}.")


text_processing_bp = StateMachineBlueprint(name="text_processor")

@text_processing_bp.handler_for("start", is_start=True)
async def process(context, actions):
    text = context.initial_data.get("text", "")
    if not text:
        actions.transition_to("failed")
    else:
        context.state_history["processed_text"] = text.upper()
        actions.transition_to("finished")

@text_processing_bp.handler_for("finished", is_end=True)
async def text_processing_finished(context, actions):
    pass

@text_processing_bp.handler_for("failed", is_end=True)
async def text_processing_failed(context, actions):
    pass


main_pipeline = StateMachineBlueprint(
    name="main_flow",
    api_version="v1",
    api_endpoint="jobs/main_flow"
)

@main_pipeline.handler_for("start", is_start=True)
async def parent_start(context, actions):
    actions.transition_to("process_user_text")

@main_pipeline.handler_for("process_user_text")
async def main_handler(context, actions):
    user_text = context.initial_data.get("raw_text", "")
    actions.run_blueprint(
        blueprint_name="text_processor",
        initial_data={"text": user_text},
        transitions={"success": "final_step", "failure": "sub_job_failed"}
    )

@main_pipeline.handler_for("final_step")
async def final_step_handler(context, actions):
    sub_job_result = None
    for key, value in context.state_history.items():
        if key.startswith("sub_job_") and "outcome" in value:
            sub_job_result = value
            break

    if sub_job_result:
        print(f"Sub-blueprint finished with outcome: {sub_job_result['outcome']}")
    else:
        print("Sub-blueprint result not found in state history.")

    actions.transition_to("finished")

@main_pipeline.handler_for("sub_job_failed")
async def sub_job_failed_handler(context, actions):
    print("Sub-blueprint failed, handling failure in parent.")
    actions.transition_to("failed")

@main_pipeline.handler_for("finished", is_end=True)
async def main_finished(context, actions):
    pass

@main_pipeline.handler_for("failed", is_end=True)
async def main_failed(context, actions):
    pass
"""


@pytest.fixture
def blueprints_dir(tmp_path: Path) -> Path:
    """A BLUEPRINTS_DIR holding the three files (and a stray non-Python file)."""
    directory = tmp_path / "blueprints"
    directory.mkdir()
    (directory / "orders.py").write_text(ORDERS)
    (directory / "readme_examples.py").write_text(README)
    (directory / "cookbook.py").write_text(COOKBOOK)
    (directory / "notes.txt").write_text("not a blueprint")
    return directory


def quick_start(config: Config) -> OrchestratorEngine:
    """README "Quick Start" as printed, plus the settings a test needs (local
    addresses, ports chosen by the OS, the blueprint directory)."""
    # 1. General Configuration
    storage = MemoryStorage()
    config.CLIENT_TOKEN = "my-secret-client-token"
    config.GLOBAL_WORKER_TOKEN = "my-secret-worker-token"

    # 2. Define the Workflow Blueprint
    my_blueprint = StateMachineBlueprint(
        name="my_first_blueprint", api_version="v1", api_endpoint="/jobs/my_flow"
    )

    @my_blueprint.handler_for("start", is_start=True)
    async def start_handler(
        job_id: str, initial_data: dict[str, Any], actions: ActionFactory
    ) -> None:
        actions.transition_to("end")

    @my_blueprint.handler_for("end", is_end=True)
    async def end_handler(context: Any) -> None:
        context.state_history["completed"] = context.job_id

    # 3. Initialize the Orchestrator Engine
    engine = OrchestratorEngine(storage, config)
    engine.register_blueprint(my_blueprint)
    return engine


@asynccontextmanager
async def embedded(blueprints_dir: Path) -> AsyncIterator[OrchestratorEngine]:
    config = Config()  # Loads configuration from environment variables
    config.API_HOST = "127.0.0.1"
    config.API_PORT = "0"  # 1.0b13 configuration values may be strings
    config.GRPC_HOST = "127.0.0.1"
    config.GRPC_PORT = 0
    config.BLUEPRINTS_DIR = str(blueprints_dir)
    config.JOB_MAX_RETRIES = 0
    engine = quick_start(config)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


TERMINAL_NAMES = {job_status_name(status) for status in TERMINAL}


async def wait_in_process(engine: OrchestratorEngine, job_id: str) -> dict[str, Any]:
    """Poll a job from inside the process (the public embedding API) until it ends."""

    async def ended() -> dict[str, Any] | None:
        job = await engine.get_job(job_id)
        return job if job["status"] in TERMINAL_NAMES else None

    return await wait_until(ended)


async def test_the_1_0b13_embedding_api_runs_the_quick_start_and_the_directory(
    blueprints_dir: Path,
) -> None:
    async with embedded(blueprints_dir) as engine:
        assert set(engine.blueprints) == {
            "my_first_blueprint",
            "order_processing_flow",
            "media_flow",
            "files_flow",
            "analytics_flow",
            "text_processor",
            "main_flow",
        }
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{engine.rest_port}",
            headers={"X-Client-Token": "my-secret-client-token"},
        ) as http:
            response = await http.post("/api/v1/jobs/my_flow", json={"initial_data": {"n": 1}})
            assert response.status == 202
            job_id = (await response.json())["job_id"]
            # The quick start's end state is "end": 1.0b13 fails the job there.
            job = await wait_for_status(http, job_id, "failed")
            assert (job["current_state"], job["state_history"]) == ("end", {"completed": job_id})
            assert job["error"] is None

        # A background job: no client, no token.
        job_id = await engine.create_background_job("main_flow", {"raw_text": "abc"})
        background = await wait_in_process(engine, job_id)
        assert (background["status"], background["current_state"]) == ("finished", "finished")
        [child_id] = background["child_job_ids"]
        child = await engine.get_job(child_id)
        assert child["parent_job_id"] == job_id
        assert child["status"] == "finished"


@pytest.mark.parametrize(
    ("initial_data", "outcome", "state", "history"),
    [
        ({"type": "urgent"}, None, "urgent_processing", {}),
        (
            {"path": "/raw/1.mov"},
            {"output_path": "/videos/1.mp4", "duration": 95},
            "complete",
            {"output_path": "/videos/1.mp4", "duration": 95},
        ),
        ({"path": "/raw/2.mov"}, TaskOutcome("needs_review"), "manual_review", {}),
    ],
    ids=["urgent", "transcoded", "needs-review"],
)
async def test_the_readme_blueprint_runs_unchanged(
    blueprints_dir: Path,
    initial_data: Params,
    outcome: Params | TaskOutcome | None,
    state: str,
    history: Params,
) -> None:
    async def video_transcoding(params: Params, task: TaskContext) -> Params | TaskOutcome:
        assert params == {"input_path": initial_data["path"]}
        assert outcome is not None
        return outcome

    async with (
        embedded(blueprints_dir) as engine,
        serving(engine, {"video_transcoding": video_transcoding}, token="my-secret-worker-token"),
        aiohttp.ClientSession(
            f"http://127.0.0.1:{engine.rest_port}",
            headers={"X-Client-Token": "my-secret-client-token"},
        ) as http,
    ):
        response = await http.post("/api/v1/jobs/media", json={"initial_data": initial_data})
        job_id = (await response.json())["job_id"]
        # None of the README's end states is named "finished": each fails the
        # job, as in 1.0b13.
        job = await wait_for_status(http, job_id, "failed")

    assert job["current_state"] == state
    assert job["state_history"] == history


async def test_the_readme_fan_out_and_the_cookbook_counter_run_unchanged(
    blueprints_dir: Path,
) -> None:
    async def file_analysis(params: Params, task: TaskContext) -> Params:
        return {"lines": len(params["file"])}

    async with (
        embedded(blueprints_dir) as engine,
        serving(
            engine,
            {"file_analysis": file_analysis},
            token="my-secret-worker-token",
            max_concurrency=3,
        ),
        aiohttp.ClientSession(
            f"http://127.0.0.1:{engine.rest_port}",
            headers={"X-Client-Token": "my-secret-client-token"},
        ) as http,
    ):
        response = await http.post(
            "/api/v1/jobs/files", json={"initial_data": {"files": ["a", "bb", "ccc"]}}
        )
        job_id = (await response.json())["job_id"]
        # Its end state is "processing_complete": failed, as in 1.0b13.
        job = await wait_for_status(http, job_id, "failed")
        assert sorted(d["lines"] for d in job["state_history"]["summary"]) == [1, 2, 3]

        counts = []
        for _ in range(2):
            # The legacy body: no "initial_data" key, the body is the data.
            response = await http.post("/api/v1/jobs/analytics", json={"source": "test"})
            job_id = (await response.json())["job_id"]
            job = await wait_for_status(http, job_id, "finished")
            counts.append(job["state_history"]["request_number"])
        assert counts == [1, 2]


@asynccontextmanager
async def serving_dir(blueprints_dir: Path) -> AsyncIterator[tuple[int, int]]:
    """``avtomatika serve`` with ``BLUEPRINTS_DIR``; its REST and gRPC ports."""
    env = serve_env(BLUEPRINTS_DIR=str(blueprints_dir))
    async with served(env=env) as server:
        yield server.rest_port, server.grpc_port
        output = await server.stop()
    assert server.process.returncode == 0, output


@pytest.mark.slow
async def test_the_cookbook_order_flow_runs_under_avtomatika_serve(blueprints_dir: Path) -> None:
    async with (
        serving_dir(blueprints_dir) as (rest_port, grpc_port),
        aiohttp.ClientSession(
            f"http://127.0.0.1:{rest_port}", headers={"X-Client-Token": CLIENT_TOKEN}
        ) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
    ):
        worker = RawWorker(channel, "warehouse")
        await worker.hello(["check_inventory"])
        job_ids = []
        for items in (["apple"], ["unobtainium"]):
            response = await http.post("/api/v1/jobs/process_order", json={"items": items})
            assert response.status == 202
            job_ids.append((await response.json())["job_id"])

            task = await worker.next_task()
            assert RawWorker.params(task) == {"items": items}
            if items == ["apple"]:
                await worker.succeed(task, {"warehouse_info": {"shelf": "A3"}})
            else:
                await worker.report(custom(task, "out_of_stock"))
            await worker.credit()

        # The recipe's end states are "finished_successfully" and
        # "inventory_failed": 1.0b13 fails the job in both.
        in_stock = await wait_for_status(http, job_ids[0], "failed")
        out_of_stock = await wait_for_status(http, job_ids[1], "failed")
        await worker.close()

    assert in_stock["current_state"] == "finished_successfully"
    assert in_stock["state_history"] == {
        "processed_by": "start_handler",
        "warehouse_info": {"shelf": "A3"},
    }
    assert out_of_stock["current_state"] == "inventory_failed"
    assert out_of_stock["state_history"] == {"processed_by": "start_handler"}


async def test_invalid_blueprints_raise_value_error_as_documented() -> None:
    """1.0b13 documents ``ValueError`` for a broken blueprint; code that
    catches it keeps working."""
    bp = StateMachineBlueprint("broken", api_endpoint="/jobs/broken", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(actions: ActionFactory) -> None:
        actions.transition_to("start")

    with pytest.raises(ValueError, match="already has a default handler"):

        @bp.handler_for("start")
        async def again(actions: ActionFactory) -> None:
            actions.transition_to("start")

    with pytest.raises(ValueError, match="context"):
        bp.handler_for("route").when("initial_data.type == 'x'")

    headless = StateMachineBlueprint("headless", api_endpoint="/jobs/headless", api_version="v1")

    @headless.handler_for("end", is_end=True)
    async def end() -> None:
        return None

    engine = OrchestratorEngine(MemoryStorage(), Config())
    with pytest.raises(ValueError, match="start state"):
        engine.register_blueprint(headless)


def test_config_values_may_be_strings_as_1_0b13_code_assigns_them() -> None:
    config = Config()
    config.BLUEPRINTS_DIR = ""  # the 1.0b13 default: no directory
    config.JOB_MAX_RETRIES = "5"
    config.API_PORT = "0"

    settings = config.to_settings()

    assert (settings.blueprints_dir, settings.job_max_retries, settings.api_port) == (None, 5, 0)
    config.API_PORT = "eighty"
    with pytest.raises(ConfigError, match="API_PORT"):
        config.to_settings()


def test_config_settings_of_1_0b13_this_version_does_not_use_are_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = Config()
    config.REDIS_HOST = "redis.internal"  # 1.0b13 embedding code sets these
    config.WATCHER_INTERVAL_SECONDS = 20
    config.EXECUTOR_MAX_CONCURRENT_JOBS = 7  # same meaning, another name here

    settings = config.to_settings()

    assert settings.executor_concurrency == 7
    assert config.REDIS_HOST == "redis.internal"
    assert "REDIS_HOST has no effect" in caplog.text
    with pytest.raises(AttributeError, match="CLIENT_TOKN"):
        config.CLIENT_TOKN = "a typo is never ignored"
