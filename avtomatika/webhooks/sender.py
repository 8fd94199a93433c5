"""The webhook sender: a service that POSTs to ``webhook_url`` when a job ends.

Flow: the engine publishes ``job_ended`` -> the listener queues a delivery
(never blocking; at most ``_CAPACITY`` deliveries outstanding, beyond which a
delivery is refused and recorded as failed) -> one of ``_SENDERS`` tasks makes
an attempt -> on a retryable outcome the delivery waits out its backoff on a
timer, off the senders, so a dead endpoint never holds a sender.

An attempt's outcome:

- 2xx: delivered;
- 408, 429, 5xx, a connection error or a timeout: retried after
  ``WEBHOOK_BACKOFF_BASE_SECONDS * 2**(attempt - 1)`` (capped, with jitter),
  up to ``WEBHOOK_MAX_ATTEMPTS`` attempts in all;
- any other status (redirects are not followed: a redirect could point
  anywhere), an invalid URL, or an address that is not public: given up at
  once.

Each final outcome is published as ``webhook_delivered`` or ``webhook_failed``
(with the attempts made and the last HTTP status in ``details``), so it
appears in the job's history.

Deliveries live in memory: those still pending when the orchestrator stops
are recorded as failed, not resumed after a restart (a durable outbox belongs
with the Redis store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from avtomatika.clock import now_ms
from avtomatika.config import Settings
from avtomatika.events import E, EventBus, JobEvent, event
from avtomatika.payload import to_payload
from avtomatika.tasks import new_id
from avtomatika.v1.job_pb2 import Job
from avtomatika.webhooks.addresses import literal_address, non_public_kind
from avtomatika.webhooks.body import event_name, webhook_body
from avtomatika.webhooks.resolver import ForbiddenAddress, PublicOnlyResolver
from avtomatika.webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)

__all__ = ["WebhookSender"]

log = logging.getLogger(__name__)

_SENDERS = 4
_CAPACITY = 10_000
_MAX_BACKOFF_SECONDS = 600.0
_RETRY_STATUSES = frozenset({408, 429})
_USER_AGENT = "avtomatika-webhooks"


@dataclass(slots=True, eq=False)  # eq=False: hashed by identity, kept in a set
class _Delivery:
    job: Job
    delivery_id: str
    attempts: int = 0

    @property
    def event(self) -> str:
        return event_name(self.job)


@dataclass(frozen=True, slots=True)
class _Outcome:
    delivered: bool
    retry: bool
    detail: str
    status_code: int | None = None


class WebhookSender:
    """A service: subscribes to ``events`` at start, delivers until stopped.

    :attr:`delivered`, :attr:`failed`, :attr:`dropped` and :attr:`queued` are
    for the metrics endpoint.
    """

    def __init__(self, events: EventBus, settings: Settings) -> None:
        self._bus = events
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._resolver: PublicOnlyResolver | None = None
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._senders: list[asyncio.Task[None]] = []
        self._in_flight: set[_Delivery] = set()
        self._backing_off: dict[str, tuple[asyncio.TimerHandle, _Delivery]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._stopping = False
        self.delivered = 0
        """Deliveries a receiver accepted (2xx)."""
        self.failed = 0
        """Deliveries given up (including :attr:`dropped`)."""
        self.dropped = 0
        """Deliveries refused without an attempt: too many outstanding."""
        self._outstanding = 0

    @property
    def queued(self) -> int:
        """Deliveries accepted and not yet delivered or given up."""
        return self._outstanding

    async def start(self) -> None:
        if self._session is not None:
            return
        # The default resolver for WEBHOOK_ALLOW_PRIVATE; else one that refuses
        # names resolving to internal addresses.
        if not self._settings.webhook_allow_private:
            self._resolver = PublicOnlyResolver()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self._resolver, limit=_SENDERS),
            timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds),
            headers={"User-Agent": _USER_AGENT},
            trust_env=False,  # no proxy from the environment: it would see past the checks
        )
        self._stopping = False
        self._senders = [
            asyncio.create_task(self._send_loop(self._session), name=f"webhook-sender-{i}")
            for i in range(_SENDERS)
        ]
        self._unsubscribe = self._bus.subscribe(self._on_event, [E.HISTORY_EVENT_TYPE_JOB_ENDED])

    async def stop(self) -> None:
        """Stop intake; give queued deliveries one attempt within the grace
        period; record what is left as failed. Idempotent."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        self._stopping = True
        abandoned = [delivery for _, delivery in self._backing_off.values()]
        for handle, _ in self._backing_off.values():
            handle.cancel()
        self._backing_off.clear()
        senders, self._senders = self._senders, []
        if senders:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), self._settings.shutdown_grace_seconds)
            # Taken before cancelling: a cancelled sender forgets its delivery.
            abandoned.extend(self._in_flight)
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
        while not self._queue.empty():
            abandoned.append(self._queue.get_nowait())
            self._queue.task_done()
        for delivery in abandoned:
            stopped = _Outcome(False, False, "the orchestrator stopped before it was delivered")
            self._finish(delivery, stopped)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await resolver.close()  # the connector only closes a resolver it made

    def _on_event(self, item: JobEvent) -> None:
        job = item.job
        if item.event.type != E.HISTORY_EVENT_TYPE_JOB_ENDED or job is None:
            return
        if not job.webhook_url:
            return
        delivery = _Delivery(job, new_id())
        if self._outstanding >= _CAPACITY:
            self.dropped += 1
            self._outstanding += 1
            full = _Outcome(False, False, f"too many webhooks outstanding ({_CAPACITY})")
            # Not from inside the publish that called us: record it next.
            asyncio.get_running_loop().call_soon(self._finish, delivery, full)
            return
        self._outstanding += 1
        self._queue.put_nowait(delivery)

    async def _send_loop(self, session: aiohttp.ClientSession) -> None:
        while True:
            delivery = await self._queue.get()
            self._in_flight.add(delivery)
            try:
                await self._attempt(session, delivery)
            except Exception:
                log.exception("webhook %s: unexpected failure", delivery.delivery_id)
                self._finish(delivery, _Outcome(False, False, "internal error"))
            finally:
                self._in_flight.discard(delivery)
                self._queue.task_done()

    async def _attempt(self, session: aiohttp.ClientSession, delivery: _Delivery) -> None:
        delivery.attempts += 1
        outcome = await self._post(session, delivery)
        last = delivery.attempts >= self._settings.webhook_max_attempts
        if outcome.delivered or not outcome.retry or last:
            self._finish(delivery, outcome)
        elif self._stopping:
            self._finish(delivery, _stopped(outcome))
        else:
            delay = self._backoff(delivery.attempts)
            handle = asyncio.get_running_loop().call_later(delay, self._retry, delivery)
            self._backing_off[delivery.delivery_id] = (handle, delivery)

    def _retry(self, delivery: _Delivery) -> None:
        self._backing_off.pop(delivery.delivery_id, None)
        self._queue.put_nowait(delivery)

    def _backoff(self, attempts: int) -> float:
        base = self._settings.webhook_backoff_base_seconds
        delay = min(base * 2.0 ** (attempts - 1), _MAX_BACKOFF_SECONDS)
        # Jitter: receivers coming back up are not hit by every sender at once.
        return delay * random.uniform(0.5, 1.0)

    async def _post(self, session: aiohttp.ClientSession, delivery: _Delivery) -> _Outcome:
        url = delivery.job.webhook_url
        refused = self._refused_literal(url)
        if refused is not None:
            return _Outcome(False, False, refused)
        body = webhook_body(delivery.job)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: delivery.event,
            DELIVERY_HEADER: delivery.delivery_id,
            TIMESTAMP_HEADER: timestamp,
        }
        if self._settings.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(self._settings.webhook_secret, timestamp, body)
        try:
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ForbiddenAddress):
                return _Outcome(False, False, str(exc.os_error))
            return _Outcome(False, True, f"cannot connect: {exc.os_error or exc}")
        except aiohttp.InvalidURL as exc:
            return _Outcome(False, False, f"invalid URL: {exc}")
        except TimeoutError:
            return _Outcome(False, True, "timed out")
        except aiohttp.ClientError as exc:
            return _Outcome(False, True, f"{type(exc).__name__}: {exc}")
        detail = f"HTTP {status}"
        if 200 <= status < 300:
            return _Outcome(True, False, detail, status)
        if 300 <= status < 400:
            detail += " (redirects are not followed)"
        return _Outcome(False, status in _RETRY_STATUSES or status >= 500, detail, status)

    def _refused_literal(self, url: str) -> str | None:
        """aiohttp connects to a literal IP without asking the resolver, so
        literal IPs are checked here (job creation refused them already, but
        the setting may have changed since)."""
        if self._settings.webhook_allow_private:
            return None
        host = urlsplit(url).hostname or ""
        address = literal_address(host)
        kind = non_public_kind(address) if address is not None else None
        return str(ForbiddenAddress(host, host, kind)) if kind is not None else None

    def _finish(self, delivery: _Delivery, outcome: _Outcome) -> None:
        self._outstanding -= 1
        attempts = delivery.attempts
        if outcome.delivered:
            self.delivered += 1
            kind = E.HISTORY_EVENT_TYPE_WEBHOOK_DELIVERED
            message = f"{delivery.event} delivered ({outcome.detail}, attempt {attempts})"
            log.debug("webhook %s for job %s: %s", delivery.delivery_id, delivery.job.id, message)
        else:
            self.failed += 1
            kind = E.HISTORY_EVENT_TYPE_WEBHOOK_FAILED
            tried = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
            message = f"{delivery.event} not delivered {tried}: {outcome.detail}"
            log.warning("webhook %s for job %s: %s", delivery.delivery_id, delivery.job.id, message)
        record = event(kind, delivery.job.id, now_ms(), message=message)
        record.event.details.CopyFrom(
            to_payload(
                {
                    "event": delivery.event,
                    "delivery_id": delivery.delivery_id,
                    "attempts": attempts,
                    "status_code": outcome.status_code,
                }
            )
        )
        self._bus.publish([record])


def _stopped(outcome: _Outcome) -> _Outcome:
    detail = f"{outcome.detail}; not retried: the orchestrator is stopping"
    return _Outcome(False, False, detail, outcome.status_code)
