"""Webhook signatures: HMAC-SHA256, sent when ``WEBHOOK_SECRET`` is set.

Every delivery attempt carries::

    X-Avtomatika-Timestamp: 1767225600              (Unix seconds, at sending)
    X-Avtomatika-Signature: sha256=<hex>

where ``<hex>`` is ``HMAC-SHA256(WEBHOOK_SECRET, timestamp + "." + raw body)``.
A receiver recomputes it over the raw bytes it received (before parsing the
JSON), compares in constant time, and rejects a timestamp older than a few
minutes: since the timestamp is signed, a captured request cannot be
replayed later with a fresh one. :func:`verify` does all three.

Each attempt is signed anew with its own timestamp, so a retry after a long
backoff is not rejected as stale. ``X-Avtomatika-Delivery`` (the same on every
attempt of one delivery) lets receivers ignore duplicates: delivery is at
least once.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Avtomatika-Signature"
TIMESTAMP_HEADER = "X-Avtomatika-Timestamp"
DELIVERY_HEADER = "X-Avtomatika-Delivery"
EVENT_HEADER = "X-Avtomatika-Event"

_SCHEME = "sha256="


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Avtomatika-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return _SCHEME + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_seconds: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` is valid for ``body`` and ``timestamp`` is within
    ``tolerance_seconds`` of ``now`` (for receivers written in Python)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
