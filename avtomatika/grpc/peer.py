"""The client certificate of a gRPC call, as :mod:`avtomatika.access.peer`
wants it: the names grpc's TLS put in the call's auth context once it had
verified the certificate against ``TLS_CA_PATH``."""

from __future__ import annotations

from typing import Any

import grpc

__all__ = ["names_of"]

# grpc's auth-context properties: the subject's common name, and each DNS
# subject alternative name (URI, e-mail and IP names have their own keys,
# which a worker id is never compared with).
_COMMON_NAME = "x509_common_name"
_DNS_NAMES = "peer_dns"


def names_of(context: grpc.aio.ServicerContext[Any, Any]) -> frozenset[str]:
    """The common name and DNS names of the call's client certificate;
    empty when the call came without one (or not over TLS)."""
    properties = context.auth_context()
    values = [*properties.get(_COMMON_NAME, ()), *properties.get(_DNS_NAMES, ())]
    return frozenset(value.decode("utf-8", "replace") for value in values)
