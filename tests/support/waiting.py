"""Waiting for something that happens elsewhere (another task, another
process, a server) without guessing how long it takes: poll a condition
until it holds, with a deadline that fails the test with a message instead
of hanging it until pytest's timeout."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import pytest

_T = TypeVar("_T")

POLL_SECONDS = 0.01
"""How often a condition is looked at again."""

DEADLINE_SECONDS = 30.0
"""The default deadline: well under the per-test timeout (60 s), so a
condition that never holds fails with its own message, and far above what a
loaded CI machine needs for anything these tests wait for."""


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[_T | None]], *, timeout: float = ..., message: str = ...
) -> _T: ...


@overload
async def wait_until(
    predicate: Callable[[], _T | None], *, timeout: float = ..., message: str = ...
) -> _T: ...


async def wait_until(
    predicate: Callable[[], Any], *, timeout: float = DEADLINE_SECONDS, message: str = ""
) -> Any:
    """Call ``predicate`` (a function or a coroutine function) until what it
    returns is truthy, and return that; fail the test if ``timeout`` seconds
    pass first. A predicate that returns ``X | None`` makes this return ``X``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {message or _describe(predicate)}")
        await asyncio.sleep(POLL_SECONDS)


def _describe(predicate: Callable[[], Any]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)


async def cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended so."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
