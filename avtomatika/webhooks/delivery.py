"""One webhook delivery and one attempt at it, wherever deliveries wait
between attempts (in memory or in Redis, see :mod:`avtomatika.webhooks.outbox`).

An attempt's outcome:

- 2xx: delivered;
- 408, 429, 5xx, a connection error or a timeout: retryable;
- any other status (redirects are not followed: a redirect could point
  anywhere), an invalid URL, or an address that is not public: final.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from avtomatika.backoff import backoff_delay
from avtomatika.config import Settings
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

__all__ = ["CONCURRENCY", "Delivery", "Outcome", "Poster"]

CONCURRENCY = 4
"""Attempts made at once by one orchestrator process."""

_MAX_BACKOFF_SECONDS = 600.0
_RETRY_STATUSES = frozenset({408, 429})
_USER_AGENT = "avtomatika-webhooks"


@dataclass(slots=True, eq=False)  # eq=False: hashed by identity, kept in sets
class Delivery:
    """The webhook of one ended job; ``attempts`` counts those made so far,
    including the one under way."""

    job: Job
    delivery_id: str
    attempts: int = 0

    @property
    def event(self) -> str:
        return event_name(self.job)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt (or the orchestrator) concluded."""

    delivered: bool
    retry: bool
    detail: str
    status_code: int | None = None

    def stopped(self) -> Outcome:
        """This retryable outcome, made final because the process is stopping."""
        detail = f"{self.detail}; not retried: the orchestrator is stopping"
        return Outcome(False, False, detail, self.status_code)


class Poster:
    """Makes attempts over one HTTP session, which :meth:`open` creates and
    :meth:`close` ends; also decides how long to wait before the next one."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._resolver: PublicOnlyResolver | None = None

    def open(self) -> None:
        # The default resolver for WEBHOOK_ALLOW_PRIVATE; else one that refuses
        # names resolving to internal addresses.
        if not self._settings.webhook_allow_private:
            self._resolver = PublicOnlyResolver()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self._resolver, limit=CONCURRENCY),
            timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds),
            headers={"User-Agent": _USER_AGENT},
            trust_env=False,  # no proxy from the environment: it would see past the checks
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await resolver.close()  # the connector only closes a resolver it made

    def final(self, delivery: Delivery, outcome: Outcome) -> bool:
        """Whether no attempt follows ``outcome``."""
        last = delivery.attempts >= self._settings.webhook_max_attempts
        return outcome.delivered or not outcome.retry or last

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after failed attempt number ``attempts``:
        ``WEBHOOK_BACKOFF_BASE_SECONDS * 2**(attempts - 1)``, capped, with jitter."""
        # Jitter: receivers coming back up are not hit by every sender at once.
        return backoff_delay(
            max(attempts - 1, 0),
            base=self._settings.webhook_backoff_base_seconds,
            cap=_MAX_BACKOFF_SECONDS,
            jitter=0.5,
        )

    async def post(self, delivery: Delivery) -> Outcome:
        """One attempt (see the module's docstring for what it concludes)."""
        session = self._session
        if session is None:
            return Outcome(False, True, "the orchestrator is stopping")
        url = delivery.job.webhook_url
        refused = self._refused_literal(url)
        if refused is not None:
            return Outcome(False, False, refused)
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
                return Outcome(False, False, str(exc.os_error))
            return Outcome(False, True, f"cannot connect: {exc.os_error or exc}")
        except aiohttp.InvalidURL as exc:
            return Outcome(False, False, f"invalid URL: {exc}")
        except TimeoutError:
            return Outcome(False, True, "timed out")
        except aiohttp.ClientError as exc:
            return Outcome(False, True, f"{type(exc).__name__}: {exc}")
        detail = f"HTTP {status}"
        if 200 <= status < 300:
            return Outcome(True, False, detail, status)
        if 300 <= status < 400:
            detail += " (redirects are not followed)"
        return Outcome(False, status in _RETRY_STATUSES or status >= 500, detail, status)

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
