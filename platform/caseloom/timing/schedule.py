"""Business schedules: the hours during which an SLA's clock runs.

A schedule is declared once: an IANA time zone, windows per weekday in local wall-clock time (a lunch break is
the gap between two windows) and holidays (whole local dates without business time). It comes as text (the
fields of a schedule record, edited in a form) or as YAML mappings; both parse into one frozen `Schedule`, and
every problem is reported with its field and its line (or YAML key).

The arithmetic takes and returns naive UTC datetimes, as the rest of the platform does. Each local day's windows
are converted to UTC with zoneinfo and the real time between the converted instants is counted, so 09:00-17:00 is
8 hours on a daylight-saving change day too, while 00:00-24:00 is then 23 or 25 hours. A local time the
spring-forward gap skips moves forward to the first instant that exists; an ambiguous one takes its first
occurrence. `None` as a schedule means 24x7.
"""

from __future__ import annotations

import bisect
import datetime as dt
import difflib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {name: i for names in (DAY_NAMES, _FULL_NAMES) for i, name in enumerate(names)}
_END_OF_DAY = 24 * 60
_ZERO = dt.timedelta(0)
_ONE_DAY = dt.timedelta(days=1)
_ONE_WEEK = dt.timedelta(days=7)

_SPACED_DASH = re.compile(r"\s*-\s*")
_SEPARATORS = re.compile(r"[\s,]+")
_DAY_TOKEN = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)?")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_ZONE_EXAMPLE = "an IANA name such as Europe/London"

Window = tuple[int, int]  # minutes after local midnight: start, end (1440 for 24:00)
_Place = tuple[int | None, Any]  # (line of the text form, key of the YAML form)


class ScheduleError(ValueError):
    """A problem in a schedule's declaration: its `field` ('time_zone', 'windows' or 'holidays'), where in it
    (`line` of the text form, 1-based, or `key` of the YAML form: a day spec, a date or a list index) and what.
    Raised by `parse_schedule`, `problems` holds every problem found, this one first."""

    def __init__(self, field: str, message: str, *, line: int | None = None, key: Any = None):
        self.field, self.message, self.line, self.key = field, message, line, key
        self.problems: list[ScheduleError] = [self]
        super().__init__(f"{self.where}: {message}")

    @property
    def where(self) -> str:
        return _where(self.field, (self.line, self.key))


def _where(field_name: str, place: _Place) -> str:
    line, key = place
    if line is not None:
        return f"{field_name} line {line}"
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{field_name}[{key}]"
    return field_name if key is None else f"{field_name} '{key}'"


@dataclass(frozen=True)
class Schedule:
    """Business hours, parsed: `windows` holds 7 entries, Monday to Sunday, each the sorted (start, end) minutes
    of that weekday's windows in local time; `holidays` maps local dates to their names (read-only)."""

    name: str
    time_zone: str
    windows: tuple[tuple[Window, ...], ...]
    holidays: Mapping[dt.date, str] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if len(self.windows) != len(DAY_NAMES):
            count = len(self.windows)
            raise ValueError(f"schedule {self.name!r}: windows needs 7 entries (Monday to Sunday), got {count}")
        if problems := _zone_problems(self.time_zone):
            raise problems[0]
        object.__setattr__(self, "windows", tuple(tuple(sorted(tuple(w) for w in day)) for day in self.windows))
        object.__setattr__(self, "holidays", MappingProxyType(dict(sorted(self.holidays.items()))))

    def windows_text(self) -> str:
        """The windows in their text form, weekdays with the same windows on one line (parses back the same)."""
        days_of: dict[tuple[Window, ...], list[int]] = {}
        for day, windows in enumerate(self.windows):
            if windows:
                days_of.setdefault(windows, []).append(day)
        lines = (f"{_day_list(days)} {' '.join(map(_window_text, windows))}" for windows, days in days_of.items())
        return "\n".join(lines)

    def holidays_text(self) -> str:
        """The holidays in their text form, one `YYYY-MM-DD name` a line, in date order."""
        return "\n".join(f"{day.isoformat()} {name}".rstrip() for day, name in self.holidays.items())

    @cached_property
    def _calendar(self) -> _Calendar:
        return _Calendar(self)


def parse_schedule(
    name: str, time_zone: str, windows: str | Mapping, holidays: str | Mapping | list | None = None
) -> Schedule:
    """A schedule from its text or YAML form. Raises the first `ScheduleError`, which carries them all in `problems`."""
    zone, days, dates, problems = _parse(time_zone, windows, holidays)
    if problems:
        problems[0].problems = problems
        raise problems[0]
    return Schedule(name, zone, days, dates)


def schedule_problems(
    time_zone: str, windows: str | Mapping, holidays: str | Mapping | list | None
) -> list[ScheduleError]:
    """Every problem of a schedule's declaration at once, in field order (for validation and form errors)."""
    return _parse(time_zone, windows, holidays)[3]


def _parse(time_zone, windows, holidays) -> tuple[str, tuple[tuple[Window, ...], ...], dict, list[ScheduleError]]:
    problems: list[ScheduleError] = []
    zone = time_zone.strip() if isinstance(time_zone, str) else time_zone
    problems.extend(_zone_problems(zone))
    days = _parse_windows(windows, problems)
    dates = _parse_holidays(holidays, problems)
    return zone, days, dates, problems


# Time zone


def _zone_problems(time_zone: Any) -> list[ScheduleError]:
    if not isinstance(time_zone, str) or not time_zone:
        return [ScheduleError("time_zone", f"a time zone is required: {_ZONE_EXAMPLE}")]
    try:
        ZoneInfo(time_zone)
        return []
    except (ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(time_zone, available_timezones(), n=1)
        hint = f"did you mean {close[0]}?" if close else f"use {_ZONE_EXAMPLE}"
        return [ScheduleError("time_zone", f"unknown time zone '{time_zone}': {hint}")]


# Windows


@dataclass(frozen=True)
class _Declared:
    """One window of one weekday as declared: its minutes, where it was written and in what order."""

    window: Window
    text: str
    place: _Place
    order: int


def _parse_windows(windows: Any, problems: list[ScheduleError]) -> tuple[tuple[Window, ...], ...]:
    before = len(problems)
    declared: list[list[_Declared]] = [[] for _ in DAY_NAMES]
    order = 0
    for place, day_tokens, window_tokens in _window_lines(windows, problems):
        days = _days(day_tokens, place, problems)
        spans = [(text, _window(text, place, problems)) for text in window_tokens]
        if not day_tokens:
            message = f"{window_tokens[0]}: name the days first, e.g. mon-fri 09:00-17:00"
            problems.append(_problem("windows", place, message))
        elif not window_tokens:
            problems.append(_problem("windows", place, f"{' '.join(day_tokens)} has no windows (e.g. 09:00-17:00)"))
        for text, window in spans:
            order += 1
            for day in days if window else ():
                declared[day].append(_Declared(window, text, place, order))
    problems.extend(_overlaps(declared))
    problems[before:] = sorted(problems[before:], key=lambda problem: problem.line or 0)
    result = tuple(tuple(sorted(item.window for item in day)) for day in declared)
    if len(problems) == before and not any(result):
        message = "the schedule has no business hours: declare a window, e.g. mon-fri 09:00-17:00"
        problems.append(ScheduleError("windows", message))
    return result


def _window_lines(windows: Any, problems: list[ScheduleError]) -> Iterator[tuple[_Place, list[str], list[str]]]:
    """(place, day tokens, window tokens) of each line of the text form or each key of the YAML form."""
    if windows is None:
        return
    if isinstance(windows, str):
        for number, raw in enumerate(windows.splitlines(), 1):
            tokens = _tokens(raw.split("#", 1)[0])
            days = next((i for i, token in enumerate(tokens) if not _DAY_TOKEN.fullmatch(token)), len(tokens))
            if tokens:
                yield (number, None), tokens[:days], tokens[days:]
    elif isinstance(windows, Mapping):
        for key, value in windows.items():
            spans = _yaml_windows(value, (None, key), problems)
            if spans is not None:
                yield (None, key), _tokens(str(key)), spans
    else:
        message = f"expected text or a mapping of days to windows, not {type(windows).__name__}"
        problems.append(ScheduleError("windows", message))


def _yaml_windows(value: Any, place: _Place, problems: list[ScheduleError]) -> list[str] | None:
    """The window tokens under one YAML key: a list of windows or one string of them."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value if isinstance(value, list | tuple) else None
    if items is None:
        problems.append(_problem("windows", place, f"expected a list of windows like 09:00-17:00, not {value!r}"))
        return None
    tokens = []
    for item in items:
        if isinstance(item, str):
            tokens.extend(_tokens(item))
        else:
            problems.append(_problem("windows", place, f"{item!r} is not a window like 09:00-17:00 (quote it in YAML)"))
    return tokens


def _tokens(text: str) -> list[str]:
    return [token for token in _SEPARATORS.split(_SPACED_DASH.sub("-", text).strip()) if token]


def _days(tokens: list[str], place: _Place, problems: list[ScheduleError]) -> list[int]:
    """The weekdays (0 = Monday) a line names: days, ranges (`mon-fri`, `sun-thu` wraps) and lists."""
    days: dict[int, None] = {}
    for token in tokens:
        ends = [_day_index(name, place, problems) for name in token.split("-")]
        if None in ends:
            continue
        first, last = ends[0], ends[-1]
        days.update(dict.fromkeys((first + i) % 7 for i in range((last - first) % 7 + 1)))
    return list(days)


def _day_index(name: str, place: _Place, problems: list[ScheduleError]) -> int | None:
    index = _DAY_INDEX.get(name.lower())
    if index is None:
        problems.append(_problem("windows", place, f"unknown day '{name}': days are {' '.join(DAY_NAMES)}"))
    return index


def _window(text: str, place: _Place, problems: list[ScheduleError]) -> Window | None:
    """The minutes of one `HH:MM-HH:MM` window, or None after reporting what is wrong with it."""
    start_text, dash, end_text = text.partition("-")
    if not dash:
        problems.append(_problem("windows", place, f"'{text}' is not a window: expected HH:MM-HH:MM"))
        return None
    start, end = _minute(start_text), _minute(end_text)
    bad = [
        f"{part} is not a time: expected HH:MM from 00:00 to 24:00"
        for part, minute in ((start_text, start), (end_text, end))
        if minute is None
    ]
    if not bad and start == _END_OF_DAY:
        bad.append(f"{text}: 24:00 can only end a window")
    elif not bad and end < start:
        bad.append(f"{text} ends before it starts: a window past midnight is two, {start_text}-24:00 and "
                   f"00:00-{end_text} on the days after")
    elif not bad and end == start:
        bad.append(f"{text} is empty: it ends when it starts")
    problems.extend(_problem("windows", place, message) for message in bad)
    return None if bad else (start, end)


def _minute(text: str) -> int | None:
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        return None
    return hours * 60 + minutes


def _overlaps(declared: list[list[_Declared]]) -> list[ScheduleError]:
    """One problem per pair of overlapping windows (naming every weekday they overlap on), at the later one."""
    days_of: dict[tuple[_Declared, _Declared], list[int]] = {}
    for day, items in enumerate(declared):
        widest: _Declared | None = None  # of the windows starting earlier, the one ending last
        for item in sorted(items, key=lambda d: (d.window[0], d.order)):
            if widest is not None and item.window[0] < widest.window[1]:
                later, earlier = sorted((item, widest), key=lambda d: d.order, reverse=True)
                days_of.setdefault((later, earlier), []).append(day)
            if widest is None or item.window[1] > widest.window[1]:
                widest = item
    problems = []
    for (later, earlier), days in days_of.items():
        other = "" if earlier.place == later.place else f" of {_where('windows', earlier.place)}"
        message = f"{later.text} overlaps {earlier.text}{other} on {_day_list(days)}"
        problems.append(_problem("windows", later.place, message))
    return problems


def _day_list(days: list[int]) -> str:
    """Weekdays as ranges and lists: [0, 1, 2, 3, 4, 6] -> 'mon-fri,sun'."""
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(DAY_NAMES[run[0]] + (f"-{DAY_NAMES[run[-1]]}" if len(run) > 1 else "") for run in runs)


def _window_text(window: Window) -> str:
    return "-".join(f"{minute // 60:02d}:{minute % 60:02d}" for minute in window)


# Holidays


def _parse_holidays(holidays: Any, problems: list[ScheduleError]) -> dict[dt.date, str]:
    found: dict[dt.date, str] = {}
    seen: dict[dt.date, _Place] = {}
    for place, value, name in _holiday_entries(holidays, problems):
        day = _holiday_date(value, place, problems)
        if day in seen:
            message = f"{day} is declared twice (also {_where('holidays', seen[day])})"
            problems.append(_problem("holidays", place, message))
        elif day is not None:
            seen[day], found[day] = place, name
    return dict(sorted(found.items()))


def _holiday_entries(holidays: Any, problems: list[ScheduleError]) -> Iterator[tuple[_Place, Any, str]]:
    """(place, date as given, name) of each holiday in the text, mapping or list form."""
    if holidays is None:
        return
    if isinstance(holidays, str):
        for number, raw in enumerate(holidays.splitlines(), 1):
            line = raw.strip()
            if line and not line.startswith("#"):
                value, _, name = line.partition(" ")
                yield (number, None), value, name.strip()
    elif isinstance(holidays, Mapping):
        for key, name in holidays.items():
            if name is None or isinstance(name, str):
                yield (None, key), key, (name or "").strip()
            else:
                problems.append(_problem("holidays", (None, key), f"the name should be text, not {name!r}"))
    elif isinstance(holidays, list | tuple):
        for index, item in enumerate(holidays):
            value, _, name = item.strip().partition(" ") if isinstance(item, str) else (item, "", "")
            yield (None, index), value, name.strip()
    else:
        message = f"expected text, a mapping of dates to names or a list of dates, not {type(holidays).__name__}"
        problems.append(ScheduleError("holidays", message))


def _holiday_date(value: Any, place: _Place, problems: list[ScheduleError]) -> dt.date | None:
    if isinstance(value, dt.datetime):
        message = f"{value} has a time of day: a holiday is a whole date (YYYY-MM-DD)"
        problems.append(_problem("holidays", place, message))
        return None
    if isinstance(value, dt.date):
        return value
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        problems.append(_problem("holidays", place, f"'{value}' is not a date: expected YYYY-MM-DD"))
        return None
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        problems.append(_problem("holidays", place, f"{value} is not a date: no such day"))
        return None


def _problem(field_name: str, place: _Place, message: str) -> ScheduleError:
    return ScheduleError(field_name, message, line=place[0], key=place[1])


# Arithmetic


def business_seconds(schedule: Schedule | None, start: dt.datetime, end: dt.datetime) -> float:
    """Business time between two instants (naive UTC), in seconds: 0 when end <= start; 24x7 when no schedule."""
    if end <= start:
        return 0.0
    if schedule is None:
        return (end - start).total_seconds()
    return schedule._calendar.between(start, end).total_seconds()


def add_business(schedule: Schedule | None, start: dt.datetime, seconds: float) -> dt.datetime | None:
    """The instant (naive UTC) when `seconds` of business time have elapsed after `start`; a window's end rather
    than the next window's start when it lands on both. None when the schedule has no business time at all."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"add_business: seconds must be a finite number, not negative; got {seconds!r}")
    try:
        left = dt.timedelta(seconds=seconds)
        if not left:
            return start
        return start + left if schedule is None else schedule._calendar.after(start, left)
    except OverflowError:
        raise OverflowError(f"add_business: {seconds} business seconds after {start} end after the year 9999") from None


def in_schedule(schedule: Schedule | None, instant: dt.datetime) -> bool:
    """Whether an instant (naive UTC) falls inside business hours (window starts included, ends excluded)."""
    if schedule is None:
        return True
    calendar = schedule._calendar
    return any(start <= instant < end for start, end in calendar.intervals(calendar.local_date(instant)))


class _Calendar:
    """A schedule made ready for arithmetic: its zone, its holidays in order, and its nominal business time per
    weekday and per week, which is the real time on any day (or week) over which the UTC offset does not change."""

    def __init__(self, schedule: Schedule):
        self.zone = ZoneInfo(schedule.time_zone)
        self.windows = schedule.windows
        self.holidays = tuple(schedule.holidays)
        self.holiday_set = frozenset(self.holidays)
        self.nominal = tuple(dt.timedelta(minutes=sum(end - start for start, end in day)) for day in self.windows)
        self.week = sum(self.nominal, _ZERO)
        self._days: dict[dt.date, tuple[tuple[dt.datetime, dt.datetime], ...]] = {}  # intervals, as asked
        self._offsets: dict[dt.date, dt.timedelta | None] = {}

    def local_date(self, instant: dt.datetime) -> dt.date:
        return instant.replace(tzinfo=dt.UTC).astimezone(self.zone).date()

    def intervals(self, day: dt.date) -> tuple[tuple[dt.datetime, dt.datetime], ...]:
        """A local date's business intervals in naive UTC, in order (none on a holiday); worked out once
        per date (every SLA attached or moved on one day asks for the same few dates)."""
        found = self._days.get(day)
        if found is None:
            if len(self._days) > 4096:
                self._days.clear()
            found = self._days[day] = () if day in self.holiday_set else tuple(
                (self.instant(day, start), self.instant(day, end)) for start, end in self.windows[day.weekday()])
        return found

    def instant(self, day: dt.date, minute: int) -> dt.datetime:
        """The naive UTC instant of a local wall-clock time; the first occurrence of an ambiguous one, the end of
        the gap for one that the spring-forward change skips."""
        wall = dt.datetime(day.year, day.month, day.day) + dt.timedelta(minutes=minute)
        utc = wall.replace(tzinfo=self.zone).astimezone(dt.UTC)
        if utc.astimezone(self.zone).replace(tzinfo=None) != wall:
            utc = self._gap_end(wall)
        return utc.replace(tzinfo=None)

    def _gap_end(self, wall: dt.datetime) -> dt.datetime:
        """The change itself, found by bisection between the wall time read with the offset before the change
        (an instant after it) and with the offset after it (an instant before). Changes fall on whole seconds."""
        after = int(wall.replace(tzinfo=self.zone).astimezone(dt.UTC).timestamp())
        before = int(wall.replace(tzinfo=self.zone, fold=1).astimezone(dt.UTC).timestamp())
        offset_after = dt.datetime.fromtimestamp(after, self.zone).utcoffset()
        while after - before > 1:
            middle = (before + after) // 2
            if dt.datetime.fromtimestamp(middle, self.zone).utcoffset() == offset_after:
                after = middle
            else:
                before = middle
        return dt.datetime.fromtimestamp(after, dt.UTC)

    def offset(self, day: dt.date) -> dt.timedelta | None:
        """The UTC offset at a local date's midnight (worked out once per date)."""
        if day not in self._offsets:
            if len(self._offsets) > 4096:
                self._offsets.clear()
            self._offsets[day] = dt.datetime(day.year, day.month, day.day, tzinfo=self.zone).utcoffset()
        return self._offsets[day]

    def day_total(self, day: dt.date) -> dt.timedelta:
        if day in self.holiday_set:
            return _ZERO
        if self.offset(day) == self.offset(day + _ONE_DAY):
            return self.nominal[day.weekday()]
        return sum((end - start for start, end in self.intervals(day)), _ZERO)

    def plain_week(self, day: dt.date) -> bool:
        """Whether the 7 days from `day` hold no holiday and no offset change, so they hold exactly `week`."""
        index = bisect.bisect_left(self.holidays, day)
        if index < len(self.holidays) and self.holidays[index] < day + _ONE_WEEK:
            return False
        return self.offset(day) == self.offset(day + _ONE_WEEK)

    def between(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        first, last = self.local_date(start), self.local_date(end)
        if first == last:
            return _overlap(self.intervals(first), start, end)
        whole_days, day = _ZERO, first + _ONE_DAY
        while day < last:
            if last - day >= _ONE_WEEK and self.plain_week(day):
                whole_days, day = whole_days + self.week, day + _ONE_WEEK
            else:
                whole_days, day = whole_days + self.day_total(day), day + _ONE_DAY
        return (
            _overlap(self.intervals(first), start, dt.datetime.max)
            + whole_days
            + _overlap(self.intervals(last), dt.datetime.min, end)
        )

    def after(self, start: dt.datetime, left: dt.timedelta) -> dt.datetime | None:
        if not self.week:
            return None
        day = self.local_date(start)
        found, left = _spend(self.intervals(day), start, left)
        while found is None:
            day += _ONE_DAY
            if left > self.week and self.plain_week(day):
                left, day = left - self.week, day + _ONE_WEEK - _ONE_DAY
            elif left > (total := self.day_total(day)):
                left -= total
            else:
                found, left = _spend(self.intervals(day), dt.datetime.min, left)
        return found


def _overlap(intervals: Sequence[tuple[dt.datetime, dt.datetime]], low: dt.datetime, high: dt.datetime) -> dt.timedelta:
    return sum((max(_ZERO, min(end, high) - max(start, low)) for start, end in intervals), _ZERO)


def _spend(
    intervals: Sequence[tuple[dt.datetime, dt.datetime]], low: dt.datetime, left: dt.timedelta
) -> tuple[dt.datetime | None, dt.timedelta]:
    """Spend business time from `low` on: the instant it runs out (a window's end when exactly), else what is left."""
    for start, end in intervals:
        start = max(start, low)
        if end <= start:
            continue
        if left <= end - start:
            return start + left, _ZERO
        left -= end - start
    return None, left
