"""TLS for the gRPC channels of workers and clients: :class:`TlsFiles`, the
PEM files a channel is secured with (the CA bundle the server's certificate
is checked against, and for mutual TLS a client certificate and its key),
given in code or by environment variables::

    AVTOMATIKA_TLS_CA=ca.pem AVTOMATIKA_TLS_CERT=worker.pem AVTOMATIKA_TLS_KEY=worker.key

Shared by the worker SDK and the client; only the standard library and grpc.
An HTTPS client of the REST port (the command line's) makes its ``ssl``
context from the same files (:meth:`TlsFiles.ssl_context`).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["ENV_CA", "ENV_CERT", "ENV_KEY", "TlsFiles"]

ENV_CA = "AVTOMATIKA_TLS_CA"
"""The environment variable naming :attr:`TlsFiles.ca_path`."""
ENV_CERT = "AVTOMATIKA_TLS_CERT"
"""The environment variable naming :attr:`TlsFiles.cert_path`."""
ENV_KEY = "AVTOMATIKA_TLS_KEY"
"""The environment variable naming :attr:`TlsFiles.key_path`."""


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """The PEM files of a TLS channel. Any of them set turns TLS on; none
    set (``TlsFiles()``) is plaintext.

    The files are read each time a channel opens, so certificates renewed
    in place are picked up at the next reconnection.
    """

    ca_path: Path | None = None
    """The CA bundle the server's certificate must chain to; None trusts
    the system's roots."""
    cert_path: Path | None = None
    """The client certificate (chain), for servers that require one."""
    key_path: Path | None = None
    """The client certificate's private key (unencrypted)."""

    def __post_init__(self) -> None:
        if (self.cert_path is None) != (self.key_path is None):
            raise ValueError("a client certificate needs its key: set both cert_path and key_path")
        for name in ("ca_path", "cert_path", "key_path"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {str(path)!r} is not a file")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TlsFiles:
        """The files ``AVTOMATIKA_TLS_CA``, ``AVTOMATIKA_TLS_CERT`` and
        ``AVTOMATIKA_TLS_KEY`` name (in ``environ``, by default the
        process's environment); an unset or empty variable is no file."""
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name, "")
            return Path(value) if value else None

        return cls(ca_path=path(ENV_CA), cert_path=path(ENV_CERT), key_path=path(ENV_KEY))

    @property
    def enabled(self) -> bool:
        """Whether any file is set, that is whether the channel is TLS."""
        return any(path is not None for path in (self.ca_path, self.cert_path, self.key_path))

    def credentials(self) -> grpc.ChannelCredentials | None:
        """The channel credentials these files make, read now; None for
        plaintext."""
        if not self.enabled:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_path),
            private_key=_read(self.key_path),
            certificate_chain=_read(self.cert_path),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """An HTTPS client's context from the same files: trusting the CA
        bundle (the system's roots without one), presenting the client
        certificate when set."""
        context = ssl.create_default_context(cafile=self.ca_path)
        if self.cert_path is not None:
            context.load_cert_chain(self.cert_path, self.key_path)
        return context


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()
