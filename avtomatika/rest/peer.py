"""The client certificate of a REST request, as :mod:`avtomatika.access.peer`
wants it: the names of the certificate the connection's TLS handshake
verified against ``TLS_CA_PATH``, current while the request is served (a
worker's WebSocket included)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from avtomatika.access.peer import presented

__all__ = ["certificate_middleware"]


@web.middleware
async def certificate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    transport = request.transport
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    with presented(_names(certificate)):
        return await handler(request)


def _names(certificate: dict[str, Any] | None) -> list[str]:
    """The subject's common names and the DNS subject alternative names of a
    certificate as ``ssl.SSLSocket.getpeercert`` decodes it."""
    if not certificate:
        return []
    names = [
        value
        for relative_name in certificate.get("subject", ())
        for key, value in relative_name
        if key == "commonName"
    ]
    names += [value for kind, value in certificate.get("subjectAltName", ()) if kind == "DNS"]
    return names
