"""Log lines written in batches (avtomatika/logs/batched.py) still arrive:
a line shows while the process runs, long before a batch could fill, and
the lines logged just before SIGTERM are all in the output."""

from __future__ import annotations

import asyncio
import re
import sys

import aiohttp

from tests.support import CLIENT_TOKEN
from tests.support.serve import serve_env, served

HEADERS = {"X-Client-Token": CLIENT_TOKEN}
_REST_PORT = re.compile(r"REST on [\d.]+:(\d+)")


async def test_a_line_shows_while_the_process_runs_without_filling_a_batch() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "serve",
        env=serve_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            assert line, "the orchestrator exited before serving"
            if match := _REST_PORT.search(line):
                port = int(match.group(1))
        async with (
            aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=HEADERS) as http,
            http.get("/api/v1/jobs/no-such-job", headers={"X-Request-ID": "batch-probe"}) as r,
        ):
            assert r.status == 404
        # One short access line, far from a full batch: it comes anyway,
        # while the process still serves.
        while "batch-probe" not in line:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "the orchestrator exited"
        assert "GET /api/v1/jobs/no-such-job 404" in line
        assert process.returncode is None
    finally:
        process.terminate()
        await process.wait()


async def test_lines_logged_just_before_sigterm_are_all_written() -> None:
    async with served(env=serve_env()) as server:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{server.rest_port}", headers=HEADERS
        ) as http:
            for n in range(20):
                async with http.get(
                    "/api/v1/jobs/no-such-job", headers={"X-Request-ID": f"last-{n}"}
                ) as r:
                    assert r.status == 404
        log = await server.stop()
    assert server.process.returncode == 0
    for n in range(20):
        assert f"request_id=last-{n}]" in log, log[-2000:]
