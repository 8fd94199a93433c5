"""What a client asks for, validated once for both transports.

REST reads a JSON body and gRPC a typed message; both end here, so a
timeout, a webhook address or an initial data object is judged by one rule
and refused with one message naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from avtomatika.errors import InvalidArgument
from avtomatika.webhooks.addresses import literal_address, non_public_kind

__all__ = ["MAX_TIMEOUT_SECONDS", "JobRequest"]

MAX_TIMEOUT_SECONDS = 366 * 24 * 3600
"""The longest ``dispatch_timeout`` or ``result_timeout``: a year."""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated request to create a job."""

    initial_data: dict[str, Any]
    webhook_url: str = ""
    dispatch_timeout: float | None = None
    result_timeout: float | None = None

    @classmethod
    def check(
        cls,
        initial_data: Any,
        webhook_url: Any = None,
        dispatch_timeout: Any = None,
        result_timeout: Any = None,
        *,
        allow_private_webhooks: bool = False,
    ) -> JobRequest:
        """Validate each field (``None`` is "not given").

        ``allow_private_webhooks`` is ``WEBHOOK_ALLOW_PRIVATE``: without it, a
        ``webhook_url`` whose host is a literal IP that is not public is
        refused (host names are checked when the webhook is sent)."""
        if initial_data is None:
            initial_data = {}
        if not isinstance(initial_data, dict):
            raise InvalidArgument("initial_data must be a JSON object")
        return cls(
            initial_data=initial_data,
            webhook_url=_webhook_url(webhook_url, allow_private_webhooks),
            dispatch_timeout=_positive("dispatch_timeout", dispatch_timeout),
            result_timeout=_positive("result_timeout", result_timeout),
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
