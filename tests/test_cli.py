"""The ``avtomatika`` command as a real process: start-up, configuration
errors, and a clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support import CLIENT_TOKEN
from tests.support.net import free_port
from tests.support.serve import serve_env, served

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "blueprints"


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("API_PORT", "eighty"),
        ("GRPC_PORT", "70000"),
        ("LOG_LEVEL", "LOUD"),
        ("JOB_MAX_RETRIES", "-1"),
        ("STATUS_READ_HOLD_SECONDS", "-0.1"),
        ("STATUS_READ_HOLD_SECONDS", "inf"),
    ],
)
async def test_invalid_setting_stops_start_up_naming_it(variable: str, value: str) -> None:
    code, output = await _run("serve", env=serve_env(**{variable: value}))
    assert code == 2
    assert variable in output
    assert "Traceback" not in output


async def test_broken_blueprint_file_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('no good')\n")
    code, output = await _run("serve", "--blueprints-dir", str(tmp_path), env=serve_env())
    assert code == 2
    assert "broken.py" in output
    assert "no good" in output


async def test_an_unreachable_redis_stops_start_up_naming_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    code, output = await _run("serve", "--redis-url", url, env=serve_env())
    assert code == 2
    assert f"cannot reach Redis at REDIS_URL {url}" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serves_then_shuts_down_cleanly_on_signal(sig: signal.Signals) -> None:
    async with served("--blueprints-dir", str(EXAMPLES), env=serve_env()) as server:
        rest_port = server.rest_port
        async with aiohttp.ClientSession(headers={"X-Client-Token": CLIENT_TOKEN}) as http:
            response = await http.get(f"http://127.0.0.1:{rest_port}/_public/status")
            assert await response.json() == {"status": "ok"}
            response = await http.post(
                f"http://127.0.0.1:{rest_port}/api/v1/jobs/echo", json={"initial_data": {}}
            )
            assert response.status == 202
        output = await server.stop(sig)
        assert server.process.returncode == 0, output
        assert "Traceback" not in output
        assert "Task was destroyed" not in output
        assert "shutting down" in output
