"""The server's TLS: the ``ssl`` context the REST port serves with, built
from the same PEM files as gRPC's credentials (``TLS_CERT_PATH``,
``TLS_KEY_PATH``, and for mutual TLS ``TLS_CA_PATH``).

Building it is also how the settings check those files at start-up
(:class:`~avtomatika.config.Settings`): a certificate that is not PEM, a key
that does not match it or a CA bundle holding no certificate stops start-up
naming the setting, where gRPC would only fail at the first handshake.

Standard library only: the settings import it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from avtomatika.errors import ConfigError

__all__ = ["server_context"]


def _no_password() -> bytes:
    # An encrypted key would make OpenSSL prompt on the terminal; an empty
    # password fails to decrypt it instead, and start-up says so.
    return b""


def server_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """A server context for ``cert`` (its chain) and ``key``; with ``ca``,
    every client must present a certificate that CA bundle verifies.
    Raises :class:`ConfigError` naming the setting at fault."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        pem = cert.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"TLS_CERT_PATH {str(cert)!r} cannot be read: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(f"TLS_CERT_PATH {str(cert)!r} holds no PEM certificate")
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except OSError as exc:  # ssl.SSLError is one
        raise ConfigError(
            f"TLS_KEY_PATH {str(key)!r} is not an unencrypted PEM key matching "
            f"TLS_CERT_PATH {str(cert)!r}: {_reason(exc)}"
        ) from None
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except OSError as exc:
            raise ConfigError(
                f"TLS_CA_PATH {str(ca)!r} holds no usable PEM CA certificate: {_reason(exc)}"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or str(exc)
