"""User data (initial data, params, results, state history) as JSON bytes in a
:class:`avtomatika.v1.payload_pb2.Payload` (see DESIGN.md: not Struct, which
would turn every integer into a double)."""

from __future__ import annotations

import json
from typing import Any

from avtomatika.v1.payload_pb2 import Payload

__all__ = ["JSON_ENCODING", "from_payload", "to_payload"]

JSON_ENCODING = "json/plain"

# Compact separators: payloads are stored and sent many times per job. NaN and
# Infinity are refused: they are not JSON, and other languages cannot read them.
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def to_payload(value: Any) -> Payload:
    """Encode a JSON-serialisable value."""
    return Payload(encoding=JSON_ENCODING, data=_encoder.encode(value).encode())


def from_payload(payload: Payload, default: Any = None) -> Any:
    """Decode a payload; an empty one decodes to ``default``."""
    if not payload.data:
        return default
    if payload.encoding not in ("", JSON_ENCODING):
        raise ValueError(f"unsupported payload encoding {payload.encoding!r}")
    return json.loads(payload.data)
