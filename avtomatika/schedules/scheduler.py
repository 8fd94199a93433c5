"""The scheduler: creates the jobs of ``schedules.toml`` when they are due,
once per firing however many instances run.

Each firing is a *slot*: a schedule's name and its due time in epoch
milliseconds. Every instance computes the same slots (intervals count from
the epoch, calendar times from ``TZ``), and before creating a slot's job an
instance claims the slot; only the one whose claim succeeds creates it.
With the embedded store the claims are this process's own; with ``REDIS_URL``
they are Redis keys (:mod:`avtomatika.schedules.redis_slots`), so instances on
one Redis create each slot's job exactly once between them.

Missed firings are not replayed in bulk:

- An instance that falls behind (a paused process, a Redis outage) fires
  only the latest slot that came due, and none that is more than
  :data:`LATE_LIMIT_SECONDS` overdue.
- Slots that came due while no instance ran are not replayed, except, with
  Redis, the latest one if it came due less than :data:`LATE_LIMIT_SECONDS`
  before start-up: the claim in Redis says whether another instance already
  fired it, so a restart across a due time loses nothing and doubles
  nothing. The embedded store forgets its claims when the process ends, so
  it fires nothing from before its start.

Jobs are created as :meth:`OrchestratorEngine.create_background_job
<avtomatika.server.OrchestratorEngine.create_background_job>` creates them
(owner ``__background__``, plan ``system``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from avtomatika.blueprint.context import ClientInfo
from avtomatika.clock import iso_from_ms, now_ms
from avtomatika.config import Settings
from avtomatika.engine.core import BACKGROUND_CLIENT, Engine
from avtomatika.errors import ConfigError, Unavailable
from avtomatika.schedules.timetable import Schedule, load_schedules, time_zone

__all__ = ["LATE_LIMIT_SECONDS", "LocalSlots", "Scheduler", "SlotClaims"]

log = logging.getLogger(__name__)

LATE_LIMIT_SECONDS = 60.0
"""A slot more overdue than this is skipped rather than fired late."""
_LATE_LIMIT_MS = int(LATE_LIMIT_SECONDS * 1000)
# Claims outlive the last moment any instance could still try the slot by
# this much, so clocks this far apart still agree on who fired it.
_CLOCK_SKEW_MS = 30_000
# Long waits are slept in pieces, so a wall clock that is set is noticed.
_MAX_SLEEP = 30.0
_RETRY_PAUSE = 1.0


class SlotClaims(Protocol):
    """Who fires a slot: the first to claim it."""

    @property
    def durable(self) -> bool:
        """Whether claims outlive this process (and other instances see them)."""
        ...

    async def claim(self, schedule: str, due_ms: int, ttl_ms: int) -> bool:
        """Take the slot; ``False`` if it was taken already. The claim is
        remembered for ``ttl_ms``. Raises :class:`Unavailable` when the
        claim cannot be made now; claiming again then is safe."""
        ...


class LocalSlots:
    """Claims within one process (the embedded store: one instance)."""

    durable = False

    def __init__(self) -> None:
        self._claimed: dict[tuple[str, int], int] = {}

    async def claim(self, schedule: str, due_ms: int, ttl_ms: int) -> bool:
        now = now_ms()
        self._claimed = {slot: until for slot, until in self._claimed.items() if until > now}
        if (schedule, due_ms) in self._claimed:
            return False
        self._claimed[(schedule, due_ms)] = now + ttl_ms
        return True


class Scheduler:
    """A service creating the jobs of ``SCHEDULES_CONFIG_PATH``.

    The file is read and validated when the scheduler is built; that every
    schedule names a registered blueprint is checked at :meth:`start`, once
    ``BLUEPRINTS_DIR`` is loaded. Start it after the engine and stop it
    before, like the other intakes: it creates jobs.
    """

    def __init__(self, engine: Engine, settings: Settings, path: Path) -> None:
        self._engine = engine
        self._settings = settings
        self._source = str(path)
        self.schedules = load_schedules(path, time_zone(settings.tz))
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Check the blueprints and start one timer per enabled schedule."""
        if self._loops:
            return
        for schedule in self.schedules:
            if schedule.enabled and schedule.blueprint not in self._engine.blueprints:
                known = ", ".join(sorted(self._engine.blueprints)) or "none"
                raise ConfigError(
                    f"{self._source}: [{schedule.name}]: key 'blueprint' names "
                    f"{schedule.blueprint!r}, which is not registered (registered: {known})"
                )
        claims = self._slot_claims()
        for schedule in self.schedules:
            if not schedule.enabled:
                log.info("schedule %s is disabled (enabled = false)", schedule.name)
                continue
            self._loops.append(
                asyncio.create_task(
                    self._run(schedule, claims), name=f"avtomatika-schedule-{schedule.name}"
                )
            )
        log.info("scheduler: %d schedule(s) from %s", len(self._loops), self._source)

    async def stop(self) -> None:
        """Stop the timers (a firing under way is abandoned). Idempotent."""
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    def _slot_claims(self) -> SlotClaims:
        if self._settings.redis_url:
            from avtomatika.schedules.redis_slots import RedisSlots
            from avtomatika.storage.redis import RedisStorage

            storage = self._engine.storage
            if isinstance(storage, RedisStorage):
                return RedisSlots(storage.client, storage.keys, storage.instance_id)
        return LocalSlots()

    async def _run(self, schedule: Schedule, claims: SlotClaims) -> None:
        rule = schedule.rule
        cursor = now_ms()
        last = rule.latest_at_or_before(cursor)
        if claims.durable and cursor - last <= _LATE_LIMIT_MS:
            cursor = last - 1  # that slot is next: fired unless another instance did
        while True:
            due = rule.next_after(cursor)
            now = now_ms()
            if now < due:
                await asyncio.sleep(min((due - now) / 1000, _MAX_SLEEP))
                continue
            latest = max(due, rule.latest_at_or_before(now))
            if latest > due:
                log.warning(
                    "schedule %s: firings from %s to before %s skipped (this instance fell "
                    "behind); firing the latest",
                    schedule.name,
                    iso_from_ms(due),
                    iso_from_ms(latest),
                )
            cursor = latest
            if now - latest > _LATE_LIMIT_MS:
                log.warning(
                    "schedule %s: the firing due at %s is over %gs late; skipped",
                    schedule.name,
                    iso_from_ms(latest),
                    LATE_LIMIT_SECONDS,
                )
                continue
            ttl_ms = min(rule.next_after(latest) - latest, _LATE_LIMIT_MS) + 2 * _CLOCK_SKEW_MS
            try:
                await self._fire(schedule, claims, latest, ttl_ms)
            except Exception:
                # One failed firing must not end the schedule.
                log.exception(
                    "schedule %s: the firing due at %s failed", schedule.name, iso_from_ms(latest)
                )

    async def _fire(self, schedule: Schedule, claims: SlotClaims, due: int, ttl_ms: int) -> None:
        """Claim the slot and create its job; while the store is unreachable,
        retry until the slot is too late."""
        claimed = waited = False
        while True:
            try:
                if not claimed:
                    if not await claims.claim(schedule.name, due, ttl_ms):
                        log.debug(
                            "schedule %s: %s fired by another instance",
                            schedule.name,
                            iso_from_ms(due),
                        )
                        return
                    claimed = True
                job_id = await self._engine.create_job(
                    schedule.blueprint,
                    schedule.input_data,
                    client=ClientInfo(
                        id=BACKGROUND_CLIENT.id,
                        plan="system",
                        params={
                            "source": "scheduler",
                            "schedule": schedule.name,
                            "due_at": iso_from_ms(due),
                        },
                    ),
                    dispatch_timeout=schedule.dispatch_timeout,
                    result_timeout=schedule.result_timeout,
                )
            except Unavailable as exc:
                _raise_if_cancelled()
                if now_ms() - due > _LATE_LIMIT_MS:
                    log.error(
                        "schedule %s: the firing due at %s is lost: the store stayed "
                        "unreachable (%s)",
                        schedule.name,
                        iso_from_ms(due),
                        exc,
                    )
                    return
                if not waited:
                    log.warning(
                        "schedule %s: the store is unreachable (%s); retrying the firing due at %s",
                        schedule.name,
                        exc,
                        iso_from_ms(due),
                    )
                waited = True
                await asyncio.sleep(_RETRY_PAUSE)
                continue
            log.info(
                "schedule %s: job %s created (due at %s)", schedule.name, job_id, iso_from_ms(due)
            )
            return


def _raise_if_cancelled() -> None:
    """redis-py sometimes swallows a cancellation that arrives mid-command
    (see :func:`avtomatika.storage.redis.check_cancelled`); a retry loop
    that went on would never let :meth:`Scheduler.stop` finish."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
