"""Webhooks: a POST to the job's ``webhook_url`` when the job ends.

:class:`WebhookSender` (a service) listens for jobs ending, and delivers
from a few sender tasks with retries and exponential backoff (deliveries wait
in an outbox: in memory, or in Redis with ``REDIS_URL``, where they survive a
restart and every instance sends from it); each outcome is
published as a ``webhook_delivered`` or ``webhook_failed`` event, so it shows
in the job's history. Bodies are signed when ``WEBHOOK_SECRET`` is set (see
:mod:`avtomatika.webhooks.signing`), and addresses that are not public are
refused unless ``WEBHOOK_ALLOW_PRIVATE=true`` (see
:mod:`avtomatika.webhooks.addresses`).
"""

from __future__ import annotations

from avtomatika.webhooks.sender import WebhookSender
from avtomatika.webhooks.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify,
)

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookSender", "sign", "verify"]
