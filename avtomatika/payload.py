"""User data (initial data, params, results, state history) as JSON bytes in a
:class:`avtomatika.v1.payload_pb2.Payload` (see DESIGN.md: not Struct, which
would turn every integer into a double).

Encoding and decoding run several times per job, so they use orjson (in C,
some ten times faster than the standard library here); where orjson would
answer differently, the standard library decides, so the meaning is that of
:mod:`json` with NaN and Infinity refused:

- orjson writes NaN and Infinity as ``null``: output holding ``null`` is
  encoded again by the standard library, which refuses them;
- orjson refuses non-string keys (``{1: 2}``) and integers beyond 64 bits,
  which :mod:`json` encodes, and reads integers of 20 digits or more as
  floats: such values go through the standard library;
- datetimes and dataclasses, which :mod:`json` refuses, are refused too.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from avtomatika.v1.payload_pb2 import Payload

__all__ = ["JSON_ENCODING", "decode_json", "encode_json", "from_payload", "to_payload"]

JSON_ENCODING = "json/plain"

# Compact separators: payloads are stored and sent many times per job. NaN and
# Infinity are refused: they are not JSON, and other languages cannot read them.
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
# 19 digits still fit 64 bits whatever they are; orjson reads longer integers
# as floats (losing digits), the standard library exactly.
_LONG_NUMBER = re.compile(rb"\d{20}")


def encode_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; TypeError or ValueError if it is not
    JSON (NaN and Infinity included)."""
    try:
        data = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:
        return _encoder.encode(value).encode()
    if b"null" in data:  # perhaps a NaN or an Infinity: the standard library judges
        return _encoder.encode(value).encode()
    return data


def decode_json(data: bytes) -> Any:
    """Parse JSON bytes; ValueError if they are not JSON."""
    if _LONG_NUMBER.search(data):
        return json.loads(data)
    return orjson.loads(data)


def to_payload(value: Any) -> Payload:
    """Encode a JSON-serialisable value."""
    return Payload(encoding=JSON_ENCODING, data=encode_json(value))


def from_payload(payload: Payload, default: Any = None) -> Any:
    """Decode a payload; an empty one decodes to ``default``."""
    if not payload.data:
        return default
    if payload.encoding not in ("", JSON_ENCODING):
        raise ValueError(f"unsupported payload encoding {payload.encoding!r}")
    return decode_json(payload.data)
