"""``GET /api/v1/blueprints/{blueprint_name}/graph``: a blueprint's state
machine as Graphviz DOT (render it with ``dot -Tsvg``) or, with
``?format=svg``, as SVG, both drawn in-process (no Graphviz needed on the
server)."""

from __future__ import annotations

from aiohttp import web

from avtomatika.rest.state import CLIENT_API, client_of

__all__ = ["blueprint_graph"]


async def blueprint_graph(request: web.Request) -> web.Response:
    drawing = request.app[CLIENT_API].blueprint_graph(
        client_of(request), request.match_info["blueprint_name"], request.query.get("format", "")
    )
    return web.Response(text=drawing.text, content_type=drawing.content_type)
