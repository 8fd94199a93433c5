"""``GET /_public/docs`` (an interactive page) and ``GET /_public/openapi.json``
(the document it is built on, see :mod:`avtomatika.rest.openapi`).

The page is one self-contained file: its script and style are inline and
pinned by hash in its Content-Security-Policy, and it may only talk to this
origin, so it works offline and loads nothing from a CDN.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources
from typing import Any

from aiohttp import web

from avtomatika.rest.openapi import openapi_document
from avtomatika.rest.state import PUBLIC_API

__all__ = ["RestDocuments", "docs", "openapi"]


class RestDocuments:
    """The documents of one REST application, for gRPC's ``GetDocs`` and
    ``GetOpenApi`` too (see :class:`~avtomatika.services.public_api.Documents`)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def docs_page(self) -> tuple[str, str]:
        return _page()

    def openapi(self) -> dict[str, Any]:
        return openapi_document(self._app)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[PUBLIC_API].openapi())


async def docs(request: web.Request) -> web.Response:
    page, policy = request.app[PUBLIC_API].docs_page()
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


@functools.cache
def _page() -> tuple[str, str]:
    """The page and a policy allowing exactly its inline script and style."""
    page = resources.files("avtomatika.rest").joinpath("docs.html").read_text("utf-8")
    scripts = " ".join(_hashes(page, "script"))
    styles = " ".join(_hashes(page, "style"))
    policy = (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return page, policy


def _hashes(page: str, tag: str) -> list[str]:
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
    ]
