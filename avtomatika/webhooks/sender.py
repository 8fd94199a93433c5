"""The webhook sender: a service that POSTs to ``webhook_url`` when a job ends
or starts waiting for a person.

Flow: the engine publishes ``job_ended`` (or ``approval_requested``) -> the
listener puts a delivery in the outbox (never blocking; at most
``_CAPACITY`` deliveries held by this process, beyond which a delivery is
refused and recorded as failed) -> one of ``CONCURRENCY`` sender tasks takes
it when due and makes an attempt -> on a retryable outcome (see
:mod:`avtomatika.webhooks.delivery`) it goes back to the outbox to wait out
``WEBHOOK_BACKOFF_BASE_SECONDS * 2**(attempt - 1)`` (capped, with jitter),
off the senders, so a dead endpoint never holds one;
``WEBHOOK_MAX_ATTEMPTS`` attempts in all.

Each final outcome is published as ``webhook_delivered`` or ``webhook_failed``
(with the attempts made and the last HTTP status in ``details``), so it
appears in the job's history.

Where deliveries wait (:mod:`avtomatika.webhooks.outbox`):

- the embedded store: in memory; those still pending when the orchestrator
  stops get one attempt within ``SHUTDOWN_GRACE_SECONDS``, then are recorded
  as failed, not resumed after a restart;
- ``REDIS_URL``: in Redis (:mod:`avtomatika.webhooks.redis_outbox`), where
  every instance's senders take them, so a webhook is sent once cluster-wide
  and survives a restart of the orchestrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from avtomatika.clock import now_ms
from avtomatika.config import Settings
from avtomatika.engine.events import E, EventBus, JobEvent, event
from avtomatika.payload import to_payload
from avtomatika.webhooks.delivery import CONCURRENCY, Delivery, Outcome, Poster
from avtomatika.webhooks.outbox import MemoryOutbox, Outbox

__all__ = ["WebhookSender"]

log = logging.getLogger(__name__)

_CAPACITY = 10_000
# The events a webhook is sent for; its name and body follow from the job's
# status (see avtomatika.webhooks.body).
_NOTIFIED = (E.HISTORY_EVENT_TYPE_JOB_ENDED, E.HISTORY_EVENT_TYPE_APPROVAL_REQUESTED)


class WebhookSender:
    """A service: subscribes to ``events`` at start, delivers until stopped.

    :attr:`delivered`, :attr:`failed`, :attr:`dropped` and :attr:`queued` are
    for the metrics endpoint; they count what this process did.
    """

    def __init__(self, events: EventBus, settings: Settings) -> None:
        self._bus = events
        self._settings = settings
        self._poster = Poster(settings)
        self._outbox: Outbox | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._in_flight: set[Delivery] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._stopping = False
        self.delivered = 0
        """Deliveries a receiver accepted (2xx)."""
        self.failed = 0
        """Deliveries given up (including :attr:`dropped`)."""
        self.dropped = 0
        """Deliveries refused without an attempt: too many outstanding."""
        self._refused = 0

    @property
    def queued(self) -> int:
        """Deliveries this process holds, not yet delivered or given up."""
        held = self._outbox.backlog if self._outbox is not None else 0
        return held + self._refused

    async def start(self) -> None:
        if self._outbox is not None:
            return
        outbox = self._new_outbox()
        await outbox.open()
        self._outbox = outbox
        self._poster.open()
        self._stopping = False
        self._senders = [
            asyncio.create_task(self._send_loop(outbox), name=f"webhook-sender-{i}")
            for i in range(CONCURRENCY)
        ]
        self._unsubscribe = self._bus.subscribe(self._on_event, _NOTIFIED)

    async def stop(self) -> None:
        """Stop intake; let what is under way settle within the grace period;
        record what the outbox cannot keep as failed. Idempotent."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        self._stopping = True
        outbox, self._outbox = self._outbox, None
        senders, self._senders = self._senders, []
        if outbox is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(outbox.drain(), self._settings.shutdown_grace_seconds)
        # Taken before cancelling: a cancelled sender forgets its delivery.
        interrupted = list(self._in_flight)
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        self._in_flight.clear()
        stopped = Outcome(False, False, "the orchestrator stopped before it was delivered")
        for delivery in await outbox.close(interrupted):
            self._finish(delivery, stopped)
        await self._poster.close()

    def _new_outbox(self) -> Outbox:
        if not self._settings.redis_url:
            return MemoryOutbox()
        # Imported here: a process without Redis never loads the client.
        from avtomatika.webhooks.redis_outbox import RedisOutbox

        return RedisOutbox(self._settings)

    def _on_event(self, item: JobEvent) -> None:
        job = item.job
        if item.event.type not in _NOTIFIED or job is None:
            return
        if not job.webhook_url or self._outbox is None:
            return
        # The event's id: one per job end (or wait), whichever instance sends it.
        delivery = Delivery(job, item.event.event_id)
        if self._outbox.backlog >= _CAPACITY:
            self.dropped += 1
            self._refused += 1
            full = Outcome(False, False, f"too many webhooks outstanding ({_CAPACITY})")
            # Not from inside the publish that called us: record it next.
            asyncio.get_running_loop().call_soon(self._refuse, delivery, full)
            return
        self._outbox.put(delivery)

    def _refuse(self, delivery: Delivery, outcome: Outcome) -> None:
        self._refused -= 1
        self._finish(delivery, outcome)

    async def _send_loop(self, outbox: Outbox) -> None:
        while True:
            delivery = await outbox.take()
            self._in_flight.add(delivery)
            try:
                await self._attempt(outbox, delivery)
            except Exception:
                log.exception("webhook %s: could not be settled", delivery.delivery_id)
            finally:
                self._in_flight.discard(delivery)

    async def _attempt(self, outbox: Outbox, delivery: Delivery) -> None:
        try:
            outcome = await self._poster.post(delivery)
        except Exception:
            log.exception("webhook %s: unexpected failure", delivery.delivery_id)
            outcome = Outcome(False, False, "internal error")
        final = self._poster.final(delivery, outcome)
        if not final and self._stopping and not outbox.durable:
            outcome, final = outcome.stopped(), True
        if final:
            await outbox.done(delivery)
            self._finish(delivery, outcome)
        else:
            await outbox.retry(delivery, self._poster.backoff(delivery.attempts))

    def _finish(self, delivery: Delivery, outcome: Outcome) -> None:
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
