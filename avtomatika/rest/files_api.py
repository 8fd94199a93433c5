"""Job files over REST: presigned upload URLs, a streaming upload proxy and
download redirects. Every endpoint answers 501 when no S3 store is configured
(``S3_ENDPOINT_URL``), and 404 for a job of another client.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from avtomatika.errors import InvalidArgument, NotFound, NotImplementedYet
from avtomatika.rest.state import ENGINE, client_of

if TYPE_CHECKING:
    from avtomatika.files import S3Files

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "DOWNLOAD_URL_SECONDS",
    "FILES",
    "download",
    "upload_content",
    "upload_url",
]

FILES: web.AppKey[S3Files] = web.AppKey("files")
"""The job files store; absent when S3 is not configured."""

DEFAULT_EXPIRES_IN = 3600
"""Validity of an upload URL when the client does not say (as documented)."""

DOWNLOAD_URL_SECONDS = 300
"""Validity of the URL a download redirects to: it is followed at once, and S3
checks it only when the transfer starts."""

_DIGITS = re.compile(r"[0-9]{1,9}")


async def upload_url(request: web.Request) -> web.Response:
    """``GET /api/v1/jobs/{job_id}/files/upload?filename=&expires_in=``."""
    files, job_id = await _job_files(request)
    filename = request.query.get("filename", "")
    expires_in = _expires_in(request.query.get("expires_in"))
    url = await files.presigned_put(job_id, filename, expires_in)
    return web.json_response({"url": url, "expires_in": expires_in, "method": "PUT"})


async def upload_content(request: web.Request) -> web.Response:
    """``PUT /api/v1/jobs/{job_id}/files/content/{filename}``: the body goes
    to S3 part by part as it arrives. It is read from ``request.content``
    directly, so the app's body-size limit (meant for JSON) does not apply."""
    files, job_id = await _job_files(request)
    content_type = request.headers.get("Content-Type")
    s3_uri = await files.upload_stream(
        job_id, request.match_info["filename"], _RequestBody(request), content_type
    )
    return web.json_response({"status": "uploaded", "s3_uri": s3_uri})


async def download(request: web.Request) -> web.Response:
    """``GET /api/v1/jobs/{job_id}/files/download/{filename}``: 302 to a fresh
    presigned GET."""
    files, job_id = await _job_files(request)
    filename = request.match_info["filename"]
    if not await files.exists(job_id, filename):
        raise NotFound(f"file {filename!r} of job {job_id!r} not found")
    url = await files.presigned_get(job_id, filename, DOWNLOAD_URL_SECONDS)
    return web.Response(status=302, headers={"Location": url})


class _RequestBody:
    """``request.content`` whose failures are the client's, not the store's:
    a client that hangs up or sends a malformed body gets a 400 (if anyone is
    left to read it), and the half-done upload is aborted on the way out."""

    __slots__ = ("_content",)

    def __init__(self, request: web.Request) -> None:
        self._content = request.content

    async def read(self, n: int = -1) -> bytes:
        try:
            return await self._content.read(n)
        except (ConnectionError, HttpProcessingError) as exc:
            raise InvalidArgument(f"the request body was cut short: {exc}") from exc


async def _job_files(request: web.Request) -> tuple[S3Files, str]:
    """The files store and the id of a job the caller owns (501, 404)."""
    files = request.app.get(FILES)
    if files is None:
        raise NotImplementedYet("file storage is not configured (set S3_ENDPOINT_URL)")
    job = await request.app[ENGINE].get_job(
        request.match_info["job_id"], client_id=client_of(request).id
    )
    return files, job.id


def _expires_in(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_EXPIRES_IN
    if not _DIGITS.fullmatch(raw):
        raise InvalidArgument(f"expires_in must be a whole number of seconds, got {raw!r}")
    return int(raw)
