"""Reading and validating request bodies; every problem is a 400 naming the field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from avtomatika.errors import InvalidArgument

__all__ = ["MAX_TIMEOUT_SECONDS", "CreateJobBody", "read_json_object"]

MAX_TIMEOUT_SECONDS = 366 * 24 * 3600
"""The longest ``dispatch_timeout`` or ``result_timeout``: a year."""


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidArgument("the request body must be a JSON object")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class CreateJobBody:
    """A validated ``POST /api/{version}/{endpoint}`` body."""

    initial_data: dict[str, Any]
    webhook_url: str
    dispatch_timeout: float | None
    result_timeout: float | None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> CreateJobBody:
        if "initial_data" not in body:
            # The original's legacy form: the whole body is the initial data.
            return cls(body, "", None, None)
        initial = body["initial_data"]
        if initial is None:
            initial = {}
        if not isinstance(initial, dict):
            raise InvalidArgument("initial_data must be a JSON object")
        return cls(
            initial_data=initial,
            webhook_url=_webhook_url(body.get("webhook_url")),
            dispatch_timeout=_positive("dispatch_timeout", body.get("dispatch_timeout")),
            result_timeout=_positive("result_timeout", body.get("result_timeout")),
        )


def _webhook_url(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise InvalidArgument("webhook_url must be a string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument("webhook_url must be an http or https URL")
    return value


def _positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a positive number of seconds")
    # A comparison rather than math.isfinite: it is exact for huge JSON integers
    # (which do not fit a float) and false for NaN.
    if not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise InvalidArgument(
            f"{name} must be a positive number of seconds, at most {MAX_TIMEOUT_SECONDS}"
        )
    return float(value)
