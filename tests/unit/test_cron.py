"""Standard cron semantics (``pls_sync.cron``): what every cron a user has met would do.

Every case starts from a fixed moment, so nothing here depends on the day the suite runs.
A property test compares the APScheduler triggers the module builds with a brute-force
reading of the same expression, minute by minute of each matching day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pls_sync.cron import CronError, CronExpression, next_fire_times, parse_cron

FRIDAY_EVENING = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)  # a Friday, 20:00 UTC


def fires(expression: str, after: datetime = FRIDAY_EVENING, zone: str = "UTC") -> list[str]:
    return [t.strftime("%a %Y-%m-%d %H:%M") for t in next_fire_times(expression, zone, after)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # 1-5 is Monday to Friday: from a Friday evening the next run is Monday morning.
        ("0 9 * * 1-5", ["Mon 2026-12-07 09:00", "Tue 2026-12-08 09:00", "Wed 2026-12-09 09:00"]),
        (
            "0 9 * * mon-fri",
            ["Mon 2026-12-07 09:00", "Tue 2026-12-08 09:00", "Wed 2026-12-09 09:00"],
        ),
        # 0 and 7 are both Sunday.
        ("* * * * 0", ["Sun 2026-12-06 00:00", "Sun 2026-12-06 00:01", "Sun 2026-12-06 00:02"]),
        ("0 0 * * 7", ["Sun 2026-12-06 00:00", "Sun 2026-12-13 00:00", "Sun 2026-12-20 00:00"]),
        ("0 0 * * SUN", ["Sun 2026-12-06 00:00", "Sun 2026-12-13 00:00", "Sun 2026-12-20 00:00"]),
        ("0 0 * * 6,0", ["Sat 2026-12-05 00:00", "Sun 2026-12-06 00:00", "Sat 2026-12-12 00:00"]),
        ("0 0 * * 5-7", ["Sat 2026-12-05 00:00", "Sun 2026-12-06 00:00", "Fri 2026-12-11 00:00"]),
        # Steps over days of the week count from Sunday: 0, 2, 4, 6.
        ("0 12 * * */2", ["Sat 2026-12-05 12:00", "Sun 2026-12-06 12:00", "Tue 2026-12-08 12:00"]),
        # Either day field, when both are restricted: the 1st and 15th, and every Monday.
        ("0 9 1,15 * 1", ["Mon 2026-12-07 09:00", "Mon 2026-12-14 09:00", "Tue 2026-12-15 09:00"]),
        # Both, when one of them starts with '*': odd days that are Mondays.
        ("0 9 */2 * 1", ["Mon 2026-12-07 09:00", "Mon 2026-12-21 09:00", "Mon 2027-01-11 09:00"]),
        ("30 */4 * * *", ["Fri 2026-12-04 20:30", "Sat 2026-12-05 00:30", "Sat 2026-12-05 04:30"]),
        (
            "0 0 1 jan,jul *",
            ["Fri 2027-01-01 00:00", "Thu 2027-07-01 00:00", "Sat 2028-01-01 00:00"],
        ),
        (
            "15 10-12/2 * * *",
            ["Sat 2026-12-05 10:15", "Sat 2026-12-05 12:15", "Sun 2026-12-06 10:15"],
        ),
        ("0 0 29 2 *", ["Tue 2028-02-29 00:00", "Sun 2032-02-29 00:00", "Fri 2036-02-29 00:00"]),
        ("@weekly", ["Sun 2026-12-06 00:00", "Sun 2026-12-13 00:00", "Sun 2026-12-20 00:00"]),
        ("@hourly", ["Fri 2026-12-04 21:00", "Fri 2026-12-04 22:00", "Fri 2026-12-04 23:00"]),
        ("@DAILY", ["Sat 2026-12-05 00:00", "Sun 2026-12-06 00:00", "Mon 2026-12-07 00:00"]),
    ],
)
def test_expressions_fire_as_standard_cron(expression: str, expected: list[str]) -> None:
    assert fires(expression) == expected


def test_a_fire_time_is_strictly_after_the_moment_given() -> None:
    on_the_dot = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    assert fires("0 9 * * 1-5", after=on_the_dot)[0] == "Tue 2026-12-08 09:00"


def test_weekdays_are_read_in_the_schedules_time_zone() -> None:
    """Friday 20:00 UTC is Saturday 05:00 in Tokyo: a weekday job waits for Monday there."""
    tokyo = ZoneInfo("Asia/Tokyo")
    (first, *_rest) = next_fire_times("0 9 * * 1-5", "Asia/Tokyo", FRIDAY_EVENING)

    assert first == datetime(2026, 12, 7, 9, 0, tzinfo=tokyo)
    assert first.utcoffset() == timedelta(hours=9)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "expected 5 fields"),
        ("0 0 0 * * *", "seconds and years are not part of standard cron"),
        ("61 * * * *", "minute '61': 61 is out of range 0-59"),
        ("* 24 * * *", "hour '24': 24 is out of range 0-23"),
        ("* * 0 * *", "day of month '0': 0 is out of range 1-31"),
        ("* * * 13 *", "month '13': 13 is out of range 1-12"),
        ("* * * * 8", "day of week '8': 8 is out of range 0-7 (0 and 7 are Sunday)"),
        ("* * * * fri-mon", "runs backwards"),
        ("*/0 * * * *", "a step is a whole number of at least 1"),
        ("1,,2 * * * *", "an empty item in a list"),
        ("* * * * funday", "'funday' is not a number or a name (sun-sat)"),
        ("0 0 30 2 *", "it never fires: no month of feb has day 30"),
        ("@reboot", "unknown macro '@reboot'"),
        ("", "a cron expression is five fields"),
        ("0 0 L * *", "'L' is not a number"),
    ],
)
def test_what_is_not_standard_cron_is_refused_with_a_reason(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_cron(expression)


# ------------------------------------------------------------------ property: triggers vs brute force


def _day_matches(expression: CronExpression, day: date) -> bool:
    in_month = day.day in expression.days
    in_week = (day.isoweekday() % 7) in expression.weekdays  # cron: 0 = Sunday
    if day.month not in expression.months:
        return False
    return (in_month or in_week) if expression.either_day else (in_month and in_week)


def brute_force(
    expression: CronExpression, zone: ZoneInfo, after: datetime, count: int
) -> list[datetime]:
    """Walk day by day (in a zone without DST) and list every matching minute after ``after``."""
    found: list[datetime] = []
    start = after.astimezone(zone)
    # Dates and weekdays repeat every 28 years (inside 1901-2099): "the 5th of May, when it is
    # a Sunday" can be eleven years away, so nine years was not always far enough.
    for offset in range(366 * 28):
        day = start.date() + timedelta(days=offset)
        if not _day_matches(expression, day):
            continue
        for hour in expression.hours:
            for minute in expression.minutes:
                moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                if moment > start:
                    found.append(moment)
                    if len(found) == count:
                        return found
    return found


def _item(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    step = st.integers(1, max(1, high - low))
    ranges = st.tuples(value, value).map(sorted)
    return st.one_of(
        st.just("*"),
        step.map(lambda k: f"*/{k}"),
        value.map(str),
        ranges.map(lambda r: f"{r[0]}-{r[1]}"),
        st.tuples(ranges, step).map(lambda t: f"{t[0][0]}-{t[0][1]}/{t[1]}"),
        st.tuples(value, step).map(lambda t: f"{t[0]}/{t[1]}"),
    )


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    return st.lists(_item(low, high), min_size=1, max_size=3).map(",".join)


expressions = st.tuples(
    _field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12), _field(0, 7)
).map(" ".join)


@settings(max_examples=300, deadline=None)
@example(text="* * 5 5/8 */7", after=datetime(2030, 6, 1), zone_name="UTC")  # 11 years off
@given(
    text=expressions,
    after=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)),
    zone_name=st.sampled_from(["UTC", "Asia/Tokyo", "Asia/Kolkata"]),
)
def test_triggers_fire_exactly_when_brute_force_cron_would(
    text: str, after: datetime, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    moment = after.replace(tzinfo=UTC)
    expression = parse_cron(text)

    expected = brute_force(expression, zone, moment, 3)
    actual = next_fire_times(expression, zone_name, moment, count=3)

    assert actual == expected, text
