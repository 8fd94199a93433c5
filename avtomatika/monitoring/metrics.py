"""Prometheus metrics of one orchestrator (``GET /_public/metrics``).

Each :class:`Metrics` owns a ``CollectorRegistry``, never the process-wide
default one, so several orchestrators in one process (tests, embedding)
count separately.

Where the numbers come from:

- job and task events: a subscriber on the engine's event bus (counting is a
  few dictionary updates under a lock, so the listener does it inline
  instead of queueing work for a task of its own);
- ignored worker results: the engine's ``ignored_results`` signal, so every
  transport is counted and the engine imports nothing of Prometheus;
- cancel acknowledgement delays: the worker registry's ``cancel_acked``
  signal (seconds from push to ack, measured by the transport);
- rate-limited requests: :meth:`Metrics.count_rate_limited`, called by an
  HTTP middleware for every 429;
- queue depth and connected workers: read from storage and the worker
  registry when scraped (:meth:`Metrics.render`), so they are never stale;
- history events dropped: read when scraped from the source given to
  :meth:`Metrics.track_history_drops` (the history writer's ``dropped``);
- open HTTP connections, and those closed early (past a connection cap, or
  headers too slow): read when scraped from the sources given to
  :meth:`Metrics.track_connections` (the HTTP server's counts);
- ended jobs forgotten by the embedded store, by age or by size: read when
  scraped from its ``forgotten`` counts.

Labels carry names (blueprint, skill, status, transport, reason, route
template), never ids, so the number of series stays bounded.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from avtomatika.engine.core import Engine, ResultVerdict
from avtomatika.engine.events import E, JobEvent
from avtomatika.status import job_status_name
from avtomatika.storage.memory import MemoryStorage
from avtomatika.v1.worker_pb2 import WorkerInfo, WorkerStatus, WorkerTransport

__all__ = ["PREFIX", "Metrics"]

_M = TypeVar("_M", bound=MetricWrapperBase)

PREFIX = "avtomatika_"

# Jobs run from seconds to hours (video, inference, ETL).
_JOB_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
# A task waits for a worker from milliseconds (idle workers) to minutes.
_DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

# A worker acknowledges a cancel within milliseconds, or when its handler yields.
_CANCEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_WEBHOOK_OUTCOMES = {
    E.HISTORY_EVENT_TYPE_WEBHOOK_DELIVERED: "delivered",
    E.HISTORY_EVENT_TYPE_WEBHOOK_FAILED: "failed",
}
_OBSERVED_EVENTS = (
    E.HISTORY_EVENT_TYPE_JOB_CREATED,
    E.HISTORY_EVENT_TYPE_JOB_ENDED,
    E.HISTORY_EVENT_TYPE_TASK_PICKED_UP,
    *_WEBHOOK_OUTCOMES,
)


class Metrics:
    """The metrics of one engine; a ``Service``: :meth:`start` subscribes to
    the engine, :meth:`stop` unsubscribes (idempotent)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_created = Counter(
            f"{PREFIX}jobs_created", "Jobs created.", ["blueprint"], registry=r
        )
        self.jobs_ended = Counter(
            f"{PREFIX}jobs_ended",
            "Jobs that reached a terminal status.",
            ["blueprint", "status"],
            registry=r,
        )
        self.job_duration = Histogram(
            f"{PREFIX}job_duration_seconds",
            "Time from a job's creation to its terminal status.",
            ["blueprint"],
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.dispatch_latency = Histogram(
            f"{PREFIX}task_dispatch_latency_seconds",
            "Time a task waited in its queue until a worker picked it up.",
            ["skill"],
            buckets=_DISPATCH_BUCKETS,
            registry=r,
        )
        self.results_ignored = Counter(
            f"{PREFIX}results_ignored",
            "Worker results the engine refused (stale, late, cancelled, conflict).",
            ["reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            f"{PREFIX}rate_limited_requests",
            "HTTP requests answered 429 (rate limit or quota).",
            ["route"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            f"{PREFIX}webhook_deliveries",
            "Webhook deliveries by outcome.",
            ["outcome"],
            registry=r,
        )
        self.cancel_ack = Histogram(
            f"{PREFIX}cancel_ack_seconds",
            "Time from pushing a cancel to a worker to its acknowledgement.",
            buckets=_CANCEL_BUCKETS,
            registry=r,
        )
        self._jobs_created = _Series(self.jobs_created)
        self._jobs_ended = _Series(self.jobs_ended)
        self._job_duration = _Series(self.job_duration)
        self._dispatch_latency = _Series(self.dispatch_latency)
        self._live = _LiveGauges()
        r.register(self._live)
        if isinstance(engine.storage, MemoryStorage):
            r.register(_Forgotten(engine.storage.forgotten))
        self._history_drops: _HistoryDrops | None = None
        self._connections: _Connections | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    async def start(self) -> None:
        """Subscribe to the engine's events and signals."""
        if not self._unsubscribe:
            self._unsubscribe = [
                self._engine.events.subscribe(self._on_event, _OBSERVED_EVENTS),
                self._engine.ignored_results.subscribe(self._on_ignored),
                self._engine.workers.cancel_acked.subscribe(self.cancel_ack.observe),
            ]

    async def stop(self) -> None:
        """Unsubscribe. Idempotent."""
        unsubscribe, self._unsubscribe = self._unsubscribe, []
        for undo in unsubscribe:
            undo()

    def track_history_drops(self, dropped: Callable[[], int]) -> None:
        """Export ``dropped()`` (events the history writer lost, a running
        total) as ``avtomatika_history_events_dropped_total``."""
        if self._history_drops is not None:
            self.registry.unregister(self._history_drops)
        self._history_drops = _HistoryDrops(dropped)
        self.registry.register(self._history_drops)

    def track_connections(
        self, open_now: Callable[[], int], closed_early: Callable[[], Mapping[str, int]]
    ) -> None:
        """Export ``open_now()`` as ``avtomatika_http_connections_open`` and
        ``closed_early()`` (running totals by reason) as
        ``avtomatika_http_connections_closed_early_total{reason}``."""
        if self._connections is not None:
            self.registry.unregister(self._connections)
        self._connections = _Connections(open_now, closed_early)
        self.registry.register(self._connections)

    def count_rate_limited(self, route: str) -> None:
        """Count a 429 answered on ``route`` (a path template, never a path
        with ids in it)."""
        self.rate_limited.labels(route=route).inc()

    async def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header, and its content type
        (Prometheus text by default, OpenMetrics when asked for)."""
        depths = await self._engine.storage.queue_depths()
        # No await between refreshing the gauges and encoding: what is
        # rendered is one snapshot even with concurrent scrapes.
        self._live.refresh(depths, self._engine.workers.list())
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    def _on_event(self, item: JobEvent) -> None:
        # Only the types in _OBSERVED_EVENTS arrive here, three per one-task
        # job: the labelled series come from _Series caches, as .labels()
        # costs several times the increment.
        event, job = item.event, item.job
        if event.type == E.HISTORY_EVENT_TYPE_JOB_CREATED and job is not None:
            self._jobs_created(job.blueprint_name).inc()
        elif event.type == E.HISTORY_EVENT_TYPE_JOB_ENDED and job is not None:
            self._jobs_ended(job.blueprint_name, job_status_name(job.status)).inc()
            seconds = max(event.timestamp_ms - job.created_at_ms, 0) / 1000
            self._job_duration(job.blueprint_name).observe(seconds)
        elif event.type == E.HISTORY_EVENT_TYPE_TASK_PICKED_UP:
            # The engine names the task's type (its skill) in the message.
            skill = event.message or "unknown"
            self._dispatch_latency(skill).observe(event.duration_ms / 1000)
        elif event.type in _WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome=_WEBHOOK_OUTCOMES[event.type]).inc()

    def _on_ignored(self, verdict: ResultVerdict) -> None:
        self.results_ignored.labels(reason=verdict.reason or "unknown").inc()


class _Series(Generic[_M]):
    """A metric's labelled series by label values (in the order of its label
    names), looked up in Prometheus once per label set. The series live as
    long as the metric either way, so the cache holds no more than
    Prometheus already keeps."""

    def __init__(self, metric: _M) -> None:
        self._metric = metric
        self._series: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = self._metric.labels(*values)
        return series


def _name(enum_name: str, prefix: str) -> str:
    return enum_name.removeprefix(prefix).lower()


# Every transport and status but UNSPECIFIED (value 0), as label values.
_TRANSPORTS = [_name(n, "WORKER_TRANSPORT_") for n, v in WorkerTransport.items() if v]
_STATUSES = [_name(n, "WORKER_STATUS_") for n, v in WorkerStatus.items() if v]


class _LiveGauges(Collector):
    """Gauges read at scrape time: queued tasks by skill, connected workers
    by transport and status (every combination, zeros included, so a
    dashboard sees a drop to zero rather than a vanished series)."""

    def __init__(self) -> None:
        self._depths: Mapping[str, int] = {}
        self._workers: collections.Counter[tuple[str, str]] = collections.Counter()

    def refresh(self, depths: Mapping[str, int], workers: Sequence[WorkerInfo]) -> None:
        self._depths = dict(depths)
        self._workers = collections.Counter(
            (
                _name(WorkerTransport.Name(w.transport), "WORKER_TRANSPORT_"),
                _name(WorkerStatus.Name(w.status), "WORKER_STATUS_"),
            )
            for w in workers
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[Metric]:
        depth = GaugeMetricFamily(
            f"{PREFIX}queue_depth", "Tasks waiting in their queue, by skill.", labels=["skill"]
        )
        for skill, count in sorted(self._depths.items()):
            depth.add_metric([skill], count)
        workers = GaugeMetricFamily(
            f"{PREFIX}workers_connected",
            "Workers connected to this process, by transport and status.",
            labels=["transport", "status"],
        )
        combinations = {(t, s) for t in _TRANSPORTS for s in _STATUSES} | set(self._workers)
        for transport, status in sorted(combinations):
            workers.add_metric([transport, status], self._workers[(transport, status)])
        return [depth, workers]


class _HistoryDrops(Collector):
    """History events lost (queue full, or unwritten at shutdown), read from
    the writer at scrape time."""

    def __init__(self, dropped: Callable[[], int]) -> None:
        self._dropped = dropped

    def describe(self) -> Iterable[Metric]:
        return [self._family(None)]

    def collect(self) -> Iterable[Metric]:
        return [self._family(self._dropped())]

    @staticmethod
    def _family(value: int | None) -> Metric:
        return CounterMetricFamily(
            f"{PREFIX}history_events_dropped",
            "History events lost instead of slowing jobs down.",
            value=value,
        )


class _Connections(Collector):
    """The HTTP server's open connections and those it closed early, read
    from the server at scrape time."""

    def __init__(
        self, open_now: Callable[[], int], closed_early: Callable[[], Mapping[str, int]]
    ) -> None:
        self._open_now = open_now
        self._closed_early = closed_early

    def describe(self) -> Iterable[Metric]:
        return self._families(None, {})

    def collect(self) -> Iterable[Metric]:
        return self._families(self._open_now(), self._closed_early())

    @staticmethod
    def _families(open_now: int | None, closed: Mapping[str, int]) -> list[Metric]:
        gauge = GaugeMetricFamily(
            f"{PREFIX}http_connections_open", "Open REST connections.", value=open_now
        )
        counter = CounterMetricFamily(
            f"{PREFIX}http_connections_closed_early",
            "REST connections closed before a request was served: past a connection cap "
            "(server_cap, address_cap) or headers not received in time (header_timeout).",
            labels=["reason"],
        )
        for reason, count in sorted(closed.items()):
            counter.add_metric([reason], count)
        return [gauge, counter]


class _Forgotten(Collector):
    """Ended jobs the embedded store forgot, by reason: ``age``
    (``JOB_RETENTION_SECONDS``) or ``size`` (``JOB_RETENTION_MAX_BYTES``),
    read from the store's running counts at scrape time."""

    _REASONS = ("age", "size")

    def __init__(self, forgotten: Mapping[str, int]) -> None:
        self._forgotten = forgotten

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        return [self._family()]

    def _family(self) -> Metric:
        family = CounterMetricFamily(
            f"{PREFIX}jobs_evicted",
            "Ended jobs the embedded store forgot, by reason (age or size).",
            labels=["reason"],
        )
        for reason in self._REASONS:
            family.add_metric([reason], self._forgotten.get(reason, 0))
        return family
