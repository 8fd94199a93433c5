"""Reading and validating request bodies; every problem is a 400 naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from avtomatika.errors import InvalidArgument
from avtomatika.payload import decode_json
from avtomatika.webhooks.addresses import literal_address, non_public_kind

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
        value = decode_json(raw)
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
    def parse(cls, body: dict[str, Any], *, allow_private_webhooks: bool = False) -> CreateJobBody:
        """``allow_private_webhooks`` is ``WEBHOOK_ALLOW_PRIVATE``: without it, a
        ``webhook_url`` whose host is a literal IP that is not public is refused
        (host names are checked when the webhook is sent)."""
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
            webhook_url=_webhook_url(body.get("webhook_url"), allow_private_webhooks),
            dispatch_timeout=_positive("dispatch_timeout", body.get("dispatch_timeout")),
            result_timeout=_positive("result_timeout", body.get("result_timeout")),
        )


def _webhook_url(value: Any, allow_private: bool) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise InvalidArgument("webhook_url must be a string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument("webhook_url must be an http or https URL")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidArgument("webhook_url must not contain spaces or control characters")
    try:
        parts.port  # noqa: B018 -- parsing it is the check
    except ValueError:
        raise InvalidArgument("webhook_url has an invalid port") from None
    address = literal_address(parts.hostname)
    kind = non_public_kind(address) if address is not None and not allow_private else None
    if kind is not None:
        raise InvalidArgument(
            f"webhook_url points to {address}, a {kind} address; webhooks go to public "
            "addresses only (WEBHOOK_ALLOW_PRIVATE=true allows others)"
        )
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
