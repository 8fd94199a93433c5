"""clients.toml: validation at start-up, authentication of its clients next to
the CLIENT_TOKEN default client, what handlers learn about them, and job
ownership between two clients over real HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from avtomatika import ActionFactory, JobContext, OrchestratorEngine, StateMachineBlueprint
from avtomatika.access.authenticator import Authenticator
from avtomatika.access.clients import load_clients
from avtomatika.config import Settings
from avtomatika.errors import ConfigError
from tests.support import CLIENT_TOKEN, create_job, get_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator

ACME = "acme-token-0123456789"
GLOBEX = "globex-token-9876543210"

TWO_CLIENTS = f"""
[acme]
token = "{ACME}"
plan = "premium"
monthly_attempts = 1000
params = {{ languages = ["en", "fr"], priority = 3 }}

[globex]
token = "{GLOBEX}"
"""


def clients_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clients.toml"
    path.write_text(text)
    return path


def test_a_valid_file_defines_each_client_by_its_table_name(tmp_path: Path) -> None:
    acme, globex = load_clients(clients_file(tmp_path, TWO_CLIENTS))
    assert (acme.info.id, acme.info.plan, acme.monthly_attempts) == ("acme", "premium", 1000)
    assert acme.info.params == {"languages": ["en", "fr"], "priority": 3}
    assert (globex.info.id, globex.info.plan, globex.info.params) == ("globex", "", {})
    assert globex.monthly_attempts is None
    assert ACME not in repr(acme)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[acme]\ntoken = "a"\n[broken', "", "not valid TOML"),
        ('[acme]\nplan = "x"\n', "'token'", "missing"),
        ('[acme]\ntoken = ""\n', "'token'", "empty"),
        ("[acme]\ntoken = 42\n", "'token'", "must be a string"),
        ('[acme]\ntoken = " padded "\n', "'token'", "surrounding spaces"),
        ('[acme]\ntoken = "a"\nplan = 1\n', "'plan'", "must be a string"),
        ('[acme]\ntoken = "a"\nmonthly_attempts = "many"\n', "'monthly_attempts'", "integer"),
        ('[acme]\ntoken = "a"\nmonthly_attempts = true\n', "'monthly_attempts'", "integer"),
        ('[acme]\ntoken = "a"\nmonthly_attempts = 0\n', "'monthly_attempts'", "at least 1"),
        ('[acme]\ntoken = "a"\nparams = [1]\n', "'params'", "must be a table"),
        ('[acme]\ntoken = "a"\nmonthy_attempts = 5\n', "'monthy_attempts'", "did you mean"),
        ('[acme]\ntoken = "a"\n[globex]\ntoken = "a"\n', "'token'", "same as [acme]"),
        ('token = "a"\n', "'token'", "must be a table"),
        ('[default]\ntoken = "a"\n', "default", "reserved"),
    ],
)
def test_a_bad_file_names_the_file_the_key_and_the_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = clients_file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Authenticator(Settings(clients_config_path=path))
    message = caught.value.message
    assert str(path) in message
    assert key in message
    assert problem in message


def test_extra_top_level_keys_of_1_0b13_files_become_params(tmp_path: Path) -> None:
    # 1.0b13's docs put custom values beside the token; they keep working, and
    # an explicit [name.params] table wins on a clash.
    path = clients_file(
        tmp_path,
        '[acme]\ntoken = "a"\nlanguages = ["en", "fr"]\ntier = 1\n[acme.params]\ntier = 2\n',
    )
    client = Authenticator(Settings(clients_config_path=path)).client("a")
    assert client is not None
    assert client.params == {"languages": ["en", "fr"], "tier": 2}


def test_a_file_token_equal_to_client_token_is_refused(tmp_path: Path) -> None:
    path = clients_file(tmp_path, f'[acme]\ntoken = "{CLIENT_TOKEN}"\n')
    with pytest.raises(ConfigError, match=r"\[acme\]: key 'token' is the same as CLIENT_TOKEN"):
        Authenticator(Settings(clients_config_path=path, client_token=CLIENT_TOKEN))


async def test_serve_exits_2_with_the_message_for_a_bad_file(tmp_path: Path) -> None:
    path = clients_file(tmp_path, '[acme]\ntoken = "a"\nplan = 1\n')
    env = dict(os.environ, API_PORT="0", GRPC_PORT="0", CLIENTS_CONFIG_PATH=str(path))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "serve",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await process.communicate())[0].decode()
    assert process.returncode == 2
    assert f"{path}: [acme]: key 'plan' must be a string" in output
    assert "Traceback" not in output


def who_am_i() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("whoami", api_endpoint="jobs/whoami", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(context: JobContext, actions: ActionFactory) -> None:
        client = context.client
        context.state_history["client"] = [client.id, client.plan, client.params]
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done() -> None:
        return None

    return bp


@pytest.fixture
async def two_clients(start_orchestrator: StartOrchestrator, tmp_path: Path) -> OrchestratorEngine:
    path = clients_file(tmp_path, TWO_CLIENTS)
    return await start_orchestrator([who_am_i(), echo_blueprint()], clients_config_path=path)


async def test_handlers_see_the_client_id_plan_and_params_never_the_token(
    two_clients: OrchestratorEngine, http_client: HttpClient
) -> None:
    expected: dict[str, Any] = {
        ACME: ["acme", "premium", {"languages": ["en", "fr"], "priority": 3}],
        GLOBEX: ["globex", "", {}],
        CLIENT_TOKEN: ["default", "default", {}],  # CLIENT_TOKEN keeps working alongside
    }
    for token, client in expected.items():
        http = http_client(two_clients, token=token)
        job = await wait_for_status(http, await create_job(http, "jobs/whoami"), "finished")
        assert job["state_history"]["client"] == client
        assert token not in str(job)


async def test_the_original_header_x_avtomatika_token_is_accepted(
    two_clients: OrchestratorEngine, http_client: HttpClient
) -> None:
    http = http_client(two_clients, token=None)
    response = await http.get("/api/v1/workers", headers={"X-Avtomatika-Token": ACME})
    assert response.status == 200


@pytest.mark.parametrize("token", [None, "", "acme", ACME + "x", ACME[:-1]])
async def test_a_missing_or_wrong_token_is_401_json(
    two_clients: OrchestratorEngine, http_client: HttpClient, token: str | None
) -> None:
    response = await http_client(two_clients, token=token).get("/api/v1/workers")
    assert response.status == 401
    assert set(await response.json()) == {"error"}


async def test_another_clients_job_is_404_on_every_job_endpoint(
    two_clients: OrchestratorEngine, http_client: HttpClient
) -> None:
    acme, globex = http_client(two_clients, token=ACME), http_client(two_clients, token=GLOBEX)
    job_id = await create_job(acme, "jobs/echo")
    requests = [
        globex.get(f"/api/v1/jobs/{job_id}"),
        globex.get(f"/api/v1/jobs/{job_id}?wait=5"),
        globex.get(f"/api/v1/jobs/{job_id}/events"),
        globex.post(f"/api/v1/jobs/{job_id}/cancel"),
    ]
    for request in requests:
        response = await request
        assert response.status == 404
        assert response.content_type == "application/json"
        assert job_id in (await response.json())["error"]
    # Nothing globex did touched acme's job.
    assert (await get_job(acme, job_id))["status"] == "waiting_for_worker"
