"""``GET /api/v1/blueprints/{blueprint_name}/graph``: a blueprint's state
machine as Graphviz DOT, drawn in-process (no Graphviz needed on the server;
render it with ``dot -Tsvg``)."""

from __future__ import annotations

from aiohttp import web

from avtomatika.rest.state import CLIENT_API, client_of

__all__ = ["DOT_CONTENT_TYPE", "blueprint_graph"]

DOT_CONTENT_TYPE = "text/vnd.graphviz"


async def blueprint_graph(request: web.Request) -> web.Response:
    dot = request.app[CLIENT_API].blueprint_graph(
        client_of(request), request.match_info["blueprint_name"]
    )
    return web.Response(text=dot, content_type=DOT_CONTENT_TYPE)
