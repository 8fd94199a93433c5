"""TLS for the tests: a self-signed certificate for ``localhost``, and a small
certificate authority issuing server and client certificates (mutual TLS),
with the ``ssl`` contexts and gRPC credentials a test client connects with.

Written with ``cryptography``; keys are P-256, certificates valid for a day.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from avtomatika.channel_tls import TlsFiles

__all__ = ["Authority", "Issued", "client_context", "self_signed"]


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


# The names a test server is reached by.
_LOCALHOST: list[x509.GeneralName] = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    issued = Issued(directory / f"{stem}.pem", directory / f"{stem}.key")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    issued.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return issued


def self_signed(directory: Path) -> tuple[Path, Path]:
    """Write a certificate for ``localhost`` (and 127.0.0.1), valid for a
    day, and its key into ``directory``; their paths ``(cert.pem, key.pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder("localhost", "localhost", key)
        .add_extension(x509.SubjectAlternativeName(_LOCALHOST), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    issued = _write(directory, "cert", cert, key)
    return issued.cert, issued.key.rename(directory / "key.pem")


class Authority:
    """A CA whose certificate is ``<name>-ca.pem`` in ``directory``, issuing
    certificates into the same directory."""

    def __init__(self, directory: Path, name: str = "test") -> None:
        self.directory = directory
        self.name = f"avtomatika {name} CA"
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = (
            _builder(self.name, self.name, self._key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = directory / f"{name}-ca.pem"
        """The CA certificate: a ``TLS_CA_PATH``, or a client's trusted root."""
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def server(self) -> Issued:
        """A server certificate for ``localhost`` (and 127.0.0.1)."""
        return self._issue("localhost", _LOCALHOST, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, common_name: str, dns_names: list[str] | None = None) -> Issued:
        """A client certificate for ``common_name``, with ``dns_names`` as
        its subject alternative names (none by default)."""
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names or []]
        return self._issue(common_name, names, ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(
        self, common_name: str, names: list[x509.GeneralName], usage: x509.ObjectIdentifier
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(common_name, self.name, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        stem = f"{self.cert.stem}-{common_name}"
        return _write(self.directory, stem, cert, key)

    def files(self, client: Issued | None = None) -> TlsFiles:
        """What a worker or client trusting this CA connects with, presenting
        ``client`` when given."""
        if client is None:
            return TlsFiles(ca_path=self.cert)
        return TlsFiles(ca_path=self.cert, cert_path=client.cert, key_path=client.key)


def client_context(ca: Path, client: Issued | None = None) -> ssl.SSLContext:
    """An HTTPS client's context trusting ``ca``, presenting ``client``."""
    if client is None:
        return TlsFiles(ca_path=ca).ssl_context()
    return TlsFiles(ca_path=ca, cert_path=client.cert, key_path=client.key).ssl_context()
