"""Typed application state shared by the REST handlers."""

from __future__ import annotations

from aiohttp import web

from avtomatika.access.authenticator import Authenticator
from avtomatika.blueprint.context import ClientInfo
from avtomatika.engine.core import Engine
from avtomatika.services.client_api import ClientApi
from avtomatika.services.public_api import PublicApi

__all__ = ["AUTH", "CLIENT", "CLIENT_API", "ENGINE", "PUBLIC_API", "client_of"]

ENGINE = web.AppKey("engine", Engine)
AUTH = web.AppKey("auth", Authenticator)
CLIENT_API = web.AppKey("client_api", ClientApi)
"""The client use cases every ``/api`` handler calls."""
PUBLIC_API = web.AppKey("public_api", PublicApi)
"""The public use cases of the ``/_public`` handlers."""
CLIENT = web.RequestKey("client", ClientInfo)
"""Where the client middleware stores the caller of an ``/api`` request."""


def client_of(request: web.Request) -> ClientInfo:
    """The authenticated client of a ``/api`` request."""
    return request[CLIENT]
