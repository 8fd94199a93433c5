"""What the wheel installs, and what each install can do.

``pip install avtomatika`` is the worker SDK and the contract (``avtomatika.v1``,
``avtomatika.payload``, ``avtomatika.batches`` and the other shared
standard-library modules); ``pip install
'avtomatika[server]'`` adds the orchestrator's dependencies. The wheel is built
once per session and installed into throwaway virtualenvs, one with the server
extra and one without, from a directory of wheels fetched once (offline
thereafter); the venvs never see this source tree nor this environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import venv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import redis.asyncio

import avtomatika
from avtomatika import (
    ActionFactory,
    Config,
    JobContext,
    MemoryStorage,
    OrchestratorEngine,
    Settings,
    StateMachineBlueprint,
)
from tests.support import CLIENT_TOKEN, WORKER_TOKEN, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.serve import serve_env, served

F = TypeVar("F", bound=Callable[..., Any])

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "blueprints"

# Building the wheel, fetching its dependencies and installing it into a venv
# happen in the first test that needs them, within its timeout.
WHEEL_TIMEOUT = 240

# The import names of the server extra's packages: none may be importable in a
# worker-only install, nor loaded by the SDK anywhere.
SERVER_MODULES = (
    "aiohttp",
    "prometheus_client",
    "aiosqlite",
    "asyncpg",
    "aioboto3",
    "aiobotocore",
    "botocore",
    "redis",
    "hiredis",
    "jsonschema",
)


def wheel_test(test: F) -> F:
    """Marks a test that uses the built wheel: slow, with a longer timeout."""
    marked: F = pytest.mark.slow(pytest.mark.timeout(WHEEL_TIMEOUT)(test))
    return marked


def _run(
    command: Sequence[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command``, failing the test with its output if it fails."""
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _isolated_env(**extra: str) -> dict[str, str]:
    """This process' environment minus anything that would let a throwaway
    venv import this source tree instead of what it installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Wheelhouse:
    """The built wheel and, beside it, every wheel it depends on."""

    directory: Path
    wheel: Path


@dataclass(frozen=True)
class Installed:
    """A throwaway virtualenv with the wheel installed."""

    root: Path
    python: Path
    purelib: Path

    @property
    def command(self) -> Path:
        """Its ``avtomatika`` console script."""
        return self.root / "bin" / "avtomatika"


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    """Build the wheel; fetch its dependencies (server extra included) once,
    at the versions this environment runs, so both venvs install offline."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    # Built from a copy of what the build reads: setuptools reuses a build/
    # folder it finds, whose stale files would hide a package the build left
    # out.
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("avtomatika", "generated"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation"]
    _run([*build, "--outdir", directory, source])
    (wheel,) = directory.glob("avtomatika-*.whl")
    constraints = directory / "constraints.txt"
    frozen = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"])
    constraints.write_text(frozen.stdout)
    fetched = subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(directory),
            "--constraint", str(constraints), f"avtomatika[server] @ {wheel.as_uri()}",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if fetched.returncode != 0:
        message = f"could not fetch the wheel's dependencies:\n{fetched.stderr[-2000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}\nCI=true requires them")
        pytest.skip(message)
    return Wheelhouse(directory, wheel)


def _install(wheelhouse: Wheelhouse, where: Path, requirement: str) -> Installed:
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    python = where / "bin" / "python"
    # This environment's pip installs into the venv (--python), so the venv
    # needs no pip of its own; --no-index: only the wheelhouse, never the net.
    _run([
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
        "--no-index", "--find-links", wheelhouse.directory, requirement,
    ])  # fmt: skip
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    return Installed(where, python, Path(purelib))


@pytest.fixture(scope="session")
def server_install(wheelhouse: Wheelhouse, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """``pip install 'avtomatika[server]'`` in a fresh venv."""
    return _install(wheelhouse, tmp_path_factory.mktemp("server-venv"), "avtomatika[server]")


@pytest.fixture(scope="session")
def worker_install(wheelhouse: Wheelhouse, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """``pip install avtomatika`` (no extra) in a fresh venv."""
    return _install(wheelhouse, tmp_path_factory.mktemp("worker-venv"), "avtomatika")


def _source_modules() -> set[str]:
    """Every module of the source tree, by its installed name."""
    names: set[str] = set()
    trees = (
        (ROOT / "avtomatika", "avtomatika"),
        (ROOT / "generated/avtomatika/v1", "avtomatika.v1"),
    )
    for top, package in trees:
        for path in top.rglob("*.py"):
            parts = path.relative_to(top).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join((package, *parts)))
    return names


# -- the server install -----------------------------------------------------


@wheel_test
def test_the_wheel_carries_the_generated_package_inside_avtomatika(
    server_install: Installed, tmp_path: Path
) -> None:
    probe = (
        "import avtomatika, avtomatika.v1.job_pb2 as j\n"
        "from avtomatika import StateMachineBlueprint\n"
        "from avtomatika.v1 import worker_service_pb2_grpc\n"
        "print(avtomatika.__file__); print(j.__file__)\n"
    )
    result = _run([server_install.python, "-c", probe], cwd=tmp_path, env=_isolated_env())
    package_file, generated_file = result.stdout.split()
    assert package_file.startswith(str(server_install.purelib))
    assert generated_file.startswith(str(server_install.purelib))
    assert Path(generated_file).parent == Path(package_file).parent / "v1"


@wheel_test
def test_every_module_of_the_source_tree_is_installed_and_imports(
    server_install: Installed, tmp_path: Path
) -> None:
    # walk_packages descends by importing each package; onerror makes a
    # package that fails to import fail here instead of being skipped.
    probe = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import avtomatika

        def fail(name):
            raise sys.exc_info()[1] or ImportError(name)

        found = {}
        for info in pkgutil.walk_packages(avtomatika.__path__, "avtomatika.", onerror=fail):
            if info.name.endswith(".__main__"):
                found[info.name] = None  # importing it would run the command
                continue
            found[info.name] = importlib.import_module(info.name).__file__
        print(json.dumps(found))
        """
    )
    result = _run([server_install.python, "-c", probe], cwd=tmp_path, env=_isolated_env())
    found: dict[str, str | None] = json.loads(result.stdout)
    assert set(found) | {"avtomatika"} == _source_modules()
    assert all(f is None or f.startswith(str(server_install.purelib)) for f in found.values())


async def _serves(installed: Installed, **settings: str) -> None:
    """Run the installed ``avtomatika serve`` on ports the OS picks, check it
    answers and takes a job, and that it stops cleanly."""
    env = serve_env(**settings)
    env.pop("PYTHONPATH", None)
    command = [str(installed.command)]
    async with served("--blueprints-dir", str(EXAMPLES), env=env, command=command) as server:
        base = f"http://127.0.0.1:{server.rest_port}"
        async with aiohttp.ClientSession(base, headers={"X-Client-Token": CLIENT_TOKEN}) as http:
            response = await http.get("/_public/status")
            assert await response.json() == {"status": "ok"}
            # The docs page is package data: a wheel without it answers 500.
            assert (await http.get("/_public/docs")).status == 200
            # So are the console's files: a wheel without them answers 500 / 404.
            for path in ("/console", "/console/app.js", "/console/console.css"):
                assert (await http.get(path)).status == 200, path
            await create_job(http, "jobs/echo")
        output = await server.stop()
    assert server.process.returncode == 0, output
    assert "Traceback" not in output


@wheel_test
async def test_the_installed_command_serves_on_the_embedded_store(
    server_install: Installed,
) -> None:
    await _serves(server_install)


@wheel_test
async def test_the_installed_command_serves_on_redis(
    server_install: Installed, redis_url: str
) -> None:
    await _serves(server_install, REDIS_URL=redis_url)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.dbsize() > 0  # the job went to Redis
    finally:
        await client.aclose()


# -- the worker-only install ------------------------------------------------


@wheel_test
def test_a_worker_only_install_has_none_of_the_server_dependencies(
    worker_install: Installed, tmp_path: Path
) -> None:
    probe = textwrap.dedent(
        f"""
        import importlib.util
        print([m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m) is not None])
        import aiohttp
        """
    )
    result = subprocess.run(
        [str(worker_install.python), "-c", probe],
        capture_output=True, text=True, check=False, cwd=tmp_path, env=_isolated_env(),
    )  # fmt: skip
    assert result.stdout.strip() == "[]"
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'aiohttp'" in result.stderr


@wheel_test
def test_serve_without_the_server_extra_says_what_to_install(
    worker_install: Installed, tmp_path: Path
) -> None:
    env = serve_env()
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(worker_install.command), "serve"],
        capture_output=True, text=True, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "pip install 'avtomatika[server]'" in line


# The worker: echoes the job's id and says where its avtomatika came from.
WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import os
    import signal

    import avtomatika
    from avtomatika.worker import Worker


    async def main():
        worker = Worker(
            worker_id="wheel-worker",
            addresses=[os.environ["ORCHESTRATOR_GRPC"]],
            token=os.environ["WORKER_TOKEN"],
        )

        @worker.skill("echo")
        async def echo(params, task):
            return {"echoed": params["id"], "avtomatika": avtomatika.__file__}

        stopping = set()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(
            signal.SIGTERM,
            lambda: stopping.add(asyncio.ensure_future(worker.stop(grace_seconds=0))),
        )
        await worker.run()


    asyncio.run(main())
    """
)


@wheel_test
async def test_a_worker_only_install_runs_a_job_of_a_server(
    worker_install: Installed,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    tmp_path: Path,
) -> None:
    orchestrator: OrchestratorEngine = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    env = _isolated_env(
        ORCHESTRATOR_GRPC=f"127.0.0.1:{orchestrator.grpc_port}", WORKER_TOKEN=WORKER_TOKEN
    )
    worker = await asyncio.create_subprocess_exec(
        str(worker_install.python), str(script),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    exited = asyncio.create_task(worker.communicate())
    try:
        job_id = await create_job(http, "jobs/echo", {"id": 12345678901234567})
        finished = asyncio.create_task(wait_for_status(http, job_id, "finished"))
        # The job's end or the worker's, whichever comes first: a worker
        # that dies fails the test at once, with what it printed.
        await asyncio.wait({finished, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            finished.cancel()
            pytest.fail(f"the worker exited:\n{exited.result()[0].decode()}")
        job = finished.result()
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        output, _ = await exited
    assert worker.returncode == 0, output.decode()
    installed_package = str(worker_install.purelib / "avtomatika" / "__init__.py")
    assert job["state_history"] == {"echoed": 12345678901234567, "avtomatika": installed_package}


@wheel_test
async def test_a_worker_only_install_runs_the_client_commands(
    worker_install: Installed,
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    tmp_path: Path,
) -> None:
    orchestrator: OrchestratorEngine = await start_orchestrator([echo_blueprint()])
    job_id = await create_job(http_client(orchestrator), "jobs/echo", {"id": 7})
    env = _isolated_env(
        AVTOMATIKA_URL=f"http://127.0.0.1:{orchestrator.rest_port}", AVTOMATIKA_TOKEN=CLIENT_TOKEN
    )

    async def run(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(worker_install.command), *args,
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await run("jobs", "get", job_id, "--json")
    assert code == 0, err
    assert json.loads(out)["initial_data"] == {"id": 7}
    # Checking blueprints loads them as the server would: that needs the extra.
    code, out, err = await run("blueprints", "check", str(EXAMPLES))
    assert code == 1
    (line,) = err.splitlines()
    assert "pip install 'avtomatika[server]'" in line


# -- the SDK and the public names -------------------------------------------


@pytest.mark.slow
def test_the_sdk_loads_only_itself_and_the_contract(tmp_path: Path) -> None:
    probe = "import json, sys, avtomatika.worker; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(_run([sys.executable, "-c", probe], cwd=tmp_path).stdout))
    # Ours: the hand-written modules; the generated ones (avtomatika.v1) are
    # the contract, which the SDK is meant to load.
    ours = {
        m
        for m in loaded
        if m.split(".")[0] == "avtomatika" and m.split(".")[:2] != ["avtomatika", "v1"]
    }
    sdk = {
        m
        for m in _source_modules()
        if m == "avtomatika.worker" or m.startswith("avtomatika.worker.")
    }
    # Besides itself: the shared modules of the standard library alone (JSON
    # payloads, stream batches, the backoff, the worker-id rule, the errors),
    # and the channel's TLS files (grpc, shared with the client).
    shared = {"batches", "payload", "backoff", "ids", "errors", "channel_tls"}
    assert ours == {"avtomatika", *(f"avtomatika.{name}" for name in shared), *sdk}
    assert loaded.isdisjoint(SERVER_MODULES)


def test_the_public_names_import_from_the_package() -> None:
    assert StateMachineBlueprint.__module__ == "avtomatika.blueprint.state_machine"
    assert OrchestratorEngine is avtomatika.Orchestrator
    assert ActionFactory.__module__ == "avtomatika.blueprint.actions"
    assert JobContext.__module__ == "avtomatika.blueprint.context"
    assert MemoryStorage.__module__ == "avtomatika.storage.memory"
    assert Config.__module__ == Settings.__module__ == "avtomatika.config"
    assert avtomatika.__all__ == [
        "ActionFactory",
        "AsyncDictStore",
        "AvtomatikaError",
        "Blueprint",
        "ClientInfo",
        "Config",
        "JobContext",
        "MemoryStorage",
        "Orchestrator",
        "OrchestratorEngine",
        "Settings",
        "StateMachineBlueprint",
        "Storage",
        "TaskFiles",
    ]
    for name in avtomatika.__all__:
        assert getattr(avtomatika, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = avtomatika.NoSuchThing
    with pytest.raises(ImportError):
        from avtomatika import NoSuchThing  # noqa: F401


@pytest.mark.slow
def test_the_editable_install_imports_both_packages_from_anywhere(tmp_path: Path) -> None:
    probe = "import avtomatika.v1.job_pb2 as j, avtomatika; print(avtomatika.__file__, j.__file__)"
    result = _run([sys.executable, "-c", probe], cwd=tmp_path)
    package_file, generated_file = result.stdout.split()
    assert Path(package_file) == ROOT / "avtomatika" / "__init__.py"
    assert Path(generated_file) == ROOT / "generated" / "avtomatika" / "v1" / "job_pb2.py"


@pytest.mark.slow
def test_serve_says_what_to_install_when_the_server_is_missing(tmp_path: Path) -> None:
    # In-process stand-in for a worker-only install: aiohttp cannot be imported.
    probe = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "from avtomatika.cli import main; raise SystemExit(main(['serve']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr == (
        "avtomatika: the server is not installed (no module 'aiohttp'); "
        "install it with: pip install 'avtomatika[server]'\n"
    )
