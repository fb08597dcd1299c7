"""The pure cron module: parsing, DST-correct fire times, timestamps, durations, policies and plans.

Every time is injected; nothing here reads a clock, starts a loop or needs the broker.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from daemon.scheduling.cron import CronError, CronSpec
from daemon.scheduling.policy import Plan, Policy, parse_duration, parse_timestamp, plan

OSLO = ZoneInfo("Europe/Oslo")
NEW_YORK = ZoneInfo("America/New_York")
# (zone, spring-forward day, fall-back day) in 2024
TRANSITIONS = [
    ("Europe/Oslo", date(2024, 3, 31), date(2024, 10, 27)),
    ("America/New_York", date(2024, 3, 10), date(2024, 11, 3)),
]
TICK = timedelta(microseconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def local_day(spec: CronSpec, day: date) -> list[datetime]:
    """Every fire whose instant falls on ``day`` in the spec's own zone."""
    zone = ZoneInfo(spec.time_zone)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return spec.fires_between(start - TICK, end - TICK, limit=100_000)


def walls(fires: list[datetime], zone: ZoneInfo) -> list[str]:
    return [f.astimezone(zone).strftime("%H:%M:%S%z") for f in fires]


# -- parsing --------------------------------------------------------------------------------------------


def test_parse_keeps_expression_and_zone() -> None:
    spec = CronSpec.parse("  30   2 * *  * ", "Europe/Oslo")
    assert spec.expression == "30 2 * * *"
    assert spec.time_zone == "Europe/Oslo"
    assert spec == CronSpec("30 2 * * *", "Europe/Oslo")
    assert hash(spec) == hash(CronSpec("30 2 * * *", "Europe/Oslo"))
    assert CronSpec.parse("* * * * *").time_zone == "UTC"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "cron '61 * * * *': minute 61 out of range 0-59"),
        ("0 24 * * *", "cron '0 24 * * *': hour 24 out of range 0-23"),
        ("0 0 0 * *", "cron '0 0 0 * *': day-of-month 0 out of range 1-31"),
        ("0 0 1 13 *", "cron '0 0 1 13 *': month 13 out of range 1-12"),
        ("0 0 * * 8", "cron '0 0 * * 8': day-of-week 8 out of range 0-7"),
        ("0 0 * * 1-9", "cron '0 0 * * 1-9': day-of-week 9 out of range 0-7"),
        ("60 * * * * *", "cron '60 * * * * *': second 60 out of range 0-59"),
        ("0 60 * * * *", "cron '0 60 * * * *': minute 60 out of range 0-59"),
        ("*/0 * * * *", "cron '*/0 * * * *': minute step 0 in '*/0' must be at least 1"),
        ("x * * * *", "cron 'x * * * *': minute 'x' is not a number"),
        ("0 0 1 foo *", "cron '0 0 1 foo *': month 'foo' is not a number or a name jan-dec"),
        ("0 0 * * funday", "cron '0 0 * * funday': day-of-week 'funday' is not a number or a name sun-sat"),
        ("1,,2 * * * *", "cron '1,,2 * * * *': minute has an empty value in '1,,2'"),
        ("? * * * *", "cron '? * * * *': minute '?' is not a valid value"),
        ("H * * * *", "cron 'H * * * *': minute 'H': hashed (H) and random (R) values are not supported"),
        ("0 R * * *", "cron '0 R * * *': hour 'R': hashed (H) and random (R) values are not supported"),
        ("* * * *", "cron '* * * *': expected 5 fields (minute hour day-of-month month day-of-week) or 6"),
        ("* * * * * * *", "cron '* * * * * * *': expected 5 fields"),
        ("", "cron '': empty expression"),
        ("   ", "cron '': empty expression"),
        ("@reboot", "cron '@reboot': unknown alias"),
        ("0 0 31 2 *", "cron '0 0 31 2 *': Day(s) [31] can never occur in month(s) [2]"),
        ("0 0 31 4,6 *", "cron '0 0 31 4,6 *': Day(s) [31] can never occur in month(s) [4, 6]"),
    ],
)
def test_parse_errors_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        CronSpec.parse(expression)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(CronError, match="must be a string"):
        CronSpec.parse(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "europe/oslo ", "+01:00"])
def test_bad_time_zone_is_a_cron_error(zone: str) -> None:
    with pytest.raises(CronError, match="time zone"):
        CronSpec.parse("* * * * *", zone)


@pytest.mark.parametrize(
    "expression",
    [
        "1/1 * * * *",
        "*/5 0-6,22-23 * * mon-fri",
        "0 0 L * *",
        "0 0 15W * *",
        "0 0 * * 5#2",
        "0 0 ? * *",
        "0 0 29 2 *",
        "0 0 31 2 mon",  # day-of-month OR day-of-week: Mondays in February
        "0 0 1 JAN *",
        "*/10 * * * * *",
        "@hourly",
        "@daily",
    ],
)
def test_parse_accepts(expression: str) -> None:
    spec = CronSpec.parse(expression, "Europe/Oslo")
    assert spec.next_after(utc(2024, 1, 1)) > utc(2024, 1, 1)


# -- next fire, seconds, zones, calendars ---------------------------------------------------------------


def test_next_after_is_strictly_after_and_utc() -> None:
    spec = CronSpec.parse("*/15 * * * *")
    assert spec.next_after(utc(2024, 5, 1, 12, 0)) == utc(2024, 5, 1, 12, 15)
    assert spec.next_after(utc(2024, 5, 1, 12, 0) - TICK) == utc(2024, 5, 1, 12, 0)
    result = spec.next_after(datetime(2024, 5, 1, 14, 7, tzinfo=timezone(timedelta(hours=2))))
    assert result == utc(2024, 5, 1, 12, 15)
    assert result.tzinfo is UTC


def test_next_after_rejects_naive() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CronSpec.parse("* * * * *").next_after(datetime(2024, 1, 1))


def test_six_fields_put_seconds_first() -> None:
    spec = CronSpec.parse("30 * * * * *")
    assert spec.fires_between(utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 0, 3), limit=10) == [
        utc(2024, 1, 1, 0, 0, 30),
        utc(2024, 1, 1, 0, 1, 30),
        utc(2024, 1, 1, 0, 2, 30),
    ]
    every_ten = CronSpec.parse("*/10 5 * * * *")
    assert every_ten.next_after(utc(2024, 1, 1, 0, 0)) == utc(2024, 1, 1, 0, 5, 0)
    assert every_ten.next_after(utc(2024, 1, 1, 0, 5, 0)) == utc(2024, 1, 1, 0, 5, 10)
    per_second = CronSpec.parse("* * * * * *")
    assert per_second.next_after(utc(2024, 1, 1) + timedelta(milliseconds=500)) == utc(2024, 1, 1, 0, 0, 1)


def test_dm_job_one_slash_one_fires_each_minute_but_zero() -> None:
    spec = CronSpec.parse("1/1 * * * *")
    fires = spec.fires_between(utc(2024, 1, 1, 10, 0), utc(2024, 1, 1, 11, 0), limit=100)
    assert len(fires) == 59
    assert fires[0] == utc(2024, 1, 1, 10, 1)
    assert fires[-1] == utc(2024, 1, 1, 10, 59)


def test_time_zone_follows_summer_time() -> None:
    spec = CronSpec.parse("0 9 * * *", "Europe/Oslo")
    assert spec.next_after(utc(2024, 1, 15)) == utc(2024, 1, 15, 8)
    assert spec.next_after(utc(2024, 7, 15)) == utc(2024, 7, 15, 7)
    ny = CronSpec.parse("0 9 * * *", "America/New_York")
    assert ny.next_after(utc(2024, 1, 15)) == utc(2024, 1, 15, 14)
    assert ny.next_after(utc(2024, 7, 15)) == utc(2024, 7, 15, 13)


def test_day_of_week() -> None:
    weekdays = CronSpec.parse("0 12 * * 1-5")
    fires = weekdays.fires_between(utc(2024, 1, 1), utc(2024, 1, 8), limit=10)  # Mon 1st .. Mon 8th
    assert [f.day for f in fires] == [1, 2, 3, 4, 5]
    assert (
        CronSpec.parse("0 12 * * mon-fri").fires_between(utc(2024, 1, 1), utc(2024, 1, 8), limit=10) == fires
    )
    sunday = CronSpec.parse("0 0 * * 7")
    assert sunday.next_after(utc(2024, 1, 1)) == utc(2024, 1, 7)
    assert CronSpec.parse("0 0 * * 0").next_after(utc(2024, 1, 1)) == utc(2024, 1, 7)
    second_friday = CronSpec.parse("0 0 * * 5#2")
    assert second_friday.next_after(utc(2024, 1, 1)) == utc(2024, 1, 12)
    # Vixie semantics: a restricted day-of-month and day-of-week fire on either.
    either = CronSpec.parse("0 0 13 * fri")
    assert either.fires_between(utc(2024, 9, 1), utc(2024, 9, 30), limit=10) == [
        utc(2024, 9, 6),
        utc(2024, 9, 13),
        utc(2024, 9, 20),
        utc(2024, 9, 27),
    ]


def test_end_of_month_and_leap_day() -> None:
    last_day = CronSpec.parse("0 0 L * *")
    assert [f.date() for f in last_day.fires_between(utc(2024, 1, 1), utc(2024, 4, 1), limit=10)] == [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
    ]
    the_31st = CronSpec.parse("0 0 31 * *")
    assert [f.month for f in the_31st.fires_between(utc(2024, 1, 1), utc(2024, 12, 31), limit=20)] == [
        1,
        3,
        5,
        7,
        8,
        10,
        12,
    ]
    leap = CronSpec.parse("0 12 29 2 *", "Europe/Oslo")
    assert leap.next_after(utc(2024, 3, 1)) == utc(2028, 2, 29, 11)
    assert leap.next_after(utc(2024, 1, 1)) == utc(2024, 2, 29, 11)


def test_end_of_month_in_a_zone_is_local() -> None:
    spec = CronSpec.parse("0 0 1 * *", "America/New_York")
    assert spec.next_after(utc(2024, 1, 31, 12)) == utc(2024, 2, 1, 5)


def test_fires_between_limit_and_bounds() -> None:
    spec = CronSpec.parse("* * * * *")
    assert spec.fires_between(utc(2024, 1, 1), utc(2024, 1, 2), limit=3) == [
        utc(2024, 1, 1, 0, 1),
        utc(2024, 1, 1, 0, 2),
        utc(2024, 1, 1, 0, 3),
    ]
    assert spec.fires_between(utc(2024, 1, 1), utc(2024, 1, 1, 0, 2), limit=10) == [
        utc(2024, 1, 1, 0, 1),
        utc(2024, 1, 1, 0, 2),
    ]
    assert spec.fires_between(utc(2024, 1, 1), utc(2024, 1, 2), limit=0) == []
    assert spec.fires_between(utc(2024, 1, 2), utc(2024, 1, 1), limit=10) == []
    with pytest.raises(ValueError, match="limit"):
        spec.fires_between(utc(2024, 1, 1), utc(2024, 1, 2), limit=-1)


# -- DST --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("zone", "spring", "fall"), TRANSITIONS)
@pytest.mark.parametrize(
    ("expression", "normal", "on_spring", "on_fall"),
    [
        ("0 * * * *", 24, 23, 25),
        ("15 * * * *", 24, 23, 25),
        ("*/15 * * * *", 96, 92, 100),
        ("1/1 * * * *", 24 * 59, 23 * 59, 25 * 59),
        ("0 */1 * * * *", 24 * 60, 23 * 60, 25 * 60),
        ("30 2 * * *", 1, 1, 1),
        ("0 30 2 * * *", 1, 1, 1),
        ("30 1 * * *", 1, 1, 1),
        ("0 0 * * *", 1, 1, 1),
        ("0,30 2,3 * * *", 4, 2, 4),
    ],
)
def test_fires_per_day_across_transitions(
    zone: str, spring: date, fall: date, expression: str, normal: int, on_spring: int, on_fall: int
) -> None:
    spec = CronSpec.parse(expression, zone)
    counts = []
    for day in (spring - timedelta(days=1), spring, fall, fall + timedelta(days=1)):
        fires = local_day(spec, day)
        assert fires == sorted(set(fires)), "ascending, no duplicates"
        assert all(f.tzinfo is UTC for f in fires)
        counts.append(len(fires))
    assert counts == [normal, on_spring, on_fall, normal]


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        ("Europe/Oslo", date(2024, 3, 31), ["03:00:00+0200"]),  # 02:30 does not exist: first instant after
        ("Europe/Oslo", date(2024, 10, 27), ["02:30:00+0200"]),  # 02:30 happens twice: the first one
        ("America/New_York", date(2024, 3, 10), ["03:00:00-0400"]),
        ("America/New_York", date(2024, 11, 3), ["02:30:00-0500"]),  # NY repeats 01:xx, not 02:xx
    ],
)
def test_fixed_time_in_the_changed_hour(zone: str, day: date, expected: list[str]) -> None:
    spec = CronSpec.parse("30 2 * * *", zone)
    assert walls(local_day(spec, day), ZoneInfo(zone)) == expected


def test_fixed_time_in_new_yorks_repeated_hour_fires_once_at_the_first() -> None:
    spec = CronSpec.parse("30 1 * * *", "America/New_York")
    assert walls(local_day(spec, date(2024, 11, 3)), NEW_YORK) == ["01:30:00-0400"]
    assert walls(local_day(spec, date(2024, 3, 10)), NEW_YORK) == ["01:30:00-0500"]


def test_hourly_on_fall_back_fires_both_real_instants() -> None:
    spec = CronSpec.parse("0 * * * *", "Europe/Oslo")
    fires = local_day(spec, date(2024, 10, 27))
    assert walls(fires, OSLO)[:5] == [
        "00:00:00+0200",
        "01:00:00+0200",
        "02:00:00+0200",
        "02:00:00+0100",
        "03:00:00+0100",
    ]
    assert [b - a for a, b in pairwise(fires)] == [timedelta(hours=1)] * 24


def test_hourly_on_spring_forward_skips_the_missing_hour_only() -> None:
    spec = CronSpec.parse("0 * * * *", "Europe/Oslo")
    fires = local_day(spec, date(2024, 3, 31))
    assert walls(fires, OSLO)[:3] == ["00:00:00+0100", "01:00:00+0100", "03:00:00+0200"]
    assert [b - a for a, b in pairwise(fires)] == [timedelta(hours=1)] * 22


def test_fixed_times_in_the_gap_collapse_to_one_fire() -> None:
    spec = CronSpec.parse("0,30 2,3 * * *", "Europe/Oslo")
    assert walls(local_day(spec, date(2024, 3, 31)), OSLO) == ["03:00:00+0200", "03:30:00+0200"]
    minutely_in_gap = CronSpec.parse("* 2 * * *", "Europe/Oslo")  # periodic: the wall clock never shows 02:xx
    assert local_day(minutely_in_gap, date(2024, 3, 31)) == []
    seconds = CronSpec.parse("0 15,45 2 * * *", "Europe/Oslo")
    assert walls(local_day(seconds, date(2024, 3, 31)), OSLO) == ["03:00:00+0200"]


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # Oslo, 27 Oct 2024: 02:00-03:00 CEST is 00:00-01:00 UTC, then 02:00-03:00 CET is 01:00-02:00 UTC.
        ("*/15 * * * *", utc(2024, 10, 27, 0, 40), utc(2024, 10, 27, 0, 45)),  # first pass
        ("*/15 * * * *", utc(2024, 10, 27, 0, 50), utc(2024, 10, 27, 1, 0)),  # on to the second pass
        ("*/15 * * * *", utc(2024, 10, 27, 1, 50), utc(2024, 10, 27, 2, 0)),  # second pass to after it
        ("*/15 * * * *", utc(2024, 10, 27, 1, 0), utc(2024, 10, 27, 1, 15)),
        ("30 2 * * *", utc(2024, 10, 27, 0, 10), utc(2024, 10, 27, 0, 30)),  # fixed: first pass fires
        ("30 2 * * *", utc(2024, 10, 27, 0, 40), utc(2024, 10, 28, 1, 30)),  # ... and not the second
        ("30 2 * * *", utc(2024, 10, 27, 1, 10), utc(2024, 10, 28, 1, 30)),
        ("0 3 * * *", utc(2024, 10, 27, 1, 10), utc(2024, 10, 27, 2, 0)),
        ("30 2 * * *", utc(2024, 3, 30, 23, 0), utc(2024, 3, 31, 1, 0)),  # gap: at 03:00 CEST
        ("30 2 * * *", utc(2024, 3, 31, 1, 0), utc(2024, 4, 1, 0, 30)),  # ... and only once
        ("0 3 * * *", utc(2024, 3, 31, 0, 59), utc(2024, 3, 31, 1, 0)),
    ],
)
def test_next_after_from_around_a_transition(expression: str, start: datetime, expected: datetime) -> None:
    assert CronSpec.parse(expression, "Europe/Oslo").next_after(start) == expected


def test_a_skipped_day_fires_fixed_times_once_after_it() -> None:
    # Pacific/Apia skipped 30 December 2011 altogether (from UTC-10 to UTC+14).
    apia = ZoneInfo("Pacific/Apia")
    noon = CronSpec.parse("0 12 * * *", "Pacific/Apia")
    fires = noon.fires_between(
        datetime(2011, 12, 29, 13, tzinfo=apia), datetime(2011, 12, 31, 13, tzinfo=apia), limit=9
    )
    assert [f.astimezone(apia).isoformat() for f in fires] == [
        "2011-12-31T00:00:00+14:00",
        "2011-12-31T12:00:00+14:00",
    ]
    hourly = CronSpec.parse("0 * * * *", "Pacific/Apia")
    fires = hourly.fires_between(
        datetime(2011, 12, 29, 22, tzinfo=apia), datetime(2011, 12, 31, 2, tzinfo=apia), limit=99
    )
    assert walls(fires, apia) == ["23:00:00-1000", "00:00:00+1400", "01:00:00+1400", "02:00:00+1400"]


@pytest.mark.parametrize(("zone", "spring", "fall"), TRANSITIONS)
@pytest.mark.parametrize("expression", ["*/20 * * * *", "30 1,2 * * *", "0 */30 * * * *", "0,30 2,3 * * *"])
def test_backwards_walk_agrees_with_forwards(zone: str, spring: date, fall: date, expression: str) -> None:
    """plan() walks back from `now` to pick the newest fires: it must see what the forward walk sees."""
    spec = CronSpec.parse(expression, zone)
    everything = Policy(catch_up="all", catch_up_window=timedelta(days=3))
    for day in (spring, fall):
        tz = ZoneInfo(zone)
        start = datetime(day.year, day.month, day.day, tzinfo=tz) - timedelta(hours=6)
        for hours in range(0, 13):
            now = start + timedelta(hours=hours, minutes=7)
            forward = spec.fires_between(start, now, limit=10_000)
            result = plan(spec, last=start, now=now, policy=everything, limit=10_000)
            assert list(result.fire) == forward
            assert result.missed == 0


# -- timestamps and durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-12-21T12:10:00.000+01:00", utc(2023, 12, 21, 11, 10)),
        ("2023-12-21T12:10:00Z", utc(2023, 12, 21, 12, 10)),
        ("2023-12-21T12:10:00.000Z", utc(2023, 12, 21, 12, 10)),
        ("2023-12-21T12:10:00", utc(2023, 12, 21, 12, 10)),
        ("2023-12-21T12:10:00.123456-05:00", utc(2023, 12, 21, 17, 10, 0, 123456)),
        ("2023-12-21", utc(2023, 12, 21)),
        (" 2023-12-21T12:10:00+00:00 ", utc(2023, 12, 21, 12, 10)),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2023-13-01", "2023-12-21T25:00:00", "21/12/2023"])
def test_parse_timestamp_rejects_garbage(text: str) -> None:
    with pytest.raises(CronError, match="is not ISO 8601"):
        parse_timestamp(text)


def test_parse_timestamp_rejects_non_strings() -> None:
    with pytest.raises(CronError, match="must be a string"):
        parse_timestamp(1703160600)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, timedelta(0)),
        (300, timedelta(minutes=5)),
        (1.5, timedelta(seconds=1.5)),
        ("300", timedelta(minutes=5)),
        ("PT5M", timedelta(minutes=5)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT0.5S", timedelta(seconds=0.5)),
        ("P2W", timedelta(weeks=2)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("pt5m", timedelta(minutes=5)),
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_parse_duration(value: str | int | float, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "is negative"),
        ("-5m", "is negative"),
        ("-PT5M", "is negative"),
        ("5x", "is not seconds, ISO 8601"),
        ("P", "is not seconds, ISO 8601"),
        ("PT", "is not seconds, ISO 8601"),
        ("P1DT", "is not seconds, ISO 8601"),
        ("", "is not seconds, ISO 8601"),
        ("P1M", "years and months have no fixed length"),
        ("P1Y", "years and months have no fixed length"),
        (float("nan"), "is not finite"),
        (float("inf"), "is not finite"),
        (True, "must be a number of seconds or a string"),
        (10**30, "too long"),
    ],
)
def test_parse_duration_errors(value: Any, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_duration(value)


# -- policies -----------------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = Policy.from_entity({"type": "dmss://WorkflowDS/Blueprints/CronJob", "cron": "* * * * *"})
    assert policy == Policy()
    assert policy.overlap == "forbid"
    assert policy.catch_up_window == timedelta(minutes=5)
    assert policy.catch_up == "latest"
    assert policy.jitter == timedelta(0)


def test_policy_from_entity_reads_camel_case_keys() -> None:
    policy = Policy.from_entity(
        {"overlap": "replace", "catchUpWindow": "PT1H", "catchUp": "all", "jitter": 30, "cron": "* * * * *"}
    )
    assert policy == Policy(
        overlap="replace", catch_up_window=timedelta(hours=1), catch_up="all", jitter=timedelta(seconds=30)
    )
    assert Policy.from_entity({"overlap": None, "catchUpWindow": None}) == Policy()


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"overlap": "sometimes"}, "overlap: expected one of allow, forbid, replace, got 'sometimes'"),
        ({"overlap": 1}, "overlap: expected one of"),
        ({"catchUp": "most"}, "catchUp: expected one of none, latest, all, got 'most'"),
        ({"catchUpWindow": "soon"}, "catchUpWindow: duration 'soon' is not seconds"),
        ({"catchUpWindow": -5}, "catchUpWindow: duration -5 is negative"),
        ({"jitter": "PT-1S"}, "jitter: duration 'PT-1S' is not seconds"),
        ({"jitter": [1]}, "jitter: duration must be a number of seconds or a string"),
    ],
)
def test_policy_from_entity_errors_name_the_key(schedule: dict[str, Any], message: str) -> None:
    with pytest.raises(CronError) as caught:
        Policy.from_entity(schedule)
    assert str(caught.value).startswith(message)


def test_policy_validates_direct_construction() -> None:
    with pytest.raises(CronError, match="overlap"):
        Policy(overlap="often")  # type: ignore[arg-type]
    with pytest.raises(CronError, match="catchUpWindow"):
        Policy(catch_up_window=timedelta(seconds=-1))
    with pytest.raises(CronError, match="schedule must be an object"):
        Policy.from_entity(["overlap"])  # type: ignore[arg-type]


# -- plan ---------------------------------------------------------------------------------------------

HOURLY = CronSpec.parse("0 * * * *")
LATEST = Policy()


def test_plan_on_time() -> None:
    result = plan(HOURLY, last=utc(2024, 5, 1, 11), now=utc(2024, 5, 1, 12, 0, 0, 3000), policy=LATEST)
    assert result == Plan(
        fire=(utc(2024, 5, 1, 12),),
        missed=0,
        first_missed=None,
        last_missed=None,
        next_fire=utc(2024, 5, 1, 13),
        retired=False,
    )
    assert result.last_handled == utc(2024, 5, 1, 12)


def test_plan_exactly_at_the_scheduled_time_fires_it() -> None:
    result = plan(HOURLY, last=utc(2024, 5, 1, 11), now=utc(2024, 5, 1, 12), policy=LATEST)
    assert result.fire == (utc(2024, 5, 1, 12),)
    assert result.next_fire == utc(2024, 5, 1, 13)


def test_plan_before_the_fire_has_nothing_due() -> None:
    result = plan(HOURLY, last=utc(2024, 5, 1, 11), now=utc(2024, 5, 1, 11, 59, 59), policy=LATEST)
    assert result == Plan((), 0, None, None, utc(2024, 5, 1, 12), False)
    assert result.last_handled is None


def test_plan_never_fired_only_gives_the_next_fire() -> None:
    result = plan(HOURLY, last=None, now=utc(2024, 5, 1, 11, 30), policy=LATEST)
    assert result == Plan((), 0, None, None, utc(2024, 5, 1, 12), False)


def test_plan_a_fire_already_handled_is_not_offered_again() -> None:
    result = plan(HOURLY, last=utc(2024, 5, 1, 12), now=utc(2024, 5, 1, 12, 0, 1), policy=LATEST)
    assert result.fire == ()
    assert result.missed == 0


MINUTELY = CronSpec.parse("* * * * *")
NOW = utc(2024, 5, 1, 12, 0, 30)  # 12:00:30; the window of 5 minutes starts at 11:55:30


def test_catch_up_all_inside_the_window() -> None:
    result = plan(MINUTELY, last=utc(2024, 5, 1, 11, 57), now=NOW, policy=Policy(catch_up="all"))
    assert result.fire == (utc(2024, 5, 1, 11, 58), utc(2024, 5, 1, 11, 59), utc(2024, 5, 1, 12, 0))
    assert (result.missed, result.first_missed, result.last_missed) == (0, None, None)
    assert result.next_fire == utc(2024, 5, 1, 12, 1)


def test_catch_up_latest_inside_the_window() -> None:
    result = plan(MINUTELY, last=utc(2024, 5, 1, 11, 57), now=NOW, policy=Policy(catch_up="latest"))
    assert result.fire == (utc(2024, 5, 1, 12, 0),)
    assert (result.missed, result.first_missed, result.last_missed) == (
        2,
        utc(2024, 5, 1, 11, 58),
        utc(2024, 5, 1, 11, 59),
    )
    assert result.last_handled == utc(2024, 5, 1, 12, 0)


def test_catch_up_none_inside_the_window() -> None:
    result = plan(MINUTELY, last=utc(2024, 5, 1, 11, 57), now=NOW, policy=Policy(catch_up="none"))
    assert result.fire == ()
    assert (result.missed, result.first_missed, result.last_missed) == (
        3,
        utc(2024, 5, 1, 11, 58),
        utc(2024, 5, 1, 12, 0),
    )
    assert result.last_handled == utc(2024, 5, 1, 12, 0)


def test_fires_outside_the_window_are_missed() -> None:
    last = utc(2024, 5, 1, 11, 50)  # due: 11:51 .. 12:00; inside the window: 11:56 .. 12:00
    every = plan(MINUTELY, last=last, now=NOW, policy=Policy(catch_up="all"))
    assert every.fire == (*(utc(2024, 5, 1, 11, m) for m in range(56, 60)), utc(2024, 5, 1, 12, 0))
    assert (every.missed, every.first_missed, every.last_missed) == (
        5,
        utc(2024, 5, 1, 11, 51),
        utc(2024, 5, 1, 11, 55),
    )
    latest = plan(MINUTELY, last=last, now=NOW, policy=Policy(catch_up="latest"))
    assert latest.fire == (utc(2024, 5, 1, 12, 0),)
    assert (latest.missed, latest.first_missed, latest.last_missed) == (
        9,
        utc(2024, 5, 1, 11, 51),
        utc(2024, 5, 1, 11, 59),
    )


def test_a_fire_exactly_at_the_window_edge_is_inside() -> None:
    result = plan(
        MINUTELY, last=utc(2024, 5, 1, 11, 50), now=utc(2024, 5, 1, 12, 0), policy=Policy(catch_up="all")
    )
    assert result.fire[0] == utc(2024, 5, 1, 11, 55)
    assert result.last_missed == utc(2024, 5, 1, 11, 54)


def test_everything_outside_the_window_fires_nothing() -> None:
    result = plan(HOURLY, last=utc(2024, 5, 1, 2), now=utc(2024, 5, 1, 12, 30), policy=Policy(catch_up="all"))
    assert result.fire == ()
    assert (result.missed, result.first_missed, result.last_missed) == (
        10,
        utc(2024, 5, 1, 3),
        utc(2024, 5, 1, 12),
    )
    assert result.next_fire == utc(2024, 5, 1, 13)
    assert result.last_handled == utc(2024, 5, 1, 12)


def test_zero_window_fires_only_what_is_exactly_due_now() -> None:
    zero = Policy(catch_up_window=timedelta(0))
    assert plan(HOURLY, last=utc(2024, 5, 1, 11), now=utc(2024, 5, 1, 12), policy=zero).fire == (
        utc(2024, 5, 1, 12),
    )
    late = plan(HOURLY, last=utc(2024, 5, 1, 11), now=utc(2024, 5, 1, 12, 0, 1), policy=zero)
    assert (late.fire, late.missed) == ((), 1)


def test_plan_waits_for_start_date() -> None:
    start = utc(2024, 6, 1, 10, 30)
    waiting = plan(HOURLY, last=None, now=utc(2024, 5, 1), policy=LATEST, start_date=start)
    assert waiting == Plan((), 0, None, None, utc(2024, 6, 1, 11), False)
    # Fires before the start never count, even though `last` is older.
    started = plan(
        HOURLY,
        last=utc(2024, 5, 1),
        now=utc(2024, 6, 1, 11, 0, 1),
        policy=Policy(catch_up="all", catch_up_window=timedelta(days=90)),
        start_date=start,
    )
    assert started.fire == (utc(2024, 6, 1, 11),)
    assert started.missed == 0


def test_a_fire_at_the_start_date_counts() -> None:
    start = utc(2024, 6, 1, 11)
    result = plan(
        HOURLY, last=utc(2024, 5, 1), now=utc(2024, 6, 1, 11, 0, 1), policy=LATEST, start_date=start
    )
    assert result.fire == (start,)
    assert plan(HOURLY, last=None, now=utc(2024, 5, 1), policy=LATEST, start_date=start).next_fire == start


def test_plan_retires_after_end_date() -> None:
    end = utc(2024, 5, 1, 12, 30)
    final = plan(HOURLY, last=utc(2024, 5, 1, 11), now=utc(2024, 5, 1, 12, 0, 1), policy=LATEST, end_date=end)
    assert final == Plan((utc(2024, 5, 1, 12),), 0, None, None, None, True)
    over = plan(HOURLY, last=utc(2024, 5, 1, 12), now=utc(2024, 5, 1, 14), policy=LATEST, end_date=end)
    assert over == Plan((), 0, None, None, None, True)
    still = plan(HOURLY, last=utc(2024, 5, 1, 10), now=utc(2024, 5, 1, 11, 0, 1), policy=LATEST, end_date=end)
    assert (still.fire, still.next_fire, still.retired) == (
        (utc(2024, 5, 1, 11),),
        utc(2024, 5, 1, 12),
        False,
    )


def test_a_fire_at_the_end_date_counts() -> None:
    end = utc(2024, 5, 1, 12)
    before = plan(HOURLY, last=utc(2024, 5, 1, 10), now=utc(2024, 5, 1, 11, 30), policy=LATEST, end_date=end)
    assert (before.next_fire, before.retired) == (end, False)
    result = plan(
        HOURLY, last=utc(2024, 5, 1, 11), now=utc(2024, 5, 1, 12, 0, 1), policy=LATEST, end_date=end
    )
    assert (result.fire, result.retired) == ((end,), True)


def test_start_after_end_is_retired_at_once() -> None:
    result = plan(
        HOURLY,
        last=None,
        now=utc(2024, 1, 1),
        policy=LATEST,
        start_date=utc(2024, 6, 1),
        end_date=utc(2024, 5, 1),
    )
    assert (result.next_fire, result.retired) == (None, True)


def test_downtime_fires_after_end_date_never_count() -> None:
    result = plan(
        HOURLY,
        last=utc(2024, 5, 1, 9),
        now=utc(2024, 5, 1, 20, 0, 1),
        policy=Policy(catch_up="all", catch_up_window=timedelta(days=1)),
        end_date=utc(2024, 5, 1, 12),
    )
    assert result.fire == (utc(2024, 5, 1, 10), utc(2024, 5, 1, 11), utc(2024, 5, 1, 12))
    assert result.retired


def test_per_second_cron_after_three_years_down_does_not_wedge() -> None:
    spec = CronSpec.parse("* * * * * *")
    now = utc(2027, 6, 1, 12, 0, 0) + timedelta(milliseconds=500)
    last = now - timedelta(days=3 * 365)
    result = plan(spec, last=last, now=now, policy=Policy(catch_up="latest"), limit=1000)
    assert result.fire == (utc(2027, 6, 1, 12, 0, 0),)
    assert result.missed == 1000  # capped: the true count is about 94.6 million
    assert result.first_missed == last.replace(microsecond=0) + timedelta(seconds=1)
    assert result.last_missed == utc(2027, 6, 1, 11, 59, 59)
    assert result.next_fire == utc(2027, 6, 1, 12, 0, 1)
    assert not result.retired

    every = plan(spec, last=last, now=now, policy=Policy(catch_up="all"), limit=1000)
    assert len(every.fire) == 300  # 11:55:01 .. 12:00:00, inside the 5-minute window
    assert every.fire[0] == utc(2027, 6, 1, 11, 55, 1)
    assert every.missed == 1000
    assert every.last_missed == utc(2027, 6, 1, 11, 55, 0)


def test_limit_caps_fires_and_missed() -> None:
    result = plan(MINUTELY, last=utc(2024, 5, 1, 11, 40), now=NOW, policy=Policy(catch_up="all"), limit=3)
    assert result.fire == (utc(2024, 5, 1, 11, 58), utc(2024, 5, 1, 11, 59), utc(2024, 5, 1, 12, 0))  # newest
    assert result.missed == 3  # capped; 17 were due before the fired ones
    assert result.first_missed == utc(2024, 5, 1, 11, 41)
    assert result.last_missed == utc(2024, 5, 1, 11, 57)
    with pytest.raises(ValueError, match="limit"):
        plan(MINUTELY, last=None, now=NOW, policy=LATEST, limit=0)


def test_plan_when_the_clock_stepped_back() -> None:
    result = plan(HOURLY, last=utc(2024, 5, 1, 12), now=utc(2024, 5, 1, 10, 30), policy=LATEST)
    assert result.fire == ()
    assert result.next_fire == utc(2024, 5, 1, 13)


def test_plan_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        plan(HOURLY, last=None, now=datetime(2024, 5, 1), policy=LATEST)
    with pytest.raises(ValueError, match="start_date must be timezone-aware"):
        plan(HOURLY, last=None, now=NOW, policy=LATEST, start_date=datetime(2024, 5, 1))


def test_plan_across_fall_back_fires_both_hourly_instants() -> None:
    spec = CronSpec.parse("0 * * * *", "Europe/Oslo")
    result = plan(
        spec,
        last=utc(2024, 10, 26, 23, 0),  # 01:00 CEST
        now=utc(2024, 10, 27, 1, 30),  # 02:30 CET, the second pass
        policy=Policy(catch_up="all", catch_up_window=timedelta(hours=3)),
    )
    assert walls(list(result.fire), OSLO) == ["02:00:00+0200", "02:00:00+0100"]
    assert result.next_fire == utc(2024, 10, 27, 2, 0)  # 03:00 CET


def test_plan_across_spring_forward_fires_the_skipped_fixed_time_once() -> None:
    spec = CronSpec.parse("30 2 * * *", "Europe/Oslo")
    on_time = plan(spec, last=utc(2024, 3, 30, 1, 30), now=utc(2024, 3, 31, 1, 0, 1), policy=LATEST)
    assert on_time.fire == (utc(2024, 3, 31, 1, 0),)  # 03:00 CEST
    again = plan(spec, last=on_time.last_handled, now=utc(2024, 3, 31, 1, 4), policy=LATEST)
    assert again.fire == ()
    assert again.next_fire == utc(2024, 4, 1, 0, 30)


def test_normal_operation_never_misses_or_doubles() -> None:
    """Drive plan like the loop does, waking 50 ms after each next_fire for two Oslo transition weeks."""
    spec = CronSpec.parse("*/30 * * * *", "Europe/Oslo")
    for first in (utc(2024, 3, 28), utc(2024, 10, 24)):
        expected = spec.fires_between(first, first + timedelta(days=7), limit=10_000)
        fired: list[datetime] = []
        last = first
        wake = plan(spec, last=None, now=first, policy=LATEST).next_fire
        while wake is not None and wake <= first + timedelta(days=7):
            result = plan(spec, last=last, now=wake + timedelta(milliseconds=50), policy=LATEST)
            assert result.missed == 0
            fired.extend(result.fire)
            last = result.last_handled or last
            wake = result.next_fire
        assert fired == expected
