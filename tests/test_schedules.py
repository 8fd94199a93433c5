"""Scheduled background jobs (``SCHEDULES_CONFIG_PATH``): the file format and
its errors, timetables, jobs created through a real orchestrator and its
workers, and each firing created once by several instances on one Redis."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from avtomatika import ActionFactory, Config, StateMachineBlueprint
from avtomatika.errors import ConfigError
from avtomatika.schedules.timetable import Calendar, Interval, load_schedules, time_zone
from avtomatika.storage.redis import Keys
from avtomatika.worker import TaskContext
from tests.support.orchestrator import StartOrchestrator
from tests.support.redis import RedisServer
from tests.support.sdk import serving
from tests.support.serve import serve_env
from tests.support.waiting import wait_until

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def ms(text: str) -> int:
    """Epoch ms of an ISO time with an offset."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedules.toml"
    path.write_text(text)
    return path


def finishing(name: str, runs: list[dict[str, Any]]) -> StateMachineBlueprint:
    """start -> done, recording each run's initial data and owner."""
    bp = StateMachineBlueprint(name, api_endpoint=f"/jobs/{name}", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done(job_id: str, initial_data: dict[str, Any], client: Any) -> None:
        runs.append({"job_id": job_id, "data": initial_data, "plan": client.plan})

    return bp


# -- the file --


def test_every_timetable_of_the_1_0b13_format_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [cleanup]
        blueprint = "system_cleanup"
        interval_seconds = 3600
        input_data = { target = "temp_files" }

        [daily_report]
        blueprint = "generate_report"
        daily_at = "09:00"
        dispatch_timeout = 30
        result_timeout = 600

        [weekly_backup]
        blueprint = "full_backup"
        weekly_days = ["fri", "Mon"]
        time = "23:00"

        [invoices]
        blueprint = "invoices"
        monthly_dates = [1, 15]
        time = "06:30"
        enabled = false

        [maintenance_task]
        blueprint = "periodic_maintenance"
        interval_seconds = 0.5

        [maintenance_task.initial_data]
        task_type = "cleanup"
        """,
    )
    cleanup, daily, weekly, invoices, maintenance = load_schedules(path, BERLIN)
    assert (cleanup.name, cleanup.blueprint) == ("cleanup", "system_cleanup")
    assert cleanup.rule == Interval(3_600_000)
    assert cleanup.input_data == {"target": "temp_files"}
    assert isinstance(daily.rule, Calendar)
    assert (daily.rule.at.hour, daily.rule.at.minute, daily.rule.zone) == (9, 0, BERLIN)
    assert (daily.dispatch_timeout, daily.result_timeout) == (30.0, 600.0)
    assert isinstance(weekly.rule, Calendar)
    assert weekly.rule.weekdays == frozenset({0, 4})
    assert isinstance(invoices.rule, Calendar)
    assert invoices.rule.dates == frozenset({1, 15})
    assert not invoices.enabled
    assert cleanup.enabled
    assert maintenance.rule == Interval(500)
    assert maintenance.input_data == {"task_type": "cleanup"}


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ('interval_seconds = 60', "'blueprint'", "missing"),
        ('blueprint = 3\ninterval_seconds = 60', "'blueprint'", "an integer"),
        ('blueprint = "b"', "interval_seconds", "no timetable"),
        ('blueprint = "b"\ninterval_seconds = 60\ndaily_at = "09:00"', "'daily_at'", "both"),
        ('blueprint = "b"\ndaily_at = "25:00"', "'daily_at'", "HH:MM"),
        ('blueprint = "b"\ndaily_at = "9:00"', "'daily_at'", "HH:MM"),
        ('blueprint = "b"\ndaily_at = 900', "'daily_at'", "an integer"),
        ('blueprint = "b"\nweekly_days = ["fri"]', "'time'", "missing"),
        ('blueprint = "b"\nweekly_days = ["fri"]\ntime = "23:60"', "'time'", "HH:MM"),
        ('blueprint = "b"\nweekly_days = ["friyay"]\ntime = "10:00"', "'weekly_days'", "friyay"),
        ('blueprint = "b"\nweekly_days = []\ntime = "10:00"', "'weekly_days'", "non-empty"),
        ('blueprint = "b"\nmonthly_dates = [0]\ntime = "10:00"', "'monthly_dates'", "1 to 31"),
        ('blueprint = "b"\nmonthly_dates = [32]\ntime = "10:00"', "'monthly_dates'", "1 to 31"),
        ('blueprint = "b"\nweekly_days = ["fri"]\nmonthly_dates = [1]\ntime = "10:00"',
         "'monthly_dates'", "both"),
        ('blueprint = "b"\ndaily_at = "09:00"\ntime = "10:00"', "'time'", "only"),
        ('blueprint = "b"\ninterval_seconds = 0', "'interval_seconds'", "at least"),
        ('blueprint = "b"\ninterval_seconds = "60"', "'interval_seconds'", "a string"),
        ('blueprint = "b"\ninterval_seconds = 60\ninput_data = 1', "'input_data'", "a table"),
        ('blueprint = "b"\ninterval_seconds = 60\ninput_data = { at = 1979-05-27 }',
         "'input_data'", "date or time"),
        ('blueprint = "b"\ninterval_seconds = 60\ninput_data = {}\ninitial_data = {}',
         "'initial_data'", "both"),
        ('blueprint = "b"\ninterval_seconds = 60\nresult_timeout = -1', "'result_timeout'",
         "positive"),
        ('blueprint = "b"\ninterval_seconds = 60\nenabled = "no"', "'enabled'", "true or false"),
        ('blueprint = "b"\ninterval_second = 60', "'interval_second'", "did you mean"),
    ],
)  # fmt: skip
def test_a_bad_table_stops_start_up_naming_file_table_and_key(
    tmp_path: Path, table: str, key: str, problem: str
) -> None:
    path = write(tmp_path, f'[good]\nblueprint = "b"\ndaily_at = "08:00"\n\n[nightly]\n{table}\n')
    with pytest.raises(ConfigError) as raised:
        load_schedules(path, UTC_ZONE)
    message = str(raised.value)
    assert str(path) in message
    assert "[nightly]" in message
    assert key in message
    assert problem in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [("nightly = 3", "must be a table"), ("[nightly\nblueprint = 1", "not valid TOML")],
)
def test_a_file_that_is_not_tables_of_schedules_is_refused(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=problem) as raised:
        load_schedules(path, UTC_ZONE)
    assert str(path) in str(raised.value)


def test_tz_must_be_a_known_time_zone() -> None:
    assert time_zone("") == UTC_ZONE
    assert time_zone(":Europe/Berlin") == BERLIN
    with pytest.raises(ConfigError, match="TZ 'Mars/Olympus'"):
        time_zone("Mars/Olympus")


def test_1_0b13_config_sets_the_schedules_file_and_tz(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = Config()
    config.SCHEDULES_CONFIG_PATH = str(path)
    config.TZ = "Europe/Berlin"
    settings = config.to_settings()
    assert (settings.schedules_config_path, settings.tz) == (path, "Europe/Berlin")
    config.SCHEDULES_CONFIG_PATH = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="SCHEDULES_CONFIG_PATH"):
        config.to_settings()


# -- timetables --


def test_intervals_count_from_the_epoch() -> None:
    rule = Interval(200)
    assert rule.next_after(1000) == 1200
    assert rule.next_after(1199) == 1200
    assert rule.latest_at_or_before(1399) == 1200
    assert rule.latest_at_or_before(1400) == 1400


def test_calendar_times_are_wall_clock_times_in_tz() -> None:
    daily = Calendar(datetime.strptime("09:00", "%H:%M").time(), BERLIN)
    # Berlin is UTC+1 in winter, UTC+2 in summer.
    assert daily.next_after(ms("2026-01-10T12:00:00+00:00")) == ms("2026-01-11T08:00:00+00:00")
    assert daily.next_after(ms("2026-07-10T06:59:59+00:00")) == ms("2026-07-10T07:00:00+00:00")
    assert daily.latest_at_or_before(ms("2026-07-10T06:59:59+00:00")) == ms(
        "2026-07-09T07:00:00+00:00"
    )
    weekly = Calendar(
        datetime.strptime("23:30", "%H:%M").time(), UTC_ZONE, weekdays=frozenset({0, 4})
    )
    # 2026-11-24 is a Tuesday: next Friday, then Monday.
    friday = weekly.next_after(ms("2026-11-24T10:00:00+00:00"))
    assert friday == ms("2026-11-27T23:30:00+00:00")
    assert weekly.next_after(friday) == ms("2026-11-30T23:30:00+00:00")
    monthly = Calendar(datetime.strptime("06:00", "%H:%M").time(), UTC_ZONE, dates=frozenset({31}))
    assert monthly.next_after(ms("2026-02-01T00:00:00+00:00")) == ms("2026-03-31T06:00:00+00:00")
    assert monthly.latest_at_or_before(ms("2026-03-30T00:00:00+00:00")) == ms(
        "2026-01-31T06:00:00+00:00"
    )


def test_daylight_saving_days_fire_once() -> None:
    rule = Calendar(datetime.strptime("02:30", "%H:%M").time(), BERLIN)
    # 29 March 2026: 02:00 CET becomes 03:00 CEST; 02:30 fires at 03:30 CEST.
    assert rule.next_after(ms("2026-03-29T00:00:00+00:00")) == ms("2026-03-29T03:30:00+02:00")
    # 25 October 2026: 02:30 happens twice (CEST, then CET); the first fires.
    first = rule.next_after(ms("2026-10-25T00:00:00+00:00"))
    assert first == ms("2026-10-25T02:30:00+02:00")
    assert rule.next_after(first) == ms("2026-10-26T02:30:00+01:00")


# -- through a real orchestrator --


async def test_scheduled_jobs_run_through_a_grpc_worker(
    tmp_path: Path, start_orchestrator: StartOrchestrator
) -> None:
    runs: list[dict[str, Any]] = []
    bp = StateMachineBlueprint("stamp", api_endpoint="/jobs/stamp", api_version="v1")

    @bp.handler_for("start", is_start=True)
    async def start(initial_data: dict[str, Any], actions: ActionFactory) -> None:
        actions.dispatch_task("stamp", params=initial_data, transitions={"success": "done"})

    @bp.handler_for("done", is_end=True, outcome="finished")
    async def done(job_id: str, state_history: dict[str, Any], client: Any) -> None:
        runs.append({"job_id": job_id, "history": state_history, "plan": client.plan})

    async def stamp(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        return {"stamped": params["batch"]}

    path = write(
        tmp_path,
        '[stamping]\nblueprint = "stamp"\ninterval_seconds = 0.2\ninput_data = { batch = "b-7" }\n',
    )
    orchestrator = await start_orchestrator([bp], schedules_config_path=path)
    async with serving(orchestrator, {"stamp": stamp}):
        await wait_until(lambda: len(runs) >= 3)
    assert len({run["job_id"] for run in runs}) == len(runs)
    for run in runs:
        assert run["plan"] == "system"
        assert run["history"]["stamped"] == "b-7"
        job = await orchestrator.get_job(run["job_id"])
        assert job["status"] == "finished"


async def test_a_disabled_schedule_creates_nothing_and_others_run(
    tmp_path: Path, start_orchestrator: StartOrchestrator
) -> None:
    off: list[dict[str, Any]] = []
    on: list[dict[str, Any]] = []
    path = write(
        tmp_path,
        '[off]\nblueprint = "off"\ninterval_seconds = 0.05\nenabled = false\n\n'
        '[on]\nblueprint = "on"\ninterval_seconds = 0.05\n',
    )
    await start_orchestrator(
        [finishing("off", off), finishing("on", on)], schedules_config_path=path
    )
    await wait_until(lambda: len(on) >= 5)
    assert off == []


async def test_a_schedule_naming_an_unknown_blueprint_stops_start_up(
    tmp_path: Path, start_orchestrator: StartOrchestrator
) -> None:
    path = write(tmp_path, '[nightly]\nblueprint = "nope"\ndaily_at = "03:00"\n')
    with pytest.raises(ConfigError) as raised:
        await start_orchestrator([finishing("known", [])], schedules_config_path=path)
    message = str(raised.value)
    for part in (str(path), "[nightly]", "'blueprint'", "'nope'", "known"):
        assert part in message


# -- several instances on one Redis --


async def _count(client: aioredis.Redis, pattern: str) -> int:
    return len([key async for key in client.scan_iter(match=pattern, count=1000)])


async def test_two_instances_on_one_redis_create_each_firing_once(
    tmp_path: Path, start_orchestrator: StartOrchestrator, redis_url: str
) -> None:
    runs: list[dict[str, Any]] = []
    path = write(tmp_path, '[tick]\nblueprint = "tick"\ninterval_seconds = 0.1\n')
    first = await start_orchestrator(
        [finishing("tick", runs)], redis_url=redis_url, instance_id="a", schedules_config_path=path
    )
    second = await start_orchestrator(
        [finishing("tick", runs)], redis_url=redis_url, instance_id="b", schedules_config_path=path
    )
    await wait_until(lambda: len(runs) >= 10)
    await second.stop()
    await first.stop()
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        slots = [key async for key in client.scan_iter(match=f"{keys.root}:slot:tick:*")]
        claimants = {str(await client.get(key)).split("/")[0] for key in slots}
        jobs = await _count(client, keys.job("*"))
        ttls = [await client.pttl(key) for key in slots]
    finally:
        await client.aclose()
    # Every firing claimed once, by one of the two, and one job per claim:
    # had both created a firing's job, there would be more jobs than slots.
    assert jobs == len(slots) >= 10
    assert claimants <= {"a", "b"}
    assert len({run["job_id"] for run in runs}) == len(runs)
    # The claims expire: no key is left behind for good.
    assert all(0 < ttl <= 120_000 for ttl in ttls)


async def test_a_restart_fires_the_firing_it_missed_once(
    tmp_path: Path,
    start_orchestrator: StartOrchestrator,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every 50 s: when an instance starts, the latest firing is under a
    # minute old, so with Redis it is fired unless someone already did.
    path = write(tmp_path, '[slow]\nblueprint = "slow"\ninterval_seconds = 50\n')
    runs: list[dict[str, Any]] = []
    first = await start_orchestrator(
        [finishing("slow", runs)], redis_url=redis_url, schedules_config_path=path
    )
    await wait_until(lambda: len(runs) == 1)
    await first.stop()
    caplog.set_level(logging.DEBUG, logger="avtomatika.schedules.scheduler")
    second = await start_orchestrator(
        [finishing("slow", runs)], redis_url=redis_url, schedules_config_path=path
    )
    # The restart finds that firing claimed and leaves it.
    await wait_until(lambda: "fired by another instance" in caplog.text)
    await second.stop()
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    try:
        slots = await _count(client, f"{keys.root}:slot:slow:*")
        jobs = await _count(client, keys.job("*"))
    finally:
        await client.aclose()
    # One job per firing (two only if the next firing came due meanwhile).
    assert jobs == slots


async def test_firings_resume_after_a_redis_outage(
    tmp_path: Path, start_orchestrator: StartOrchestrator
) -> None:
    server = RedisServer(persistent=True)
    server.start()
    try:
        runs: list[dict[str, Any]] = []
        path = write(tmp_path, '[tick]\nblueprint = "tick"\ninterval_seconds = 0.1\n')
        orchestrator = await start_orchestrator(
            [finishing("tick", runs)], redis_url=server.url, schedules_config_path=path
        )
        await wait_until(lambda: len(runs) >= 2)
        server.stop()
        server.start()
        seen = len(runs)
        await wait_until(lambda: len(runs) >= seen + 3)
        await orchestrator.stop()
    finally:
        server.close()


# -- the command --


async def test_serve_with_a_bad_schedules_file_exits_2_naming_it(tmp_path: Path) -> None:
    # Found at start-up, once the engine runs: the partial start is undone.
    path = write(tmp_path, '[nightly]\nblueprint = "nope"\ndaily_at = "03:00"\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avtomatika", "serve", "--schedules-config-path", str(path),
        env=serve_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await process.communicate())[0].decode()
    assert process.returncode == 2, output
    for part in (str(path), "[nightly]", "'blueprint'", "'nope'"):
        assert part in output
    assert "Traceback" not in output
