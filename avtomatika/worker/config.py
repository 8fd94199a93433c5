"""What a worker declares about itself, and how it connects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import grpc

from avtomatika.channel_tls import TlsFiles
from avtomatika.payload import MESSAGE_HEADROOM_BYTES, message_limit

__all__ = ["ConnectionSettings", "GpuInfo", "Resources"]


def _sdk_version() -> str:
    try:
        return metadata.version("avtomatika")
    except metadata.PackageNotFoundError:  # run from a source tree
        return "dev"


@dataclass(frozen=True, kw_only=True)
class GpuInfo:
    """The worker's GPU; task requirements match ``model`` by substring."""

    model: str
    vram_gb: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Hardware and models the worker offers, matched against task requirements."""

    cpu_cores: int = 0
    ram_gb: float = 0.0
    gpu: GpuInfo | None = None
    installed_models: Mapping[str, str] = field(default_factory=dict)
    """Model name -> version."""


@dataclass(frozen=True, kw_only=True)
class ConnectionSettings:
    """How the worker connects, reconnects and shuts its stream down.

    Reconnection waits ``reconnect_initial_delay`` seconds, multiplied by
    ``reconnect_multiplier`` after every failed attempt up to
    ``reconnect_max_delay``, each delay shortened by a random fraction of up
    to ``reconnect_jitter`` so that a fleet of workers does not reconnect in
    lockstep. A stream that was welcomed resets the delay.
    """

    connect_timeout: float = 10.0
    """Seconds to wait for the server's Welcome after opening a stream."""
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    reconnect_multiplier: float = 2.0
    reconnect_jitter: float = 0.5
    close_timeout: float = 5.0
    """Seconds the server gets to end the stream after the worker hangs up."""
    result_flush_timeout: float = 10.0
    """On stop, seconds to wait for the server to acknowledge the last results."""
    credentials: grpc.ChannelCredentials | None = None
    """TLS credentials built by hand; else :attr:`tls` decides."""
    tls: TlsFiles | None = None
    """The PEM files of a TLS connection: the server's CA bundle and, for
    mutual TLS, the worker's certificate and key. None (and no
    :attr:`credentials`) takes them from ``AVTOMATIKA_TLS_CA``,
    ``AVTOMATIKA_TLS_CERT`` and ``AVTOMATIKA_TLS_KEY``; with none of those
    set the worker connects in plaintext."""
    channel_options: Sequence[tuple[str, Any]] = ()
    """Extra gRPC channel options."""
    max_message_bytes: int = message_limit()
    """The largest message the channel sends or receives: the server's
    default ``MAX_PAYLOAD_BYTES`` (4 MiB) plus the envelope's headroom.
    Raise it with the server's setting. The Hello tells the server, which
    fails a task too big for it instead of sending it (a message over the
    limit would end the stream)."""

    @property
    def grpc_options(self) -> list[tuple[str, Any]]:
        """The channel's options: the message limits, then ``channel_options``
        (which may set their own)."""
        limits = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # Listed as the worker's agent on the workers page and API.
            ("grpc.primary_user_agent", f"avtomatika-worker/{_sdk_version()}"),
        ]
        return [*limits, *self.channel_options]

    @property
    def receive_limit(self) -> int:
        """What the channel receives at most, as its options say."""
        limit = self.max_message_bytes
        for key, value in self.channel_options:
            if key == "grpc.max_receive_message_length" and isinstance(value, int):
                limit = value if value >= 0 else 2**32 - 1
        return min(limit, 2**32 - 1)

    @property
    def result_limit(self) -> int:
        """The largest result data the channel can send."""
        return max(0, self.max_message_bytes - MESSAGE_HEADROOM_BYTES)

    def __post_init__(self) -> None:
        if self.max_message_bytes <= MESSAGE_HEADROOM_BYTES:
            raise ValueError(f"max_message_bytes must be over {MESSAGE_HEADROOM_BYTES}")
        for name in ("connect_timeout", "close_timeout", "result_flush_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.reconnect_initial_delay <= self.reconnect_max_delay:
            raise ValueError("need 0 <= reconnect_initial_delay <= reconnect_max_delay")
        if self.reconnect_multiplier < 1:
            raise ValueError("reconnect_multiplier must be at least 1")
        if not 0 <= self.reconnect_jitter <= 1:
            raise ValueError("reconnect_jitter must be between 0 and 1")
        if self.credentials is not None and self.tls is not None and self.tls.enabled:
            raise ValueError("give either credentials or tls files, not both")
        if self.credentials is None and self.tls is None:
            # Resolved once, here: a variable naming a missing file fails now.
            object.__setattr__(self, "tls", TlsFiles.from_env())

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """The credentials of the next connection (the TLS files read
        afresh); None for plaintext."""
        if self.credentials is not None:
            return self.credentials
        return self.tls.credentials() if self.tls is not None else None
