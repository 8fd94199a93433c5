"""An upload far larger than memory should allow goes through the streaming
endpoint in constant memory: the orchestrator runs as its own process
(``python -m avtomatika serve``) so its resident memory can be read from
``/proc`` while a body of more than 100 MiB streams through it to S3.

This is a memory bound, not a timing assertion.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import CLIENT_TOKEN, create_job
from tests.support.s3 import S3Emulator, unique_bucket
from tests.support.serve import serve_env, served

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "blueprints"
MiB = 1024 * 1024
BODY_SIZE = 112 * MiB + 12345
GROWTH_LIMIT = 64 * MiB


async def _body(size: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    """``size`` bytes made on the fly, 1 MiB at a time, hashed as they go."""
    sent = 0
    while sent < size:
        n = min(MiB, size - sent)
        chunk = (sent // MiB % 251).to_bytes(1, "big") * n
        digest.update(chunk)
        yield chunk
        sent += n


def _memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident peak) of ``pid``, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def _reset_peak(pid: int) -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0), if allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextlib.asynccontextmanager
async def _orchestrator(s3: S3Emulator, bucket: str) -> AsyncIterator[tuple[int, int]]:
    """``(pid, rest_port)`` of ``python -m avtomatika serve`` using ``bucket``."""
    env = serve_env(
        S3_ENDPOINT_URL=s3.endpoint_url,
        S3_ACCESS_KEY=s3.access_key,
        S3_SECRET_KEY=s3.secret_key,
        S3_REGION=s3.region,
        S3_DEFAULT_BUCKET=bucket,
    )
    async with served("--blueprints-dir", str(EXAMPLES), env=env) as server:
        yield server.process.pid, server.rest_port
        output = await server.stop()
    assert "Traceback" not in output, output


async def test_a_100_mib_upload_streams_in_constant_memory(s3_emulator: S3Emulator) -> None:
    if sys.platform != "linux":
        pytest.skip("needs /proc (Linux) to read the server's memory")
    bucket = unique_bucket()
    async with (
        _orchestrator(s3_emulator, bucket) as (pid, port),
        aiohttp.ClientSession(
            f"http://127.0.0.1:{port}", headers={"X-Client-Token": CLIENT_TOKEN}
        ) as http,
    ):
        job_id = await create_job(http, "jobs/echo")
        url = f"/api/v1/jobs/{job_id}/files/content/big.bin"
        # Warm up: the first multipart upload loads code and fills pools
        # that then stay; they are not per-upload growth.
        warm = await http.put(url, data=_body(20 * MiB, hashlib.sha256()))
        assert warm.status == 200, await warm.text()

        baseline = _memory_kib(pid, "VmRSS")
        exact_peak = _reset_peak(pid)
        sent = hashlib.sha256()
        response = await http.put(url, data=_body(BODY_SIZE, sent))
        body = await response.json()
        peak = _memory_kib(pid, "VmHWM")

    assert response.status == 200, body
    assert body == {"status": "uploaded", "s3_uri": f"s3://{bucket}/jobs/{job_id}/big.bin"}
    growth = (peak - baseline) * 1024
    print(
        f"\nstreamed {BODY_SIZE / MiB:.1f} MiB: server RSS {baseline / 1024:.1f} MiB before, "
        f"peak {peak / 1024:.1f} MiB ({'exact' if exact_peak else 'since start'}), "
        f"growth {growth / MiB:.1f} MiB"
    )
    assert growth < GROWTH_LIMIT, f"server memory grew by {growth / MiB:.1f} MiB"

    async with s3_emulator.client() as s3:
        stored = await s3.get_object(Bucket=bucket, Key=f"jobs/{job_id}/big.bin")
        assert stored["ContentLength"] == BODY_SIZE
        received = hashlib.sha256()
        async with stored["Body"]:
            async for chunk in stored["Body"].iter_chunks(MiB):
                received.update(chunk)
    assert received.hexdigest() == sent.hexdigest()
