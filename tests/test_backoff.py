"""The one backoff formula (:func:`avtomatika.backoff.backoff_delay`) and the
loops built on it that wait out a Redis outage
(:mod:`avtomatika.storage.redis.outages`), the latter against a real
``redis-server`` stopped and started again."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from avtomatika.backoff import backoff_delay
from avtomatika.storage.redis import Pipelined, run_forever
from tests.support.redis import RedisServer


def test_attempt_zero_waits_the_base() -> None:
    assert backoff_delay(0, base=0.1, cap=5.0) == 0.1


def test_delays_double_up_to_the_cap() -> None:
    delays = [backoff_delay(attempt, base=1.0, cap=10.0) for attempt in range(6)]

    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_another_factor_grows_by_it() -> None:
    assert backoff_delay(2, base=1.0, cap=100.0, factor=3.0) == 9.0


def test_an_attempt_far_past_the_cap_waits_the_cap() -> None:
    # 2.0 ** 5000 overflows a float: the cap is long reached by then.
    assert backoff_delay(5000, base=0.1, cap=5.0) == 5.0


def test_jitter_shortens_each_delay_by_up_to_its_fraction() -> None:
    rng = random.Random(7)

    for attempt in range(8):
        full = backoff_delay(attempt, base=1.0, cap=30.0)
        delays = [
            backoff_delay(attempt, base=1.0, cap=30.0, jitter=0.5, rng=rng) for _ in range(200)
        ]
        assert all(full / 2 <= delay <= full for delay in delays)
        assert len(set(delays)) > 1  # spread out, not one value


def test_full_jitter_stays_within_zero_and_the_delay() -> None:
    delays = [backoff_delay(3, base=1.0, cap=30.0, jitter=1.0) for _ in range(200)]

    assert all(0 <= delay <= 8.0 for delay in delays)


def test_a_seeded_generator_makes_the_jitter_repeatable() -> None:
    def delays(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [backoff_delay(n, base=1.0, cap=9.0, jitter=0.3, rng=rng) for n in range(5)]

    assert delays(1) == delays(1) != delays(2)


@pytest.mark.parametrize(
    ("attempt", "jitter", "message"),
    [(-1, 0.0, "attempt must be at least 0"), (0, 1.5, "jitter must be between 0 and 1")],
)
def test_nonsense_is_refused(attempt: int, jitter: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backoff_delay(attempt, base=1.0, cap=2.0, jitter=jitter)


async def test_run_forever_waits_out_an_outage_and_logs_it_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="avtomatika.storage.redis.outages")
    server = RedisServer()
    server.start()
    client = Pipelined(server.url)
    waiting: asyncio.Queue[None] = asyncio.Queue()  # the step waits for a go
    go: asyncio.Queue[None] = asyncio.Queue()
    answers: asyncio.Queue[object] = asyncio.Queue()

    async def ping_when_told() -> None:
        waiting.put_nowait(None)
        await go.get()
        answers.put_nowait(await client.execute("PING"))

    def messages() -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in caplog.records]

    loop = asyncio.create_task(run_forever("test loop", ping_when_told))
    try:
        await waiting.get()
        go.put_nowait(None)
        assert await answers.get() == b"PONG"

        server.stop()
        for _ in range(3):  # three failed steps, each retried after its backoff
            await waiting.get()
            go.put_nowait(None)
        await waiting.get()
        assert [level for level, _ in messages()] == [logging.WARNING]
        assert messages()[0][1].startswith("test loop: Redis is unreachable")

        server.start()
        go.put_nowait(None)
        assert await answers.get() == b"PONG"
        await waiting.get()  # the step after the one that got through
        assert messages()[1:] == [(logging.INFO, "test loop: Redis is back")]
        assert answers.empty()  # the failed steps answered nothing
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
        await client.close()
        server.close()


async def test_run_forever_stops_once_not_running() -> None:
    steps: list[int] = []

    async def count() -> None:
        steps.append(len(steps))

    await run_forever("test loop", count, running=lambda: len(steps) < 3)

    assert steps == [0, 1, 2]
