"""Job files over REST against a real S3 emulator (moto's server mode over
HTTP): presigned upload URLs, the streaming upload proxy, download redirects,
bad names, ownership, and 501 without S3."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl

from avtomatika import OrchestratorEngine
from avtomatika.errors import ConfigError
from tests.support import create_job
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.s3 import S3Emulator, keys_in, unique_bucket
from tests.support.waiting import wait_until

MiB = 1024 * 1024


async def _start(
    start_orchestrator: StartOrchestrator, s3_emulator: S3Emulator, **settings: Any
) -> tuple[OrchestratorEngine, str]:
    bucket = unique_bucket()
    orchestrator = await start_orchestrator(
        [echo_blueprint()], **s3_emulator.settings(bucket, **settings)
    )
    return orchestrator, bucket


async def _pattern(size: int, chunk: int = MiB) -> AsyncIterator[bytes]:
    """``size`` bytes of a recognisable pattern, produced chunk by chunk."""
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield (sent // chunk % 251).to_bytes(1, "big") * n
        sent += n


async def test_presigned_put_url_uploads_straight_to_s3(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    orchestrator, bucket = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")

    response = await http.get(
        f"/api/v1/jobs/{job_id}/files/upload", params={"filename": "input.txt"}
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["expires_in"] == 3600
    assert body["method"] == "PUT"
    async with aiohttp.ClientSession() as anonymous:
        put = await anonymous.put(body["url"], data=b"straight to S3")
        assert put.status == 200, await put.text()

    async with s3_emulator.client() as s3:
        stored = await s3.get_object(Bucket=bucket, Key=f"jobs/{job_id}/input.txt")
        assert await stored["Body"].read() == b"straight to S3"


async def test_expires_in_is_echoed_and_bounded(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    orchestrator, _ = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    url = f"/api/v1/jobs/{job_id}/files/upload"

    response = await http.get(url, params={"filename": "a.bin", "expires_in": "60"})
    body = await response.json()
    assert response.status == 200, body
    assert body["expires_in"] == 60
    assert "X-Amz-Expires=60" in body["url"]
    for bad in ("0", "604801", "-5", "1.5", "soon", "1_000"):
        response = await http.get(url, params={"filename": "a.bin", "expires_in": bad})
        assert response.status == 400, bad
        assert "expires_in" in (await response.json())["error"]


async def test_content_upload_streams_to_s3_and_download_redirects_to_it(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    # 20 MiB: above the app's 16 MiB JSON body limit, and three parts.
    size = 20 * MiB + 123
    orchestrator, bucket = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")

    response = await http.put(
        f"/api/v1/jobs/{job_id}/files/content/video.mp4",
        data=_pattern(size),
        headers={"Content-Type": "video/mp4"},
    )
    body = await response.json()
    assert response.status == 200, body
    assert body == {"status": "uploaded", "s3_uri": f"s3://{bucket}/jobs/{job_id}/video.mp4"}

    download = f"/api/v1/jobs/{job_id}/files/download/video.mp4"
    redirect = await http.get(download, allow_redirects=False)
    assert redirect.status == 302
    assert redirect.headers["Location"].startswith(s3_emulator.endpoint_url)
    response = await http.get(download)  # follows the redirect to S3
    assert response.status == 200
    assert response.headers["Content-Type"] == "video/mp4"
    expected, received = hashlib.sha256(), hashlib.sha256()
    async for chunk in _pattern(size):
        expected.update(chunk)
    async for chunk in response.content.iter_chunked(MiB):
        received.update(chunk)
    assert received.hexdigest() == expected.hexdigest()


async def test_small_upload_and_empty_upload(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    orchestrator, _ = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")

    for content in (b"tiny", b""):
        response = await http.put(f"/api/v1/jobs/{job_id}/files/content/f.txt", data=content)
        assert response.status == 200, await response.text()
        download = await http.get(f"/api/v1/jobs/{job_id}/files/download/f.txt")
        assert await download.read() == content


async def test_download_of_a_missing_file_is_404(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    orchestrator, _ = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")

    response = await http.get(
        f"/api/v1/jobs/{job_id}/files/download/nothing.txt", allow_redirects=False
    )
    assert response.status == 404
    assert "nothing.txt" in (await response.json())["error"]


BAD_NAMES = ["../secret", "a/../../b", "..", "/etc/passwd", "a\\b", "a//b", "a/", "./a", "a\x00b",
             "line\nbreak", "del\x7f", "x" * 513]  # fmt: skip


@pytest.mark.parametrize("filename", BAD_NAMES)
async def test_unsafe_names_are_refused_by_the_upload_url(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    s3_emulator: S3Emulator,
    filename: str,
) -> None:
    orchestrator, _ = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")

    response = await http.get(f"/api/v1/jobs/{job_id}/files/upload", params={"filename": filename})
    assert response.status == 400
    assert "filename" in (await response.json())["error"]


async def test_missing_filename_is_400(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    orchestrator, _ = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")

    for query in ("", "?filename="):
        response = await http.get(f"/api/v1/jobs/{job_id}/files/upload{query}")
        assert response.status == 400
        assert (await response.json())["error"] == "filename is required"


# Names as they arrive in a path segment, percent-encoded.
BAD_PATH_NAMES = ["..%2Fsecret", "%2E%2E", "a%5Cb", "%2Fetc", "a%00b", "a%0Ab", "a..b"]


@pytest.mark.parametrize("encoded", BAD_PATH_NAMES)
async def test_unsafe_names_are_refused_by_upload_and_download(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    s3_emulator: S3Emulator,
    encoded: str,
) -> None:
    orchestrator, bucket = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    base = f"http://127.0.0.1:{orchestrator.rest_port}/api/v1/jobs/{job_id}/files"

    put = await http.put(yarl_raw(f"{base}/content/{encoded}"), data=b"x")
    assert put.status == 400, await put.text()
    get = await http.get(yarl_raw(f"{base}/download/{encoded}"), allow_redirects=False)
    assert get.status == 400, await get.text()
    async with s3_emulator.client() as s3:
        assert await keys_in(s3, bucket) == []


def yarl_raw(url: str) -> yarl.URL:
    """``url`` sent exactly as written (no re-encoding, no dot-segment removal)."""
    return yarl.URL(url, encoded=True)


async def test_files_of_another_clients_job_are_404(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, s3_emulator: S3Emulator
) -> None:
    orchestrator, bucket = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    # Created in-process: owned by the background client, not by the caller.
    theirs = await orchestrator.create_background_job("echo", {})
    mine = await create_job(http, "jobs/echo")

    for job_id in (theirs, "no-such-job"):
        base = f"/api/v1/jobs/{job_id}/files"
        responses = [
            await http.get(f"{base}/upload", params={"filename": "a.txt"}),
            await http.put(f"{base}/content/a.txt", data=b"intruder"),
            await http.get(f"{base}/download/a.txt", allow_redirects=False),
        ]
        for response in responses:
            assert response.status == 404, await response.text()
            assert "not found" in (await response.json())["error"]
    async with s3_emulator.client() as s3:
        assert await keys_in(s3, bucket) == []
    # The owner's own job works, with the same store.
    response = await http.put(f"/api/v1/jobs/{mine}/files/content/a.txt", data=b"mine")
    assert response.status == 200


async def test_every_file_endpoint_is_501_without_s3(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")
    base = f"/api/v1/jobs/{job_id}/files"

    responses = [
        await http.get(f"{base}/upload", params={"filename": "a.txt"}),
        await http.put(f"{base}/content/a.txt", data=b"data"),
        await http.get(f"{base}/download/a.txt", allow_redirects=False),
    ]
    for response in responses:
        assert response.status == 501
        assert "S3_ENDPOINT_URL" in (await response.json())["error"]


async def test_an_interrupted_upload_leaves_nothing_behind(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    s3_emulator: S3Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    orchestrator, bucket = await _start(start_orchestrator, s3_emulator)
    http = http_client(orchestrator)
    job_id = await create_job(http, "jobs/echo")

    # Announce 40 MiB, send 12 (the first 8 MiB part starts a multipart
    # upload), then hang up.
    _, writer = await asyncio.open_connection("127.0.0.1", orchestrator.rest_port)
    writer.write(
        f"PUT /api/v1/jobs/{job_id}/files/content/cut.bin HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nX-Client-Token: {http.headers['X-Client-Token']}\r\n"
        f"Content-Length: {40 * MiB}\r\n\r\n".encode()
    )
    for _ in range(12):
        writer.write(b"\0" * MiB)
        await writer.drain()
    async with s3_emulator.client() as s3:

        async def uploads() -> int:
            return len((await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []))

        async def no_uploads() -> bool:
            return await uploads() == 0

        async def one_upload() -> bool:
            return await uploads() == 1

        await wait_until(one_upload)
        writer.close()
        await writer.wait_closed()
        # The server sees the connection drop and aborts the upload.
        await wait_until(no_uploads)
        assert await keys_in(s3, bucket) == []
    # A client hanging up is the client's doing: no error logged as ours.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_start_up_stops_when_s3_cannot_be_reached(
    start_orchestrator: StartOrchestrator,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ConfigError, match="S3_ENDPOINT_URL"):
        await start_orchestrator(**S3Emulator(closed).settings(unique_bucket()))
