"""The history backends keep one contract (memory, SQLite, PostgreSQL), the
memory backend stays within its bounds, and the writer never blocks the
engine, never loses events silently, and flushes on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from avtomatika.engine.events import E, EventBus, JobEvent, event
from avtomatika.errors import Unavailable
from avtomatika.history import HistorySink, HistoryWriter, MemoryHistory, open_sink
from avtomatika.history.sqlite import SqliteHistory
from avtomatika.v1.history_pb2 import HistoryEvent
from tests.support.orchestrator import make_settings


def events_of(job_id: str, count: int, start_ms: int = 1_000) -> list[HistoryEvent]:
    # Several events share each millisecond, as the events of one commit do.
    return [
        event(E.HISTORY_EVENT_TYPE_STATE_ENTERED, job_id, start_ms + i // 3, state=f"s{i}").event
        for i in range(count)
    ]


def states(events: Sequence[HistoryEvent]) -> list[str]:
    return [e.state for e in events]


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def database_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """``HISTORY_DATABASE_URI`` for each backend (None: memory; for Redis,
    its ``REDIS_URL``)."""
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    dsn: str = request.getfixturevalue(
        "postgres_dsn" if request.param == "postgres" else "redis_url"
    )
    return dsn


@pytest.fixture
async def sink(database_uri: str | None) -> AsyncIterator[HistorySink]:
    if database_uri is not None and database_uri.startswith("redis://"):
        settings = make_settings(redis_url=database_uri)
    else:
        settings = make_settings(history_database_uri=database_uri)
    opened = await open_sink(settings)
    yield opened
    await opened.close()


async def test_a_job_lists_its_events_in_order_and_nothing_else(sink: HistorySink) -> None:
    mine, other = events_of("job-a", 7), events_of("job-b", 2)
    await sink.append(mine[:4])
    await sink.append(other)
    await sink.append(mine[4:])

    listed = await sink.list_for_job("job-a")

    assert [e.event_id for e in listed] == [e.event_id for e in mine]
    assert listed == mine  # every field survives the round trip
    assert await sink.list_for_job("unknown") == []


@pytest.mark.parametrize("database_uri", ["sqlite", "postgres", "redis"], indirect=True)
async def test_a_batch_written_again_adds_nothing(sink: HistorySink) -> None:
    # Only the stores can fail after committing (a lost acknowledgement), so
    # only they can be handed a batch twice; the memory backend never is.
    batch = events_of("job-retried", 3)
    await sink.append(batch)
    await sink.append(batch)  # the writer retrying after a lost commit acknowledgement
    assert await sink.list_for_job("job-retried") == batch


async def test_closing_twice_is_harmless_and_a_closed_sink_is_unavailable(
    sink: HistorySink, database_uri: str | None
) -> None:
    await sink.close()
    await sink.close()
    if database_uri is not None:
        with pytest.raises(Unavailable):
            await sink.list_for_job("job")


async def test_sqlite_tables_survive_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "history.db")
    first = await SqliteHistory.open(path)
    await first.append(events_of("job", 2))
    await first.close()
    second = await SqliteHistory.open(path)
    try:
        assert states(await second.list_for_job("job")) == ["s0", "s1"]
    finally:
        await second.close()


async def test_an_unopenable_sqlite_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="cannot open the history database"):
        await SqliteHistory.open(str(tmp_path / "missing-dir" / "history.db"))


# -- the memory backend's bounds --


async def test_memory_keeps_the_last_events_of_each_job() -> None:
    memory = MemoryHistory(events_per_job=3, max_events=100)
    await memory.append(events_of("job", 5))
    assert states(await memory.list_for_job("job")) == ["s2", "s3", "s4"]
    assert memory.total == 3


async def test_memory_forgets_the_least_recently_written_jobs_first() -> None:
    memory = MemoryHistory(events_per_job=10, max_events=6)
    await memory.append(events_of("a", 3))
    await memory.append(events_of("b", 3))
    await memory.append(events_of("a", 1, start_ms=5_000))  # 7 events: "b" goes, not "a"

    assert await memory.list_for_job("b") == []
    assert len(await memory.list_for_job("a")) == 4
    assert memory.total == 4


async def test_memory_never_exceeds_its_bound_whatever_the_load() -> None:
    memory = MemoryHistory(events_per_job=5, max_events=50)
    for job in range(198):
        await memory.append(events_of(f"job-{job}", 1 + job % 9))
        assert memory.total <= 50
    assert len(await memory.list_for_job("job-197")) == 5  # 9 events, the last 5 kept


# -- the writer --


class FlakySink:
    """A sink whose database is down for the first ``outage`` writes."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.memory = MemoryHistory(1000, 100_000)

    async def append(self, events: Sequence[HistoryEvent]) -> None:
        if self.outage:
            self.outage -= 1
            raise Unavailable("connection refused")
        await self.memory.append(events)

    async def list_for_job(self, job_id: str) -> list[HistoryEvent]:
        return await self.memory.list_for_job(job_id)

    async def close(self) -> None:
        return None


def publish(bus: EventBus, events: Sequence[HistoryEvent]) -> None:
    bus.publish([JobEvent(e, None) for e in events])


async def test_the_writer_retries_through_an_outage_and_keeps_the_order() -> None:
    bus, sink = EventBus(), FlakySink(outage=3)
    writer = HistoryWriter(bus, make_settings(), sink=sink, retry_initial_seconds=0.001)
    await writer.start()
    try:
        publish(bus, events_of("job", 5))
        publish(bus, events_of("job", 5, start_ms=9_000)[:2])
        await writer.flush()
        assert len(await writer.list_for_job("job")) == 7
        assert sink.outage == 0
        assert writer.dropped == 0
    finally:
        await writer.stop()


class CountingSink(MemoryHistory):
    """Memory history that records the size of every write."""

    def __init__(self) -> None:
        super().__init__(1000, 100_000)
        self.writes: list[int] = []
        self.wrote = asyncio.Event()

    async def append(self, events: Sequence[HistoryEvent]) -> None:
        self.writes.append(len(events))
        self.wrote.set()
        await super().append(events)


async def test_under_load_the_writer_gathers_events_into_fewer_writes() -> None:
    bus, sink = EventBus(), CountingSink()
    writer = HistoryWriter(bus, make_settings(), sink=sink)
    await writer.start()
    try:
        publish(bus, events_of("job", 20))  # a burst: one big write
        await sink.wrote.wait()
        # Events trickling in right after it (one per loop turn) wait for
        # each other instead of going one write each.
        for n in range(5):
            publish(bus, events_of("job", 1, start_ms=5_000 + n))
            await asyncio.sleep(0)
        await writer.flush()
        assert sink.writes == [20, 5]
        assert len(await writer.list_for_job("job")) == 25
    finally:
        await writer.stop()


async def test_a_full_queue_drops_and_counts_and_logs_once_per_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    writer = HistoryWriter(bus, make_settings(history_queue_size=2), sink=MemoryHistory(100, 100))
    await writer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="avtomatika.history.writer"):
            # Published synchronously: the writer cannot run in between.
            publish(bus, events_of("job", 10))
        assert writer.dropped == 8
        full = [r for r in caplog.records if "queue is full" in r.getMessage()]
        assert len(full) == 1
    finally:
        await writer.stop()


async def test_progress_is_not_kept() -> None:
    bus = EventBus()
    writer = HistoryWriter(bus, make_settings(), sink=MemoryHistory(100, 100))
    await writer.start()
    try:
        bus.publish([event(E.HISTORY_EVENT_TYPE_PROGRESS, "job", 1, message="50%")])
        publish(bus, events_of("job", 1))
    finally:
        await writer.stop()
    assert writer.written == 1


async def test_stop_flushes_what_is_queued(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'history.db'}"
    bus = EventBus()
    writer = HistoryWriter(bus, make_settings(history_database_uri=uri))
    await writer.start()
    publish(bus, events_of("job", 1200))  # more than one batch
    await writer.stop()
    await writer.stop()  # idempotent

    reopened = await open_sink(make_settings(history_database_uri=uri))
    try:
        assert len(await reopened.list_for_job("job")) == 1200
    finally:
        await reopened.close()
    assert (writer.written, writer.dropped) == (1200, 0)


async def test_what_an_outage_keeps_from_being_written_by_stop_is_counted() -> None:
    bus = EventBus()
    writer = HistoryWriter(
        bus, make_settings(shutdown_grace_seconds=0.05), sink=FlakySink(outage=10**9)
    )
    await writer.start()
    publish(bus, events_of("job", 4))
    await writer.stop()
    assert (writer.written, writer.dropped, writer.queued) == (0, 4, 0)


async def test_a_stopped_writer_cannot_be_read() -> None:
    writer = HistoryWriter(EventBus(), make_settings())
    with pytest.raises(Unavailable):
        await writer.list_for_job("job")
