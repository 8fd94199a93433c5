"""``schedules.toml``: background jobs created on a timetable
(``SCHEDULES_CONFIG_PATH``; the format of Avtomatika 1.0b13).

One table per schedule; the table name is the schedule's name::

    [cleanup]
    blueprint = "system_cleanup"        # required: a registered blueprint
    interval_seconds = 3600             # every hour (on the hour: see below)
    input_data = { target = "tmp" }     # optional: the job's initial data

    [daily_report]
    blueprint = "report"
    daily_at = "09:00"                  # every day at 09:00 in TZ

    [weekly_backup]
    blueprint = "backup"
    weekly_days = ["mon", "fri"]        # these weekdays ...
    time = "23:30"                      # ... at this time

    [invoices]
    blueprint = "invoices"
    monthly_dates = [1, 15]             # these days of the month ...
    time = "06:00"                      # ... at this time

Exactly one of ``interval_seconds``, ``daily_at``, ``weekly_days`` (with
``time``) and ``monthly_dates`` (with ``time``). Optional: ``input_data``
(``initial_data`` is read the same way), ``dispatch_timeout`` and
``result_timeout`` in seconds (as for jobs created over the API), and
``enabled = false`` to keep a schedule in the file without running it.

Times are wall-clock times in the ``TZ`` time zone (an IANA name, default
UTC). Intervals are counted from the Unix epoch, not from start-up, so every
instance agrees on when a firing is due (``3600`` fires on the hour,
``86400`` at midnight UTC). On the day clocks spring forward, a time in the
skipped hour fires an hour later (02:30 at 03:30); on the day they fall back,
a time that happens twice fires at its first occurrence.

The file is validated whole at start-up: a TOML syntax error, a missing or
misspelt key, a value of the wrong type, two kinds of timetable in one table
or an impossible time raises :class:`~avtomatika.errors.ConfigError` naming
the file, the table, the key and the problem, and the orchestrator does not
start.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from avtomatika.access.token_files import read_toml, type_name
from avtomatika.errors import ConfigError

__all__ = [
    "Calendar",
    "Interval",
    "Schedule",
    "load_schedules",
    "parse_schedules",
    "time_zone",
]

_KINDS = ("interval_seconds", "daily_at", "weekly_days", "monthly_dates")
_KEYS = (
    "blueprint",
    *_KINDS,
    "time",
    "input_data",
    "initial_data",
    "dispatch_timeout",
    "result_timeout",
    "enabled",
)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
# A calendar timetable matches at least one day in any two months; a year
# bounds the search for the next (or last) matching day with room to spare.
_SEARCH_DAYS = 400


@dataclass(frozen=True, slots=True)
class Interval:
    """Every ``every_ms`` milliseconds, at multiples of it since the epoch."""

    every_ms: int

    def next_after(self, ms: int) -> int:
        """The first firing strictly after epoch ``ms``."""
        return (ms // self.every_ms + 1) * self.every_ms

    def latest_at_or_before(self, ms: int) -> int:
        """The last firing at or before epoch ``ms``."""
        return ms // self.every_ms * self.every_ms


@dataclass(frozen=True, slots=True)
class Calendar:
    """At ``at`` (wall clock in ``zone``) on every day, or only on some
    weekdays (0 = Monday) or some days of the month."""

    at: time
    zone: ZoneInfo
    weekdays: frozenset[int] | None = None
    dates: frozenset[int] | None = None

    def next_after(self, ms: int) -> int:
        """The first firing strictly after epoch ``ms``."""
        day = datetime.fromtimestamp(ms / 1000, self.zone).date()
        for offset in range(_SEARCH_DAYS):
            candidate = day + timedelta(days=offset)
            if self._matches(candidate) and (slot := self._slot(candidate)) > ms:
                return slot
        raise AssertionError("a calendar timetable matched no day in a year")

    def latest_at_or_before(self, ms: int) -> int:
        """The last firing at or before epoch ``ms``."""
        day = datetime.fromtimestamp(ms / 1000, self.zone).date()
        for offset in range(_SEARCH_DAYS):
            candidate = day - timedelta(days=offset)
            if self._matches(candidate) and (slot := self._slot(candidate)) <= ms:
                return slot
        raise AssertionError("a calendar timetable matched no day in a year")

    def _matches(self, day: date) -> bool:
        if self.weekdays is not None and day.weekday() not in self.weekdays:
            return False
        return self.dates is None or day.day in self.dates

    def _slot(self, day: date) -> int:
        # fold=0: a repeated wall time is its first occurrence, and a
        # skipped one is read with the offset from before the jump (an hour
        # later by the new offset).
        moment = datetime.combine(day, self.at, tzinfo=self.zone)
        return int(moment.timestamp()) * 1000


Rule = Interval | Calendar


@dataclass(frozen=True, slots=True)
class Schedule:
    """One table of ``schedules.toml``."""

    name: str
    blueprint: str
    rule: Rule
    input_data: dict[str, Any]
    dispatch_timeout: float | None = None
    result_timeout: float | None = None
    enabled: bool = True


def time_zone(name: str) -> ZoneInfo:
    """The ``TZ`` setting as a time zone (``""`` is UTC; a leading ``:``,
    as the C library allows, is ignored)."""
    key = name.removeprefix(":") or "UTC"
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"TZ {name!r} is not a known time zone; use an IANA name such as "
            "'UTC' or 'Europe/Berlin'"
        ) from None


def load_schedules(path: Path, zone: ZoneInfo) -> list[Schedule]:
    """The schedules defined in the TOML file at ``path``; calendar times
    are read in ``zone``."""
    return parse_schedules(read_toml(path), str(path), zone)


def parse_schedules(document: Mapping[str, Any], source: str, zone: ZoneInfo) -> list[Schedule]:
    """Validate a parsed ``schedules.toml`` (``source`` names it in errors)."""
    return [_schedule(source, name, table, zone) for name, table in document.items()]


def _schedule(source: str, name: str, table: Any, zone: ZoneInfo) -> Schedule:
    where = f"{source}: [{name}]"
    if not isinstance(table, dict):
        raise ConfigError(
            f"{source}: {name!r} must be a table ([{name}] with a blueprint and a "
            f"timetable), got {type_name(table)}"
        )
    for key in table:
        if key not in _KEYS:
            close = difflib.get_close_matches(key, _KEYS, n=1, cutoff=0.7)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(_KEYS)}"
            raise ConfigError(f"{where}: unknown key {key!r}; {hint}")
    blueprint = table.get("blueprint")
    if blueprint is None:
        raise ConfigError(f"{where}: key 'blueprint' is missing")
    if not isinstance(blueprint, str) or not blueprint:
        raise ConfigError(
            f"{where}: key 'blueprint' must be a blueprint's name, got {_shown(blueprint)}"
        )
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: key 'enabled' must be true or false, got {_shown(enabled)}")
    return Schedule(
        name=name,
        blueprint=blueprint,
        rule=_rule(where, table, zone),
        input_data=_input_data(where, table),
        dispatch_timeout=_seconds(where, table, "dispatch_timeout"),
        result_timeout=_seconds(where, table, "result_timeout"),
        enabled=enabled,
    )


def _rule(where: str, table: dict[str, Any], zone: ZoneInfo) -> Rule:
    kinds = [kind for kind in _KINDS if kind in table]
    if not kinds:
        raise ConfigError(f"{where}: no timetable; set one of {', '.join(repr(k) for k in _KINDS)}")
    if len(kinds) > 1:
        raise ConfigError(
            f"{where}: keys {kinds[0]!r} and {kinds[1]!r} are both set; a schedule has "
            "exactly one timetable"
        )
    kind = kinds[0]
    needs_time = kind in ("weekly_days", "monthly_dates")
    if needs_time and "time" not in table:
        raise ConfigError(f"{where}: key 'time' is missing (\"HH:MM\", required with {kind!r})")
    if not needs_time and "time" in table:
        raise ConfigError(
            f"{where}: key 'time' applies only to 'weekly_days' and 'monthly_dates', "
            f"not to {kind!r}"
        )
    if kind == "interval_seconds":
        return Interval(_interval_ms(where, table[kind]))
    if kind == "daily_at":
        return Calendar(_clock(where, kind, table[kind]), zone)
    at = _clock(where, "time", table["time"])
    if kind == "weekly_days":
        return Calendar(at, zone, weekdays=_weekdays(where, table[kind]))
    return Calendar(at, zone, dates=_dates(where, table[kind]))


def _interval_ms(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{where}: key 'interval_seconds' must be a number of seconds, got {_shown(value)}"
        )
    every_ms = round(value * 1000)
    if every_ms < 1:
        raise ConfigError(
            f"{where}: key 'interval_seconds' must be at least 0.001, got {_shown(value)}"
        )
    return every_ms


def _clock(where: str, key: str, value: Any) -> time:
    match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f'{where}: key {key!r} must be a 24-hour time "HH:MM" (e.g. "09:30"), '
            f"got {_shown(value)}"
        )
    return time(int(match[1]), int(match[2]))


def _weekdays(where: str, value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{where}: key 'weekly_days' must be a non-empty array of days such as "
            f'["mon", "fri"], got {_shown(value)}'
        )
    days: set[int] = set()
    for item in value:
        day = item.lower() if isinstance(item, str) else None
        if day in _DAYS:
            days.add(_DAYS.index(day))
        elif day in _FULL_DAYS:
            days.add(_FULL_DAYS.index(day))
        else:
            raise ConfigError(
                f"{where}: key 'weekly_days' has {_shown(item)}, which is not a day; "
                f"use {', '.join(_DAYS)}"
            )
    return frozenset(days)


def _dates(where: str, value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{where}: key 'monthly_dates' must be a non-empty array of days of the month "
            f"such as [1, 15], got {_shown(value)}"
        )
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 31:
            raise ConfigError(
                f"{where}: key 'monthly_dates' has {_shown(item)}; days of the month are "
                "integers from 1 to 31"
            )
    return frozenset(value)


def _input_data(where: str, table: dict[str, Any]) -> dict[str, Any]:
    if "input_data" in table and "initial_data" in table:
        raise ConfigError(
            f"{where}: keys 'input_data' and 'initial_data' are both set; they mean the "
            "same, keep one"
        )
    key = "initial_data" if "initial_data" in table else "input_data"
    data = table.get(key, {})
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: key {key!r} must be a table, got {type_name(data)}")
    try:
        json.dumps(data)
    except TypeError:
        # TOML has dates and times; a job's data is JSON.
        raise ConfigError(
            f"{where}: key {key!r} holds a TOML date or time, which job data (JSON) "
            "cannot carry; write it as a string"
        ) from None
    return data


def _seconds(where: str, table: dict[str, Any], key: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"{where}: key {key!r} must be a positive number of seconds, got {_shown(value)}"
        )
    return float(value)


def _shown(value: Any) -> str:
    """``value`` as an error message shows it: its TOML type, and the value
    itself when short."""
    if isinstance(value, str | int | float) and len(repr(value)) <= 40:
        return f"{type_name(value)} {value!r}"
    return type_name(value)
