"""Wall-clock time for shared state: epoch milliseconds, never a monotonic
reading, because deadlines are compared across hosts (DESIGN.md §3)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["iso_from_ms", "next_month_ms", "now_ms", "utc_month"]


def now_ms() -> int:
    """The current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def iso_from_ms(ms: int) -> str:
    """ISO 8601 UTC rendering of an epoch-milliseconds timestamp."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def utc_month(ms: int) -> str:
    """The calendar month (UTC) of epoch ``ms``, as ``YYYY-MM``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m")


def next_month_ms(ms: int) -> int:
    """The start of the calendar month (UTC) after the one of epoch ``ms``,
    in epoch milliseconds."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1000
