"""``GET /api/v1/blueprints/{blueprint_name}/graph``: a blueprint's state
machine as Graphviz DOT, drawn in-process (no Graphviz needed on the server;
render it with ``dot -Tsvg``)."""

from __future__ import annotations

from aiohttp import web

from avtomatika.blueprint.graph import to_dot
from avtomatika.errors import NotFound
from avtomatika.rest.state import ENGINE

__all__ = ["DOT_CONTENT_TYPE", "blueprint_graph"]

DOT_CONTENT_TYPE = "text/vnd.graphviz"


async def blueprint_graph(request: web.Request) -> web.Response:
    name = request.match_info["blueprint_name"]
    blueprint = request.app[ENGINE].blueprints.get(name)
    if blueprint is None:
        raise NotFound(f"blueprint {name!r} is not registered")
    return web.Response(text=to_dot(blueprint), content_type=DOT_CONTENT_TYPE)
