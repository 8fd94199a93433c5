"""User data (initial data, params, results, state history) as JSON bytes in a
:class:`avtomatika.v1.payload_pb2.Payload` (see DESIGN.md: not Struct, which
would turn every integer into a double).

Encoding and decoding run several times per job, so they use orjson (in C,
some ten times faster than the standard library here); where orjson would
answer differently, the standard library decides, so the meaning is that of
:mod:`json` with NaN and Infinity refused both ways:

- orjson writes NaN and Infinity as ``null``: output holding ``null`` is
  encoded again by the standard library, which refuses them;
- orjson refuses non-string keys (``{1: 2}``) and integers beyond 64 bits,
  which :mod:`json` encodes; it reads integers beyond 64 bits as floats,
  losing digits, so text with a run of 19 digits or more is read by the
  standard library (refusing NaN and Infinity there too);
- datetimes and dataclasses, which :mod:`json` refuses, are refused too.

Three differences remain, all at the edges: an ``Enum`` or a ``UUID`` value
is written as its value or its text (:mod:`json` refuses them); a dict or
list subclass is written from its contents, not through overridden
``items``/``__iter__``; and input must be UTF-8 without a byte-order mark,
as JSON over HTTP is (:mod:`json` also guesses UTF-16 and UTF-32).
"""

from __future__ import annotations

import json
import math
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
# 18 digits fit 64 bits whatever their sign; orjson reads an integer beyond
# 64 bits (-2**63 has 19 digits) as a float, the standard library exactly.
_LONG_NUMBER = re.compile(rb"\d{19}")


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
        return json.loads(data, parse_constant=_refuse, parse_float=_finite)
    return orjson.loads(data)


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is too large for a number")
    return value


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
