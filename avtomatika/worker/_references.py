"""Task params that came by reference (the claim-check, see
:data:`avtomatika.payload.REFERENCE_KEY`): a payload over the server's
``MAX_PAYLOAD_BYTES`` is stored as a job file and the task carries a
presigned URL in its place. The handler gets the data itself, fetched here
with the standard library (the SDK needs no HTTP client of its own)."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from avtomatika.payload import decode_json, reference_in
from avtomatika.worker.errors import TaskFailure

__all__ = ["resolve_params"]

# Seconds a fetch may stall (per read, as urllib counts it).
_FETCH_TIMEOUT_SECONDS = 60.0


async def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params``, or, when they are a reference, the object it refers to."""
    reference = reference_in(params)
    if reference is None:
        return params
    url: str = reference["url"]
    if urlsplit(url).scheme not in ("http", "https"):
        raise TaskFailure.invalid_input("a params reference's url must be http or https")
    try:
        data = await asyncio.to_thread(_fetch, url)
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
        raise TaskFailure.transient(
            f"could not fetch the task's params ({reference.get('name', 'by reference')}): {exc}"
        ) from exc
    try:
        value = decode_json(data)
    except ValueError as exc:
        raise TaskFailure.invalid_input(f"params by reference are not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TaskFailure.invalid_input(
            f"params by reference must be a JSON object, not {type(value).__name__}"
        )
    return value


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_SECONDS) as response:
        data: bytes = response.read()
    return data
