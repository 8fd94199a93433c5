"""What Redis being unreachable means to callers.

Redis being unreachable is not a bug: at run time the failure becomes
:class:`~avtomatika.errors.Unavailable` (503 over HTTP, UNAVAILABLE over gRPC)
for requests, while background loops back off and retry: a loop of its own
with :func:`run_forever`, a call that must get through with :func:`until_up`,
any other loop with an :class:`Outage`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from avtomatika.backoff import backoff_delay
from avtomatika.errors import Unavailable

__all__ = ["DOWN", "Outage", "check_cancelled", "run_forever", "unavailable", "until_up"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a call to an unreachable (or restarting) Redis raises."""

# Background loops retry soon (a restart takes a moment) but, in a long
# outage, only every few seconds: each retry of each loop is a connection
# attempt, and a log line would be one too many.
_FIRST_WAIT = 0.1
_LONGEST_WAIT = 5.0


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


class Outage:
    """One background loop's view of Redis outages: after a failed call
    :meth:`wait` backs off (0.1 s doubling to 5 s), after a good one
    :meth:`over` says whether an outage just ended. Each outage is logged
    twice: a warning when it starts, an info line when Redis is back."""

    __slots__ = ("_failures", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._failures = 0

    async def wait(self, exc: BaseException) -> None:
        """After a call failed with ``exc`` (one of :data:`DOWN`): stop if
        this task is being cancelled (see :func:`check_cancelled`), else
        sleep before the retry."""
        check_cancelled()
        if self._failures == 0:
            log.warning("%s: Redis is unreachable (%s); retrying until it is back", self._what, exc)
        delay = backoff_delay(self._failures, base=_FIRST_WAIT, cap=_LONGEST_WAIT)
        self._failures += 1
        await asyncio.sleep(delay)

    def over(self) -> bool:
        """After a call that worked: whether it ended an outage."""
        if not self._failures:
            return False
        log.info("%s: Redis is back", self._what)
        self._failures = 0
        return True


async def run_forever(
    what: str,
    step: Callable[[], Awaitable[object]],
    *,
    running: Callable[[], bool] = lambda: True,
) -> None:
    """Await ``step()`` over and over while ``running()`` (by default until
    the task is cancelled), waiting out Redis outages (:class:`Outage`): the
    loop of a background task. ``step`` waits for its own work (an event, a
    period); an outage costs the step it interrupted, nothing else."""
    outage = Outage(what)
    while running():
        try:
            await step()
        except DOWN as exc:
            await outage.wait(exc)
            continue
        check_cancelled()
        outage.over()


async def until_up(
    what: str,
    call: Callable[..., Awaitable[_T]],
    *args: Any,
    giving_up: Callable[[], bool] = lambda: False,
) -> _T:
    """``call(*args)`` until Redis answers, backing off while it is down
    (:class:`Outage`): for work that must not be lost to an outage.
    :class:`Unavailable` instead once ``giving_up()`` (its owner closing)."""
    outage = Outage(what)
    while True:
        try:
            result = await call(*args)
        except DOWN as exc:
            check_cancelled()
            if giving_up():
                raise Unavailable(f"{what}: Redis is unreachable and this is closing") from exc
            await outage.wait(exc)
            continue
        outage.over()
        return result
