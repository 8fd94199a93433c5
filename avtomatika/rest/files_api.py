"""Job files over REST: presigned upload URLs, a streaming upload proxy and
download redirects. Every endpoint answers 501 when no S3 store is configured
(``S3_ENDPOINT_URL``), and 404 for a job of another client (the rules are
:class:`~avtomatika.services.client_api.ClientApi`'s).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from avtomatika.errors import InvalidArgument
from avtomatika.rest.state import CLIENT_API, client_of

__all__ = ["download", "upload_content", "upload_url"]


async def upload_url(request: web.Request) -> web.Response:
    """``GET /api/v1/jobs/{job_id}/files/upload?filename=&expires_in=``."""
    url, expires_in = await request.app[CLIENT_API].upload_url(
        client_of(request),
        request.match_info["job_id"],
        request.query.get("filename", ""),
        request.query.get("expires_in"),
    )
    return web.json_response({"url": url, "expires_in": expires_in, "method": "PUT"})


async def upload_content(request: web.Request) -> web.Response:
    """``PUT /api/v1/jobs/{job_id}/files/content/{filename}``: the body goes
    to S3 part by part as it arrives. It is read from ``request.content``
    directly, so the app's body-size limit (meant for JSON) does not apply."""
    s3_uri = await request.app[CLIENT_API].upload(
        client_of(request),
        request.match_info["job_id"],
        request.match_info["filename"],
        _RequestBody(request),
        request.headers.get("Content-Type"),
    )
    return web.json_response({"status": "uploaded", "s3_uri": s3_uri})


async def download(request: web.Request) -> web.Response:
    """``GET /api/v1/jobs/{job_id}/files/download/{filename}``: 302 to a fresh
    presigned GET."""
    url = await request.app[CLIENT_API].download_url(
        client_of(request), request.match_info["job_id"], request.match_info["filename"]
    )
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
