"""The web console (:mod:`avtomatika.console`): its page at ``/`` and
``/console``, its scripts and stylesheet at ``/console/{asset}``.

Pages, not API: these paths have no google.api.http annotation and no place
in the OpenAPI document (:data:`CONSOLE_PATHS` is how the route and OpenAPI
checks leave them out). The page's Content-Security-Policy admits scripts,
styles and connections from this origin only: no inline script or style, no
CDN, no frame around it; the data the page shows is text, never markup.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from avtomatika.errors import NotFound

__all__ = ["CONSOLE_PATHS", "asset", "page"]

CONSOLE_PATHS = frozenset({"/", "/console", "/console/{asset}"})

_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A new release's files must replace the old ones at the next load.
    "Cache-Control": "no-cache",
}


async def page(request: web.Request) -> web.Response:
    return _response("index.html")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    if name not in _assets():
        raise NotFound(f"the console has no file {name!r}")
    return _response(name)


def _response(name: str) -> web.Response:
    suffix = name[name.rindex(".") :]
    return web.Response(
        body=_read(name), content_type=_CONTENT_TYPES[suffix], charset="utf-8", headers=_HEADERS
    )


@functools.cache
def _assets() -> frozenset[str]:
    """The files a browser may ask for: the package's HTML, JS and CSS
    (never a path, so nothing outside the package can be named)."""
    files = resources.files("avtomatika.console")
    return frozenset(
        f.name for f in files.iterdir() if any(f.name.endswith(s) for s in _CONTENT_TYPES)
    )


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("avtomatika.console").joinpath(name).read_bytes()
