"""User data as JSON: orjson where it agrees with the standard library, the
standard library where it would not (see :mod:`avtomatika.payload`)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import pytest

from avtomatika.payload import decode_json, encode_json, from_payload, to_payload

BIG = 123456789012345678901234567890


@pytest.mark.parametrize(
    "value",
    [
        {"n": 3, "text": "héllo", "xs": [1, 2.5, None, True], "nested": {"a": {}}},
        {"big": BIG, "negative": -BIG, "u64": 2**64 - 1, "past_u64": 2**64},
        {"below_i64": -(2**63) - 1},
        [-(2**63), 2**63 - 1, 10**18 - 1, -(10**18) + 1],
        {"s": "null", "none": None, "f": 1e16, "tiny": 5e-324},
        [0.1, -0.0, 1.5e300],
        "just a string",
    ],
)
def test_values_round_trip_exactly(value: Any) -> None:
    assert from_payload(to_payload(value)) == value
    assert json.loads(encode_json(value)) == value
    # Integers keep every digit both ways (orjson alone reads them as floats).
    assert decode_json(json.dumps(value).encode()) == value


def test_non_string_keys_become_strings_as_with_the_standard_library() -> None:
    value = {1: "a", 2.5: "b", False: "c", None: "d"}
    assert decode_json(encode_json(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused_anywhere(bad: float) -> None:
    for value in (bad, {"x": bad}, [1, {"y": [None, bad]}]):
        with pytest.raises(ValueError, match="not JSON compliant"):
            encode_json(value)


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "value", [{1, 2}, datetime.datetime(2026, 1, 1), {"when": datetime.date(2026, 1, 1)}, Point(1)]
)
def test_what_is_not_json_is_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        encode_json(value)


@pytest.mark.parametrize(
    "text",
    [
        b"{not json",
        b"NaN",
        b'{"x": Infinity}',
        b"[1,",
        b"\xff",
        b"[1e400]",
        # A run of 19 digits sends the text to the standard library: still
        # no NaN, Infinity or infinite number.
        b'{"id": "1234567890123456789", "x": NaN}',
        b"[-Infinity, 1234567890123456789]",
        b"[1e400, 1234567890123456789]",
    ],
)
def test_what_is_not_json_does_not_decode(text: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each parser words it its own way)
        decode_json(text)
