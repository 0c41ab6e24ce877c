"""Business schedules: parsing both forms, refusing bad input with its location, and the business-time arithmetic
across lunch breaks, weekends, holidays and daylight-saving changes. Pure functions: no database, no clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest
import yaml

from caseloom.timing.schedule import (
    Schedule,
    ScheduleError,
    add_business,
    business_seconds,
    in_schedule,
    parse_schedule,
    schedule_problems,
)

HOUR = 3600
OFFICE_HOURS = "mon-fri 09:00-12:30 13:30-17:30\nsat 10:00-14:00"
# January 2026: London is on UTC, so these UTC instants read as local times. 2026-01-05 is a Monday.
OFFICE = parse_schedule("Office", "Europe/London", OFFICE_HOURS, "2026-01-07 Company day")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def hours(value: float) -> float:
    return value * HOUR


# Arithmetic on an ordinary office schedule


@pytest.mark.parametrize(
    "start, end, expected_hours",
    [
        ("2026-01-05 10:00", "2026-01-05 11:00", 1),  # inside a window
        ("2026-01-05 12:00", "2026-01-05 14:00", 1),  # across the lunch break
        ("2026-01-05 12:45", "2026-01-05 13:15", 0),  # inside the lunch break
        ("2026-01-05 07:00", "2026-01-05 10:00", 1),  # starts before opening
        ("2026-01-05 17:00", "2026-01-05 20:00", 0.5),  # ends after closing
        ("2026-01-05 00:00", "2026-01-06 00:00", 7.5),  # a whole weekday
        ("2026-01-09 17:00", "2026-01-12 10:00", 5.5),  # Friday evening, Saturday morning, Sunday, Monday
        ("2026-01-11 00:00", "2026-01-12 00:00", 0),  # Sunday
        ("2026-01-07 00:00", "2026-01-08 00:00", 0),  # the holiday
        ("2026-01-06 17:00", "2026-01-08 10:00", 1.5),  # over the holiday
        ("2026-01-07 10:00", "2026-01-08 10:00", 1),  # starts on the holiday
        ("2026-01-05 00:00", "2026-01-19 00:00", 2 * 41.5 - 7.5),  # two weeks less the holiday
        ("2026-01-05 00:00", "2027-01-04 00:00", 52 * 41.5 - 7.5),  # 52 weeks, over both DST changes
        ("2026-06-01 08:00", "2026-06-01 16:30", 7.5),  # summer: 09:00-17:30 BST is 08:00-16:30 UTC
        ("2026-01-05 11:00", "2026-01-05 11:00", 0),  # an empty span
        ("2026-01-05 11:00", "2026-01-05 10:00", 0),  # end before start
    ],
)
def test_business_seconds(start, end, expected_hours):
    assert business_seconds(OFFICE, at(start), at(end)) == hours(expected_hours)


@pytest.mark.parametrize(
    "start, business_hours, expected",
    [
        ("2026-01-05 10:00", 1, "2026-01-05 11:00"),
        ("2026-01-05 12:00", 0.5, "2026-01-05 12:30"),  # the morning window's end, not 13:30
        ("2026-01-05 17:00", 0.5, "2026-01-05 17:30"),  # the day's end, not the next morning
        ("2026-01-05 17:30", 1, "2026-01-06 10:00"),  # from closing time
        ("2026-01-05 12:45", 0.5, "2026-01-05 14:00"),  # from the lunch break
        ("2026-01-05 06:00", 0.25, "2026-01-05 09:15"),  # from before opening
        ("2026-01-09 17:00", 1, "2026-01-10 10:30"),  # into Saturday's window
        ("2026-01-10 13:00", 2, "2026-01-12 10:00"),  # over Sunday
        ("2026-01-06 17:00", 1, "2026-01-08 09:30"),  # over the holiday
        ("2026-01-07 10:00", 1, "2026-01-08 10:00"),  # from the holiday
        ("2026-01-12 00:00", 41.5, "2026-01-17 14:00"),  # a whole week ends on Saturday's window end
        ("2026-01-05 00:00", 52 * 41.5 - 7.5, "2027-01-02 14:00"),  # a year, whole weeks at a time
        ("2026-01-11 18:00", 0, "2026-01-11 18:00"),  # nothing to add, even outside business hours
    ],
)
def test_add_business(start, business_hours, expected):
    assert add_business(OFFICE, at(start), hours(business_hours)) == at(expected)


# A schedule whose windows cross New York's daylight-saving changes, with holidays on a Monday and a Sunday.
NIGHT_SHIFT = parse_schedule(
    "Night shift",
    "America/New_York",
    "sun 00:00-03:00 22:00-24:00\nmon-sat 09:00-17:00",
    {"2026-03-09": "Closed", dt.date(2026, 11, 1): "Closed"},
)


@pytest.mark.parametrize("schedule", [OFFICE, NIGHT_SHIFT], ids=["office", "night_shift"])
@pytest.mark.parametrize("start", ["2026-01-05 10:00", "2026-03-06 23:30", "2026-10-31 04:00", "2026-01-07 12:00"])
@pytest.mark.parametrize("business_hours", [1 / 3600, 0.5, 7.5, 41.5, 100, 2000])
def test_add_business_then_business_seconds_gives_the_seconds_back(schedule, start, business_hours):
    due = add_business(schedule, at(start), hours(business_hours))
    assert business_seconds(schedule, at(start), due) == pytest.approx(hours(business_hours), abs=1e-6)
    assert business_seconds(schedule, at(start), due - dt.timedelta(seconds=1)) < hours(business_hours)


@pytest.mark.parametrize("schedule", [OFFICE, NIGHT_SHIFT], ids=["office", "night_shift"])
def test_a_year_in_one_span_equals_the_sum_of_its_days(schedule):
    """Whole weeks are skipped arithmetically; cutting the year at every UTC noon forces the exact path."""
    start, end = at("2026-01-01 12:00"), at("2027-01-01 12:00")
    cuts = [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]
    by_day = sum(business_seconds(schedule, a, b) for a, b in zip(cuts, cuts[1:], strict=False))
    assert business_seconds(schedule, start, end) == by_day


@pytest.mark.parametrize(
    "instant, expected",
    [
        ("2026-01-05 09:00", True),  # a window's start is inside
        ("2026-01-05 12:29", True),
        ("2026-01-05 12:30", False),  # its end is not
        ("2026-01-05 13:00", False),  # lunch
        ("2026-01-05 08:59", False),
        ("2026-01-10 11:00", True),  # Saturday
        ("2026-01-11 11:00", False),  # Sunday
        ("2026-01-07 11:00", False),  # the holiday
        ("2026-06-01 08:30", True),  # 09:30 BST
        ("2026-06-01 16:45", False),  # 17:45 BST
    ],
)
def test_in_schedule(instant, expected):
    assert in_schedule(OFFICE, at(instant)) is expected


# Daylight saving: windows are local wall-clock times; elapsed time is real time between converted instants.


@pytest.mark.parametrize(
    "zone, day, windows, expected_hours",
    [
        ("Europe/London", "2026-03-29", "09:00-17:00", 8),
        ("Europe/London", "2026-03-29", "00:00-24:00", 23),
        ("Europe/London", "2026-10-25", "09:00-17:00", 8),
        ("Europe/London", "2026-10-25", "00:00-24:00", 25),
        ("America/New_York", "2026-03-08", "09:00-17:00", 8),
        ("America/New_York", "2026-03-08", "00:00-24:00", 23),
        ("America/New_York", "2026-11-01", "09:00-17:00", 8),
        ("America/New_York", "2026-11-01", "00:00-24:00", 25),
        ("Europe/London", "2026-03-29", "00:30-03:00", 1.5),  # spans the jump: 00:30 GMT to 03:00 BST
        ("Europe/London", "2026-03-29", "01:30-03:00", 1),  # 01:30 does not exist: starts at 02:00 BST
        ("America/New_York", "2026-03-08", "02:30-04:00", 1),  # 02:30 does not exist: starts at 03:00 EDT
        ("Europe/London", "2026-10-25", "01:30-02:30", 2),  # 01:30 twice: the first (BST), to 02:30 GMT
        ("America/New_York", "2026-11-01", "01:30-03:00", 2.5),  # the first 01:30 (EDT), to 03:00 EST
    ],
)
def test_a_daylight_saving_day(zone, day, windows, expected_hours):
    schedule = parse_schedule("Sundays", zone, f"sun {windows}", None)  # every change day here is a Sunday
    around = at(f"{day} 00:00")
    start, end = around - dt.timedelta(days=2), around + dt.timedelta(days=2)
    assert business_seconds(schedule, start, end) == hours(expected_hours)
    assert start < add_business(schedule, start, hours(expected_hours)) <= end
    assert add_business(schedule, start, hours(expected_hours) + 1) > end  # nothing more that Sunday


@pytest.mark.parametrize(
    "zone, start, business_hours, expected",
    [
        ("Europe/London", "2026-03-27 16:00", 2, "2026-03-30 09:00"),  # Friday GMT to Monday 10:00 BST
        ("Europe/London", "2026-10-23 15:00", 2, "2026-10-26 10:00"),  # Friday BST to Monday 10:00 GMT
        ("America/New_York", "2026-03-06 21:00", 2, "2026-03-09 14:00"),  # Friday EST to Monday 10:00 EDT
        ("America/New_York", "2026-10-30 20:00", 2, "2026-11-02 15:00"),  # Friday EDT to Monday 10:00 EST
    ],
)
def test_add_business_over_a_weekend_with_a_daylight_saving_change(zone, start, business_hours, expected):
    schedule = parse_schedule("Weekdays", zone, "mon-fri 09:00-17:00", None)
    assert add_business(schedule, at(start), hours(business_hours)) == at(expected)
    assert business_seconds(schedule, at(start), at(expected)) == hours(business_hours)


@pytest.mark.parametrize(
    "instant, expected",
    [("2026-03-27 08:30", False), ("2026-03-30 08:30", True), ("2026-03-30 16:30", False), ("2026-03-27 16:30", True)],
)
def test_in_schedule_follows_local_time_across_a_change(instant, expected):
    schedule = parse_schedule("Weekdays", "Europe/London", "mon-fri 09:00-17:00", None)
    assert in_schedule(schedule, at(instant)) is expected


# 24x7 and schedules without business time


@pytest.mark.parametrize(
    "start, end, expected_hours",
    [
        ("2026-01-05 10:00", "2026-01-05 11:30", 1.5),
        ("2026-03-28 12:00", "2026-03-30 12:00", 48),  # UTC has no daylight saving
        ("2026-01-05 10:00", "2026-01-05 09:00", 0),
    ],
)
def test_no_schedule_is_24x7(start, end, expected_hours):
    assert business_seconds(None, at(start), at(end)) == hours(expected_hours)
    if expected_hours:
        assert add_business(None, at(start), hours(expected_hours)) == at(end)
    assert in_schedule(None, at(start))


def test_a_schedule_without_business_time_never_reaches_a_due_time():
    closed = Schedule("Closed", "UTC", ((),) * 7)
    assert add_business(closed, at("2026-01-05 10:00"), 1) is None
    assert add_business(closed, at("2026-01-05 10:00"), 0) == at("2026-01-05 10:00")
    assert business_seconds(closed, at("2026-01-05 10:00"), at("2027-01-05 10:00")) == 0
    assert not in_schedule(closed, at("2026-01-05 10:00"))


@pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf")])
def test_add_business_refuses_a_negative_or_endless_duration(seconds):
    with pytest.raises(ValueError, match="seconds must be a finite number, not negative"):
        add_business(OFFICE, at("2026-01-05 10:00"), seconds)


def test_add_business_with_a_huge_duration_terminates():
    started = time.perf_counter()
    due = add_business(OFFICE, at("2026-01-05 00:00"), hours(41.5 * 52 * 300))  # about 300 years of business
    assert dt.datetime(2320, 1, 1) < due < dt.datetime(2330, 1, 1)
    assert time.perf_counter() - started < 5
    with pytest.raises(OverflowError, match="end after the year 9999"):
        add_business(OFFICE, at("9990-01-05 00:00"), hours(41.5 * 52 * 20))


def test_a_year_of_business_seconds_is_fast():
    start, end = at("2026-01-05 10:00"), at("2027-01-05 10:00")
    best = min(_timed(lambda: business_seconds(NIGHT_SHIFT, start, end), 50) for _ in range(3))
    assert best < 0.002


def _timed(call, times: int) -> float:
    started = time.perf_counter()
    for _ in range(times):
        call()
    return (time.perf_counter() - started) / times


# The text and YAML forms


@pytest.mark.parametrize(
    "windows",
    [
        "mon-fri 09:00-12:30 13:30-17:30",
        "mon,tue,wed,thu,fri 09:00-12:30, 13:30-17:30",
        "Monday-Friday 09:00 - 12:30 13:30 - 17:30",
        "# office hours\n\nmon-wed 09:00-12:30 13:30-17:30\nthu, fri 13:30-17:30  # afternoons\nthu-fri 09:00-12:30",
        "mon-fri 13:30-17:30\nmon-fri 09:00-12:30",  # a day on several lines: windows merge, in order
        {"mon-fri": ["09:00-12:30", "13:30-17:30"]},
        {"mon-fri": "09:00-12:30 13:30-17:30"},
        {"mon-wed": ["09:00-12:30", "13:30-17:30"], "thu,fri": ["09:00-12:30", "13:30-17:30"]},
    ],
)
def test_forms_of_the_same_windows(windows):
    weekday = ((540, 750), (810, 1050))
    assert parse_schedule("x", "UTC", windows, None).windows == (weekday,) * 5 + ((), ())


@pytest.mark.parametrize(
    "windows, expected",
    [
        ("sun-thu 08:00-16:00", {0, 1, 2, 3, 6}),  # a range wraps around the week
        ("mon,wed,fri-sun 08:00-16:00", {0, 2, 4, 5, 6}),
        ("sat-sat 08:00-16:00", {5}),
    ],
)
def test_day_ranges_and_lists(windows, expected):
    parsed = parse_schedule("x", "UTC", windows, None).windows
    assert {day for day, windows in enumerate(parsed) if windows} == expected


@pytest.mark.parametrize(
    "windows, monday",
    [
        ("mon 00:00-24:00", ((0, 1440),)),
        ("mon 09:00-12:00 12:00-17:00", ((540, 720), (720, 1020))),  # windows may touch
        ("mon 9:00-17:00", ((540, 1020),)),
    ],
)
def test_window_bounds(windows, monday):
    assert parse_schedule("x", "UTC", windows, None).windows[0] == monday


@pytest.mark.parametrize(
    "holidays",
    [
        "2026-12-25 Christmas Day\n# a comment\n\n2026-12-26 Boxing Day\n2027-01-01",
        {"2026-12-25": "Christmas Day", dt.date(2026, 12, 26): "Boxing Day", "2027-01-01": None},
        ["2026-12-25 Christmas Day", "2026-12-26 Boxing Day", dt.date(2027, 1, 1)],
    ],
)
def test_forms_of_the_same_holidays(holidays):
    schedule = parse_schedule("x", "UTC", "mon 09:00-17:00", holidays)
    assert dict(schedule.holidays) == {
        dt.date(2026, 12, 25): "Christmas Day",
        dt.date(2026, 12, 26): "Boxing Day",
        dt.date(2027, 1, 1): "",
    }
    assert schedule.holidays_text() == "2026-12-25 Christmas Day\n2026-12-26 Boxing Day\n2027-01-01"


def test_the_text_forms_round_trip():
    schedule = parse_schedule(
        "x",
        "Europe/London",
        "sat 10:00-14:00\nmon,wed 08:00-24:00\ntue 08:00-24:00\nsun 10:00-14:00\nfri 07:00-08:00",
        None,
    )
    assert schedule.windows_text() == "mon-wed 08:00-24:00\nfri 07:00-08:00\nsat-sun 10:00-14:00"
    again = parse_schedule("x", "Europe/London", schedule.windows_text(), OFFICE.holidays_text())
    assert again.windows == schedule.windows
    assert again.holidays == OFFICE.holidays


def test_a_schedule_is_frozen():
    with pytest.raises(TypeError):
        OFFICE.holidays[dt.date(2026, 1, 8)] = "More"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        OFFICE.time_zone = "UTC"  # type: ignore[misc]


def test_another_time_zone_gives_another_calendar():
    new_york = dataclasses.replace(OFFICE, time_zone="America/New_York")
    assert add_business(new_york, at("2026-01-05 14:00"), hours(1)) == at("2026-01-05 15:00")  # 09:00 EST
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        dataclasses.replace(OFFICE, time_zone="Mars/Olympus")


# Bad input, refused with its field and place

GOOD = "mon-fri 09:00-17:00"


PAST_MIDNIGHT = "a window past midnight is two, 12:00-24:00 and 00:00-11:00 on the days after"


@pytest.mark.parametrize(
    "time_zone, windows, holidays, field, line, key, message",
    [
        ("Europe/Londn", GOOD, None, "time_zone", None, None,
         "time_zone: unknown time zone 'Europe/Londn': did you mean Europe/London?"),
        ("Nowhere/Special", GOOD, None, "time_zone", None, None,
         "time_zone: unknown time zone 'Nowhere/Special': use an IANA name such as Europe/London"),
        ("", GOOD, None, "time_zone", None, None,
         "time_zone: a time zone is required: an IANA name such as Europe/London"),
        ("UTC", "mon-fri 09:00-17:00\nsat 12:00-11:00", None, "windows", 2, None,
         "windows line 2: 12:00-11:00 ends before it starts: " + PAST_MIDNIGHT),
        ("UTC", "mon 09:00-09:00", None, "windows", 1, None,
         "windows line 1: 09:00-09:00 is empty: it ends when it starts"),
        ("UTC", "mon 25:00-26:00", None, "windows", 1, None,
         "windows line 1: 25:00 is not a time: expected HH:MM from 00:00 to 24:00"),
        ("UTC", "mon 09:60-10:00", None, "windows", 1, None,
         "windows line 1: 09:60 is not a time: expected HH:MM from 00:00 to 24:00"),
        ("UTC", "mon 9am-5pm", None, "windows", 1, None,
         "windows line 1: 9am is not a time: expected HH:MM from 00:00 to 24:00"),
        ("UTC", "mon 9am", None, "windows", 1, None,
         "windows line 1: '9am' is not a window: expected HH:MM-HH:MM"),
        ("UTC", "mon 24:00-24:00", None, "windows", 1, None,
         "windows line 1: 24:00-24:00: 24:00 can only end a window"),
        ("UTC", "# hours\nmnday 09:00-17:00", None, "windows", 2, None,
         "windows line 2: unknown day 'mnday': days are mon tue wed thu fri sat sun"),
        ("UTC", "mon-frii 09:00-17:00", None, "windows", 1, None,
         "windows line 1: unknown day 'frii': days are mon tue wed thu fri sat sun"),
        ("UTC", "mon-fri 09:00-12:00 11:00-13:00", None, "windows", 1, None,
         "windows line 1: 11:00-13:00 overlaps 09:00-12:00 on mon-fri"),
        ("UTC", "mon-fri 09:00-12:00\nsat 09:00-10:00\nwed,fri 08:00-10:00", None, "windows", 3, None,
         "windows line 3: 08:00-10:00 overlaps 09:00-12:00 of windows line 1 on wed,fri"),
        ("UTC", "mon 09:00-17:00 10:00-11:00 12:00-13:00", None, "windows", 1, None,
         "windows line 1: 10:00-11:00 overlaps 09:00-17:00 on mon"),
        ("UTC", "09:00-17:00", None, "windows", 1, None,
         "windows line 1: 09:00-17:00: name the days first, e.g. mon-fri 09:00-17:00"),
        ("UTC", "mon-fri", None, "windows", 1, None,
         "windows line 1: mon-fri has no windows (e.g. 09:00-17:00)"),
        ("UTC", "", None, "windows", None, None,
         "windows: the schedule has no business hours: declare a window, e.g. mon-fri 09:00-17:00"),
        ("UTC", "# to do\n", None, "windows", None, None,
         "windows: the schedule has no business hours: declare a window, e.g. mon-fri 09:00-17:00"),
        ("UTC", {}, None, "windows", None, None,
         "windows: the schedule has no business hours: declare a window, e.g. mon-fri 09:00-17:00"),
        ("UTC", 42, None, "windows", None, None,
         "windows: expected text or a mapping of days to windows, not int"),
        ("UTC", {"mon-fri": ["12:00-11:00"]}, None, "windows", None, "mon-fri",
         "windows 'mon-fri': 12:00-11:00 ends before it starts: " + PAST_MIDNIGHT),
        ("UTC", {"mon": [540]}, None, "windows", None, "mon",
         "windows 'mon': 540 is not a window like 09:00-17:00 (quote it in YAML)"),
        ("UTC", {"funday": "09:00-17:00"}, None, "windows", None, "funday",
         "windows 'funday': unknown day 'funday': days are mon tue wed thu fri sat sun"),
        ("UTC", {"mon": "09:00-12:00", "mon,tue": ["11:00-13:00"]}, None, "windows", None, "mon,tue",
         "windows 'mon,tue': 11:00-13:00 overlaps 09:00-12:00 of windows 'mon' on mon"),
        ("UTC", GOOD, "2026-12-25 Christmas\n2026-13-01 Bad", "holidays", 2, None,
         "holidays line 2: 2026-13-01 is not a date: no such day"),
        ("UTC", GOOD, "25/12/2026", "holidays", 1, None,
         "holidays line 1: '25/12/2026' is not a date: expected YYYY-MM-DD"),
        ("UTC", GOOD, "2026-12-25\n2026-12-25 again", "holidays", 2, None,
         "holidays line 2: 2026-12-25 is declared twice (also holidays line 1)"),
        ("UTC", GOOD, {"2026-02-30": "Nope"}, "holidays", None, "2026-02-30",
         "holidays '2026-02-30': 2026-02-30 is not a date: no such day"),
        ("UTC", GOOD, ["2026-12-25", "tomorrow"], "holidays", None, 1,
         "holidays[1]: 'tomorrow' is not a date: expected YYYY-MM-DD"),
        ("UTC", GOOD, {dt.date(2026, 12, 25): 5}, "holidays", None, dt.date(2026, 12, 25),
         "holidays '2026-12-25': the name should be text, not 5"),
        ("UTC", GOOD, {dt.datetime(2026, 12, 25, 10): "x"}, "holidays", None, dt.datetime(2026, 12, 25, 10),
         "holidays '2026-12-25 10:00:00': 2026-12-25 10:00:00 has a time of day: "
         "a holiday is a whole date (YYYY-MM-DD)"),
        ("UTC", GOOD, 7, "holidays", None, None,
         "holidays: expected text, a mapping of dates to names or a list of dates, not int"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_its_place(time_zone, windows, holidays, field, line, key, message):
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("Bad", time_zone, windows, holidays)
    error = raised.value
    assert isinstance(error, ValueError)
    assert (error.field, error.line, error.key, str(error)) == (field, line, key, message)
    assert [str(p) for p in error.problems] == [str(p) for p in schedule_problems(time_zone, windows, holidays)]


def test_every_problem_at_once():
    problems = schedule_problems(
        "Europe/Londn",
        "mon-fri 09:00-12:00 11:00-13:00\nmnday 10:00-11:00\ntue 17:00-16:00",
        "2026-12-25\nChristmas",
    )
    assert [str(p) for p in problems] == [
        "time_zone: unknown time zone 'Europe/Londn': did you mean Europe/London?",
        "windows line 1: 11:00-13:00 overlaps 09:00-12:00 on mon-fri",
        "windows line 2: unknown day 'mnday': days are mon tue wed thu fri sat sun",
        "windows line 3: 17:00-16:00 ends before it starts: a window past midnight is two, 17:00-24:00 and "
        "00:00-16:00 on the days after",
        "holidays line 2: 'Christmas' is not a date: expected YYYY-MM-DD",
    ]


def test_a_good_schedule_has_no_problems():
    assert schedule_problems("Europe/London", OFFICE_HOURS, "2026-12-25 Christmas Day") == []


def test_a_window_inside_a_longer_one_overlaps_it_even_past_a_shorter_one():
    problems = schedule_problems("UTC", "mon 09:00-17:00 10:00-11:00 12:00-13:00", None)
    assert [str(p) for p in problems] == [
        "windows line 1: 10:00-11:00 overlaps 09:00-17:00 on mon",
        "windows line 1: 12:00-13:00 overlaps 09:00-17:00 on mon",
    ]


def test_the_yaml_form_as_yaml_loads_it():
    """Unquoted windows stay strings and holiday keys become dates; a lone time becomes a number, refused."""
    declared = yaml.safe_load(
        "windows:\n  mon-fri: [09:00-12:30, 13:30-17:30]\n  sat: 10:00-14:00\nholidays:\n  2026-01-07: Company day\n"
    )
    schedule = parse_schedule("Office", "Europe/London", declared["windows"], declared["holidays"])
    assert (schedule.windows, schedule.holidays) == (OFFICE.windows, OFFICE.holidays)
    with pytest.raises(
        ScheduleError, match="windows 'sun': 600 is not a window like 09:00-17:00 \\(quote it in YAML\\)"
    ):
        parse_schedule("Office", "UTC", yaml.safe_load("sun: [10:00]"), None)
