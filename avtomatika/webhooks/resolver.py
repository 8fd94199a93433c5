"""A DNS resolver for aiohttp that refuses host names resolving to addresses
that are not public.

aiohttp connects to the addresses its resolver returns (and still sends the
host name for TLS and ``Host``), so the addresses checked here are exactly the
ones connected to: a DNS answer that changes between a check and the
connection (DNS rebinding) cannot slip an internal address in. If any address
a name resolves to is not public, the name is refused as a whole, since the
connection could go to any of them.

aiohttp does not ask the resolver about literal IPs; the sender checks those
itself.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from avtomatika.webhooks.addresses import literal_address, non_public_kind

__all__ = ["ForbiddenAddress", "PublicOnlyResolver"]


class ForbiddenAddress(OSError):
    """A webhook host is, or resolves to, an address that is not public.

    An :class:`OSError` so that aiohttp passes it through as the cause of its
    connection error."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        where = f"is a {kind} address" if host == address else f"resolves to {address}"
        detail = "" if host == address else f", a {kind} address"
        super().__init__(
            f"{host} {where}{detail}; webhooks go to public addresses only "
            "(WEBHOOK_ALLOW_PRIVATE=true allows others)"
        )


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then checks every address."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = literal_address(result["host"])
            kind = "unparseable" if address is None else non_public_kind(address)
            if kind is not None:
                raise ForbiddenAddress(host, result["host"], kind)
        return results

    async def close(self) -> None:
        await self._inner.close()
