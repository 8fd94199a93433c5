"""Which addresses a webhook may be sent to: public ones only (the SSRF guard).

A client chooses the webhook URL, so without this guard it could make the
orchestrator POST into its own network: a cloud metadata service at
169.254.169.254, an admin port on 127.0.0.1, a database on 10.0.0.5. Refused:
private, loopback, link-local, multicast, reserved and unspecified addresses,
and anything else the IANA registries mark as not globally reachable (shared
address space 100.64.0.0/10, documentation ranges, ...). IPv6 forms that embed
an IPv4 address (``::ffff:127.0.0.1``, 6to4, NAT64) are judged by the IPv4
address inside.

The check runs twice: on a literal IP at job creation (400), and on every
address a host name resolves to at delivery, right before connecting to the
address that was checked (see :mod:`avtomatika.webhooks.resolver`).
"""

from __future__ import annotations

import ipaddress

__all__ = ["IPAddress", "literal_address", "non_public_kind"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def literal_address(host: str) -> IPAddress | None:
    """The address if ``host`` (as in a URL, IPv6 with or without brackets)
    is a literal IP, else None."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def non_public_kind(address: IPAddress) -> str | None:
    """Why ``address`` may not receive webhooks ("loopback", "private", ...),
    or None if it is a public address."""
    address = _embedded_ipv4(address) or address
    for kind, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    ):
        if flag:
            return kind
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
