"""What Redis being unreachable means to callers.

Redis being unreachable is not a bug: at run time the failure becomes
:class:`~avtomatika.errors.Unavailable` (503 over HTTP, UNAVAILABLE over gRPC)
for requests, while background loops back off and retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from avtomatika.errors import Unavailable

__all__ = ["DOWN", "check_cancelled", "outage_backoff", "unavailable", "until_up"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a call to an unreachable (or restarting) Redis raises."""


def check_cancelled() -> None:
    """Raise :class:`asyncio.CancelledError` if this task was asked to stop.

    redis-py (8.1, seen with scripts) sometimes swallows a CancelledError
    that arrives mid-command and returns normally: the task stays
    "cancelling" but runs on, so a loop around Redis calls would never stop
    (and shutdown would hang). Loops call this after their Redis calls."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class unavailable:
    """``with unavailable(what):`` turns Redis connection failures inside
    the block into :class:`Unavailable` saying ``what`` could not be done.
    A class, not a generator: it is around every Redis call of a request,
    and a generator-based context manager costs several times as much."""

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: object
    ) -> None:
        if isinstance(exc, DOWN):
            message = f"{self._what}: the shared store (Redis) is unreachable ({exc})"
            raise Unavailable(message) from exc


async def outage_backoff(attempt: int, what: str, exc: BaseException) -> None:
    """Sleep before retrying a background loop's Redis call: 0.1 s doubling
    to 5 s. Logged once per outage, when it starts."""
    if attempt == 0:
        log.warning("%s: Redis is unreachable (%s); retrying until it is back", what, exc)
    await asyncio.sleep(min(0.1 * 2**attempt, 5.0))


async def until_up(
    what: str,
    call: Callable[..., Awaitable[_T]],
    *args: Any,
    giving_up: Callable[[], bool] = lambda: False,
) -> _T:
    """``call(*args)`` until Redis answers, backing off while it is down
    (:func:`outage_backoff`): for work that must not be lost to an outage.
    :class:`Unavailable` instead once ``giving_up()`` (its owner closing)."""
    attempt = 0
    while True:
        try:
            result = await call(*args)
        except DOWN as exc:
            check_cancelled()
            if giving_up():
                raise Unavailable(f"{what}: Redis is unreachable and this is closing") from exc
            await outage_backoff(attempt, what, exc)
            attempt += 1
            continue
        if attempt:
            log.info("%s: Redis is back", what)
        return result
