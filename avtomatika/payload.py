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
from itertools import accumulate
from typing import Any

import orjson

from avtomatika.v1.payload_pb2 import Payload

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "JSON_ENCODING",
    "MAX_JSON_DEPTH",
    "MESSAGE_HEADROOM_BYTES",
    "REFERENCE_KEY",
    "decode_json",
    "encode_json",
    "from_payload",
    "message_limit",
    "reference_in",
    "to_payload",
]

JSON_ENCODING = "json/plain"

MAX_JSON_DEPTH = 128
"""The deepest nesting of arrays and objects a decoded text may have. Deeper
text is refused before it is parsed: the standard library's parser (the
long-number path below) and every encoder recurse once per level, so a
body of 100,000 brackets would otherwise end in a RecursionError (a 500 and
a traceback per request); orjson itself stops writing at 255 levels."""

DEFAULT_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""The default of ``MAX_PAYLOAD_BYTES``: the largest encoded initial data,
task params or task result. 4 MiB, gRPC's own default message size, so a
payload that fits here fits in what any gRPC peer accepts once the limits
below are applied; bigger data goes by reference (S3 files)."""

MESSAGE_HEADROOM_BYTES = 1024 * 1024
"""What a stream message may carry beside its payload: ids, the task type,
tracing context, an error message, a batch's framing. Every gRPC channel
(server, worker SDK, client) accepts :func:`message_limit` bytes, so a
payload at the limit is never refused by a peer for its envelope."""


def message_limit(max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> int:
    """The gRPC message size (and REST body size) that carries a payload of
    ``max_payload_bytes`` with its envelope."""
    return max_payload_bytes + MESSAGE_HEADROOM_BYTES


REFERENCE_KEY = "$avtomatika_ref"
"""The claim-check: a payload over ``MAX_PAYLOAD_BYTES`` stored as a job
file (S3) travels as ``{"$avtomatika_ref": {"uri": "s3://...", "name":
"<file in the job>", "url": "<presigned GET>", "bytes": <size>}}`` in its
place. The worker SDK fetches ``url`` and hands the handler the data; a
blueprint handler reads ``name`` through ``task_files``."""


def reference_in(value: Any) -> dict[str, Any] | None:
    """The claim-check reference ``value`` is (an object whose only key is
    :data:`REFERENCE_KEY`, holding at least ``url``), or None."""
    if not isinstance(value, dict) or len(value) != 1:
        return None
    reference = value.get(REFERENCE_KEY)
    if not isinstance(reference, dict) or not isinstance(reference.get("url"), str):
        return None
    return reference


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
    """Parse JSON bytes; ValueError if they are not JSON or nest deeper than
    :data:`MAX_JSON_DEPTH`."""
    _check_depth(data)
    if _LONG_NUMBER.search(data):
        return json.loads(data, parse_constant=_refuse, parse_float=_finite)
    return orjson.loads(data)


# A JSON string (escapes included); each byte's step in nesting depth.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256)]


def _check_depth(data: bytes) -> None:
    # The common case costs two C-speed counts: a text with no more opening
    # brackets than the limit cannot nest deeper than it. Otherwise the
    # running depth of the brackets outside strings is summed in C
    # (accumulate over map); malformed text is left to the parser, which
    # names the problem better.
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


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
