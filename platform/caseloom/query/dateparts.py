"""ServiceNow's date parts ("trend" in its list filter): a date or date-time compared by one of its parts.

`due_onDATEPARTMonday@javascript:gs.datePart('dayofweek','monday','EE')` holds for the records due on
a Monday; the label before `@` is the words ServiceNow's filter shows. Caseloom executes nothing: the
`gs.datePart(PART, VALUE, COMPARISON)` call is read as data.

| part | values | the part of a moment |
| --- | --- | --- |
| `dayofweek` | `monday` ... `sunday`, or 1 (Monday) to 7 | its ISO day of the week |
| `week` | 1 to 53 | its ISO 8601 week of the year (weeks from Monday; week 1 holds the year's first Thursday) |
| `month` | `january` ... `december`, or 1 to 12 | its month |
| `quarter` | 1 to 4 | its quarter of the year |
| `year` | a year (`2026`) | its year |
| `hour` | 0 to 23, or `9am`, `12pm` | its hour (a date's: 0) |

The comparison is `EE` (the part is the value), `GT` (after it), `LT` (before it), `GE` or `LE`. An empty
date never matches. Times are UTC, as Caseloom stores and shows them. The part is worked out in SQL on
each database (SQLite `strftime`, PostgreSQL `EXTRACT`) and in Python alike.
"""

from __future__ import annotations

import calendar
import datetime as dt
import operator as py
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from .nodes import QueryError

DAYS = {name.lower(): i + 1 for i, name in enumerate(calendar.day_name)}  # monday: 1 ... sunday: 7
MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
RANGES = {"dayofweek": (1, 7), "week": (1, 53), "month": (1, 12), "quarter": (1, 4), "year": (1, 9999), "hour": (0, 23)}
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {"EE": py.eq, "GT": py.gt, "LT": py.lt, "GE": py.ge,
                                                     "LE": py.le}
WORDS = {"EE": "on", "GT": "after", "LT": "before", "GE": "on or after", "LE": "on or before"}
CALL = re.compile(r"javascript:\s*gs\.datePart\(\s*'([^']*)'\s*,\s*'([^']*)'\s*,\s*'([^']*)'\s*\)\s*")


@dataclass(frozen=True)
class DatePart:
    """One date-part comparison: the part, its value as written and as a number, and the comparison."""

    label: str
    part: str
    value: str
    compare: str
    number: int

    def __str__(self) -> str:  # as an encoded query writes it after DATEPART
        return f"{self.label}@javascript:gs.datePart('{self.part}','{self.value}','{self.compare}')"

    @property
    def words(self) -> str:
        return f"{WORDS[self.compare]} {self.label}"


def parse_part(field: str, text: str) -> DatePart:
    """What follows DATEPART in an encoded term (`Monday@javascript:gs.datePart('dayofweek','monday','EE')`)."""
    label, at, call = text.partition("@")
    found = CALL.fullmatch(call) if at else None
    if found is None:
        raise QueryError(f"{field}: DATEPART takes label@javascript:gs.datePart('part','value','comparison') "
                         f"(e.g. {field}DATEPARTMonday@javascript:gs.datePart('dayofweek','monday','EE'))")
    return make_part(field, *found.groups(), label=label.strip())


def make_part(field: str, part: Any, value: Any, compare: Any = "EE", label: str | None = None) -> DatePart:
    """A DatePart from its pieces; a QueryError naming `field` and the piece that is wrong."""
    part, compare, text = str(part).strip().lower(), str(compare).strip().upper(), str(value).strip()
    if part not in RANGES:
        raise QueryError(f"{field}: DATEPART part {part!r} is not one of {', '.join(RANGES)}")
    if compare not in COMPARISONS:
        raise QueryError(f"{field}: DATEPART comparison {compare!r} is not one of {', '.join(COMPARISONS)}")
    number = _number(part, text.lower())
    low, high = RANGES[part]
    if number is None or not low <= number <= high:
        raise QueryError(f"{field}: {text!r} is not a {part} (from {low} to {high}"
                         f"{', or a day name' if part == 'dayofweek' else ', or a month name' if part == 'month' else ''})")
    return DatePart(label or text, part, text, compare, number)


def _number(part: str, text: str) -> int | None:
    if part == "dayofweek" and text in DAYS:
        return DAYS[text]
    if part == "month" and text in MONTHS:
        return MONTHS[text]
    if part == "hour":
        found = re.fullmatch(r"(\d{1,2})\s*(am|pm)?(\s*hour)?", text)
        if found is None:
            return None
        hour, half = int(found.group(1)), found.group(2)
        if half is not None:
            if not 1 <= hour <= 12:
                return None
            hour = hour % 12 + (12 if half == "pm" else 0)
        return hour
    return int(text) if re.fullmatch(r"\d{1,4}", text) else None


def of(moment: Any, part: str) -> int | None:
    """The part of a date or date-time, as SQL works it out (`PartOf`)."""
    if moment is None:
        return None
    hour = moment.hour if isinstance(moment, dt.datetime) else 0
    return {"dayofweek": moment.isoweekday(), "week": moment.isocalendar()[1], "month": moment.month,
            "quarter": (moment.month - 1) // 3 + 1, "year": moment.year, "hour": hour}[part]


def holds(moment: Any, value: DatePart) -> bool:
    found = of(moment, value.part)
    return found is not None and bool(COMPARISONS[value.compare](found, value.number))


def sql(column: sa.ColumnElement, value: DatePart) -> sa.ColumnElement:
    return COMPARISONS[value.compare](PartOf(column, sa.literal_column(f"'{value.part}'")), value.number)


class PartOf(FunctionElement):
    """A date or date-time column's part as a whole number (see the table above); NULL for NULL."""

    name = "date_part_of"
    type = sa.Integer()
    inherit_cache = True


def _args(element, compiler, **kw) -> tuple[str, str]:
    column, part = list(element.clauses)
    return compiler.process(column, **kw), part.name.strip("'")


SQLITE = {"dayofweek": "((CAST(strftime('%w', {0}) AS INTEGER) + 6) % 7 + 1)",
          # the ISO week is the week of the year of its Thursday (SQLite before 3.46 has no %V)
          "week": "((CAST(strftime('%j', date({0}, '-3 days', 'weekday 4')) AS INTEGER) - 1) / 7 + 1)",
          "month": "CAST(strftime('%m', {0}) AS INTEGER)",
          "quarter": "((CAST(strftime('%m', {0}) AS INTEGER) + 2) / 3)",
          "year": "CAST(strftime('%Y', {0}) AS INTEGER)",
          "hour": "CAST(strftime('%H', {0}) AS INTEGER)"}
POSTGRESQL = {"dayofweek": "ISODOW", "week": "WEEK", "month": "MONTH", "quarter": "QUARTER", "year": "YEAR", "hour": "HOUR"}


@compiles(PartOf, "sqlite")
def _part_sqlite(element, compiler, **kw) -> str:
    column, part = _args(element, compiler, **kw)
    return SQLITE[part].format(column)


@compiles(PartOf)
def _part_default(element, compiler, **kw) -> str:
    column, part = _args(element, compiler, **kw)
    # a date as its midnight: PostgreSQL takes no HOUR of a date
    return f"CAST(EXTRACT({POSTGRESQL[part]} FROM CAST({column} AS TIMESTAMP)) AS INTEGER)"
