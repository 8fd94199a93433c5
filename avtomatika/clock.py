"""Wall-clock time for shared state: epoch milliseconds, never a monotonic
reading, because deadlines are compared across hosts (DESIGN.md §3)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["iso_from_ms", "now_ms"]


def now_ms() -> int:
    """The current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def iso_from_ms(ms: int) -> str:
    """ISO 8601 UTC rendering of an epoch-milliseconds timestamp."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
