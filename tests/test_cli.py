"""The ``avtomatika`` command as a real process: start-up, configuration
errors, and a clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support import CLIENT_TOKEN, WORKER_TOKEN

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "blueprints"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        API_HOST="127.0.0.1",
        API_PORT="0",
        GRPC_HOST="127.0.0.1",
        GRPC_PORT="0",
        CLIENT_TOKEN=CLIENT_TOKEN,
        GLOBAL_WORKER_TOKEN=WORKER_TOKEN,
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


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
    ],
)
async def test_invalid_setting_stops_start_up_naming_it(variable: str, value: str) -> None:
    code, output = await _run("serve", env=_env(**{variable: value}))
    assert code == 2
    assert variable in output
    assert "Traceback" not in output


async def test_broken_blueprint_file_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('no good')\n")
    code, output = await _run("serve", "--blueprints-dir", str(tmp_path), env=_env())
    assert code == 2
    assert "broken.py" in output
    assert "no good" in output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serves_then_shuts_down_cleanly_on_signal(sig: signal.Signals) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "serve", "--blueprints-dir", str(EXAMPLES),
        env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    while True:
        line = (await process.stdout.readline()).decode()
        assert line, "process exited before serving: " + "".join(lines)
        lines.append(line)
        match = re.search(r"REST on [\d.]+:(\d+), gRPC on [\d.]+:(\d+)", line)
        if match:
            rest_port = int(match.group(1))
            break
    async with aiohttp.ClientSession(headers={"X-Client-Token": CLIENT_TOKEN}) as http:
        response = await http.get(f"http://127.0.0.1:{rest_port}/_public/status")
        assert await response.json() == {"status": "ok"}
        response = await http.post(
            f"http://127.0.0.1:{rest_port}/api/v1/jobs/echo", json={"initial_data": {}}
        )
        assert response.status == 202
    process.send_signal(sig)
    rest, _ = await process.communicate()
    output = "".join(lines) + rest.decode()
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert "Task was destroyed" not in output
    assert "shutting down" in output
