"""The registry of field types: one entry per type, nothing else branches on type names.

Each type knows its SQL column type, how to turn input (a string from a form or the
API, or a native value from YAML/JSON) into the stored value, and how to render the
stored value as the string ServiceNow's API returns. Its capability flags say what the
rest of the platform may do with a field of the type (read it back, filter, sort, list
it); code asks the flag, never the type's name.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from werkzeug.security import generate_password_hash


class FieldValueError(ValueError):
    """A value that does not fit its field; the message says why."""


@dataclass(frozen=True)
class FieldType:
    name: str
    column: Callable[[Any], sa.types.TypeEngine] | None  # None: not stored in the row
    parse: Callable[[Any, Any], Any]
    render: Callable[[Any], str] = lambda v: "" if v is None else str(v)
    prepare: Callable[[Any], Any] = lambda v: v  # parsed value -> stored value (hashed: see `hashed`)
    hashed: bool = False  # a secret: stored as `prepare` makes it (a hash)
    input: str = "text"  # the HTML input the UI uses
    searchable: bool = False  # included in quick search (LIKE)
    # -- capabilities -------------------------------------------------------------------------
    # Never read back by any surface: Table API, lists, forms, audit values, templates, scripts.
    hidden: bool = False
    queryable: bool = True  # may be filtered on: encoded queries, conditions, the list filter
    sortable: bool = True  # may be ordered by
    listable: bool = True  # a list column when a table declares no `list:`
    journal: bool = False  # a written value is an entry in sys_journal_field, not a column value
    words: Callable[[Any], str] | None = None  # the display value a person reads, when not the rendered value
    # `default: now`: a new record's value at the moment it is written (UTC); None: the type takes no such default
    now: Callable[[dt.datetime], Any] | None = None

    def problems(self) -> list[str]:
        """Flags that contradict each other (a hidden value that could still be probed by a query)."""
        out = []
        if self.hidden:
            out += [f"a hidden type cannot be {flag}" for flag in ("queryable", "sortable", "listable", "searchable")
                    if getattr(self, flag)]
        if self.column is None:
            out += [f"a type with no column cannot be {flag}" for flag in ("queryable", "sortable", "listable")
                    if getattr(self, flag)]
        return out


FIELD_TYPES: dict[str, FieldType] = {}


def register(ftype: FieldType) -> FieldType:
    problems = ftype.problems()
    if problems:
        raise ValueError(f"field type {ftype.name!r}: {'; '.join(problems)}")
    FIELD_TYPES[ftype.name] = ftype
    return ftype


def moment_types() -> str:
    """The types whose values are moments, as a sentence: those that take `default: now` (date or
    datetime)."""
    return " or ".join(sorted(name for name, ftype in FIELD_TYPES.items() if ftype.now is not None))


def is_empty(value: Any) -> bool:
    """None, or text of nothing but spaces: what every field type stores as empty (a boolean as false)."""
    return value is None or (isinstance(value, str) and value.strip() == "")


# Column sizes of the text types when a field declares no max_length; input longer than the
# column is refused here, so PostgreSQL never truncates-with-an-error and SQLite never overfills.
STRING_LENGTH, EMAIL_LENGTH, URL_LENGTH = 255, 100, 1024
# Text and journal values have no column size; this keeps one value from filling the database or a
# page (a field may declare its own max_length instead). Passwords are hashed: the hash's cost grows with them.
TEXT_LENGTH, PASSWORD_LENGTH = 65_536, 128
INTEGER_MIN, INTEGER_MAX = -(2**31), 2**31 - 1  # sa.Integer: a 4-byte integer column
DURATION_MAX = 10**12  # seconds (about 31,700 years), in an 8-byte column: elapsed times may be long
DECIMAL_PRECISION, DECIMAL_SCALE = 20, 6


def _parse_string(field: Any, value: Any, default_limit: int | None = None) -> Any:
    if type(value) is str and value and not value[0].isspace() and not value[-1].isspace():
        limit = field.max_length or default_limit  # fast path: the common case of plain, trimmed text
        if limit and len(value) > limit:
            raise FieldValueError(f"is {len(value)} characters long; the maximum is {limit}")
        return value if value.isascii() and "\x00" not in value else valid_text(value)
    if is_empty(value):
        return None
    if isinstance(value, (dict, list)):
        raise FieldValueError("expected text")
    text = value if isinstance(value, str) else _plain(value)
    limit = getattr(field, "max_length", None) or default_limit
    if limit and len(text) > limit:
        raise FieldValueError(f"is {len(text)} characters long; the maximum is {limit}")
    return valid_text(text)


def valid_text(text: str) -> str:
    """Text that can be stored: a lone surrogate (JSON's "\\ud800") or a NUL character is refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FieldValueError(f"contains {text[exc.start]!r} at character {exc.start + 1}, which is not valid "
                              "Unicode text (a lone surrogate)") from None
    if "\x00" in text:
        raise FieldValueError(f"contains a NUL character at character {text.index(chr(0)) + 1}")
    return text


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# Numbers as text: ASCII digits only (int() and Decimal() also take other scripts' digits, ١٢, and 1_000).
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _parse_integer(field: Any, value: Any) -> Any:
    if is_empty(value):
        return None
    if isinstance(value, bool):
        raise FieldValueError("expected a whole number")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if not WHOLE_NUMBER.fullmatch(text):
            raise FieldValueError(f"expected a whole number, got {value!r}")
        number = int(text)
    if not INTEGER_MIN <= number <= INTEGER_MAX:
        raise FieldValueError(f"{number} is out of range ({INTEGER_MIN} to {INTEGER_MAX})")
    return number


def _parse_decimal(field: Any, value: Any) -> Any:
    if is_empty(value):
        return None
    if isinstance(value, bool):
        raise FieldValueError("expected a number")
    text = value if isinstance(value, (int, float, Decimal)) else str(value).strip()
    if isinstance(text, str) and not NUMBER.fullmatch(text):
        raise FieldValueError(f"expected a number, got {value!r}")
    try:
        number = Decimal(str(text))
    except InvalidOperation:
        raise FieldValueError(f"expected a number, got {value!r}") from None
    digits = DECIMAL_PRECISION - DECIMAL_SCALE
    if not number.is_finite():
        raise FieldValueError(f"expected a number, got {value!r}")
    if abs(number) >= Decimal(10) ** digits:
        raise FieldValueError(f"{value!r} is too large (at most {digits} digits before the decimal point)")
    return number


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_boolean(value: Any) -> bool | None:
    if is_empty(value):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FieldValueError(f"expected true or false, got {value!r}")


def _parse_boolean(field: Any, value: Any) -> Any:
    """A boolean field stores an empty value as false, as ServiceNow does: a record is always in
    either `active=true` or `active=false`. (A query's empty value is still "is empty": see
    `query.meaning.coerce`.)"""
    parsed = parse_boolean(value)
    return False if parsed is None else parsed


# What a date or a date and time may be written as: ISO 8601's extended form, which Python's
# fromisoformat reads among others it also takes (20240101, 2024-W01-1, and text past a NUL).
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
ISO_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,6})?)?)?"
                          r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?")


def iso_datetime(text: str) -> dt.datetime:
    """A date and time in ISO 8601's extended form (`Z` or an offset moved to UTC), naive, microseconds
    kept; ValueError for any other text, OverflowError for one out of range once moved to UTC."""
    text = text.strip()
    if not ISO_DATETIME.fullmatch(text):
        raise ValueError(text)
    parsed = dt.datetime.fromisoformat(text.replace("T", " ").replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is None else parsed.astimezone(dt.UTC).replace(tzinfo=None)


def _parse_date(field: Any, value: Any) -> Any:
    if is_empty(value):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        if ISO_DATE.fullmatch(text):
            return dt.date.fromisoformat(text)
        if ISO_DATETIME.fullmatch(text):
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date()  # a date and time: its date
    except ValueError:
        pass
    raise FieldValueError(f"expected a date YYYY-MM-DD, got {value!r}")


def _parse_datetime(field: Any, value: Any) -> Any:
    if is_empty(value):
        return None
    try:
        if isinstance(value, dt.datetime):
            parsed = value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
        elif isinstance(value, dt.date):
            parsed = dt.datetime(value.year, value.month, value.day)
        else:
            parsed = iso_datetime(str(value))
    except OverflowError:
        raise FieldValueError(f"{value!r} is out of range once moved to UTC (years 1 to 9999)") from None
    except ValueError:
        raise FieldValueError(f"expected a date and time YYYY-MM-DD HH:MM:SS, got {value!r}") from None
    return parsed.replace(microsecond=0)


def _render_datetime(value: Any) -> str:
    """YYYY-MM-DD HH:MM:SS, the year always four digits (strftime's %Y does not pad before 1000 on glibc)."""
    return "" if value is None else f"{value.year:04d}-{value:%m-%d %H:%M:%S}"


def _render_boolean(value: Any) -> str:
    return "" if value is None else ("true" if value else "false")


def _render_decimal(value: Any) -> str:
    if value is None:
        return ""
    text = format(Decimal(value), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _parse_choice(field: Any, value: Any) -> Any:
    if type(value) is int and field.choice_kind == "integer":
        return value
    if is_empty(value):
        return None
    if field.choice_kind == "integer":
        return _parse_integer(field, value)
    return _plain(value).strip()


# Durations are whole seconds (the Table API takes and answers seconds, as the contract says). Input
# may also be "8h 30m", "2 days 4 hours", "45 minutes" or ServiceNow's "1970-01-02 04:00:00" (epoch-relative).
_DURATION_UNITS = {"d": 86400, "day": 86400, "days": 86400, "h": 3600, "hour": 3600, "hours": 3600, "hr": 3600,
                   "hrs": 3600, "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60, "s": 1, "sec": 1,
                   "secs": 1, "second": 1, "seconds": 1}
_DURATION_PART = re.compile(r"\s*(\d+)\s*([a-z]+)\s*,?", re.IGNORECASE)
_EPOCH = dt.datetime(1970, 1, 1)


def _parse_duration(field: Any, value: Any) -> Any:
    if is_empty(value):
        return None
    if isinstance(value, (int, str)) and str(value).strip().lstrip("-").isdigit():
        seconds = int(str(value).strip())
    elif isinstance(value, str) and value.strip().startswith("1970-"):
        try:
            seconds = int((dt.datetime.fromisoformat(value.strip()) - _EPOCH).total_seconds())
        except ValueError:
            raise FieldValueError(f"expected a duration such as 3600, '8h 30m' or '1970-01-01 08:30:00', "
                                  f"got {value!r}") from None
    else:
        seconds = _duration_words(value)
    if seconds < 0:
        raise FieldValueError(f"a duration cannot be negative ({seconds} seconds)")
    if seconds > DURATION_MAX:
        raise FieldValueError(f"{seconds} seconds is too long (at most {DURATION_MAX})")
    return seconds


def _duration_words(value: Any) -> int:
    text = str(value).strip().lower() if isinstance(value, str) else ""
    parts = _DURATION_PART.findall(text)
    if not text or _DURATION_PART.sub("", text).strip() or any(u not in _DURATION_UNITS for _, u in parts):
        raise FieldValueError(f"expected a duration such as 3600 (seconds), '8h 30m' or '2 days', got {value!r}")
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts)


def duration_words(seconds: Any) -> str:
    """A duration as a person reads it: '2 Days 4 Hours 30 Minutes' (ServiceNow's display value)."""
    if seconds is None or seconds == "":
        return ""
    left = int(seconds)
    out = []
    for unit, size in (("Day", 86400), ("Hour", 3600), ("Minute", 60), ("Second", 1)):
        count, left = divmod(left, size)
        if count:
            out.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(out) or "0 Seconds"


def _choice_column(field: Any) -> sa.types.TypeEngine:
    return sa.Integer() if field.choice_kind == "integer" else sa.String(40)


SYS_ID = re.compile(r"^[0-9a-f]{32}$")


def _parse_reference(field: Any, value: Any) -> Any:
    if type(value) is str and len(value) == 32 and SYS_ID.match(value):
        return value
    if is_empty(value):
        return None
    if isinstance(value, dict) and "value" in value:  # a reference as the API returns it
        value = value["value"]
        if is_empty(value):
            return None
    text = str(value).strip()
    if not SYS_ID.match(text):
        raise FieldValueError(f"expected a sys_id (32 hex characters), got {value!r}")
    return text


# an address as mail carries it: no display name's brackets, quotes, commas or spaces (`<x@y.z>` is not one)
EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")


def _parse_email(field: Any, value: Any) -> Any:
    text = _parse_string(field, value, EMAIL_LENGTH)
    if text is not None and not EMAIL.match(text):
        raise FieldValueError(f"{text!r} is not an email address")
    return text


URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)


def _parse_url(field: Any, value: Any) -> Any:
    text = _parse_string(field, value, URL_LENGTH)
    if text is not None and not URL.match(text):
        raise FieldValueError(f"{text!r} is not an http(s) URL")
    return text


def _parse_journal(field: Any, value: Any) -> Any:
    if is_empty(value):
        return None
    if not isinstance(value, str):
        raise FieldValueError("expected text")
    limit = field.max_length or TEXT_LENGTH
    if len(value) > limit:
        raise FieldValueError(f"is {len(value)} characters long; the maximum is {limit}")
    return valid_text(value)


_DEFAULT_LENGTHS = {"string": STRING_LENGTH, "text": TEXT_LENGTH, "email": EMAIL_LENGTH, "url": URL_LENGTH,
                    "journal": TEXT_LENGTH}


def length_limit(field: Any) -> int | None:
    """How many characters a text field holds: its max_length, else its type's (None: not text)."""
    default = _DEFAULT_LENGTHS.get(field.type)
    return (field.max_length or default) if default is not None else None


def _string_column(field: Any) -> sa.types.TypeEngine:
    return sa.String(field.max_length or STRING_LENGTH)


register(FieldType("string", _string_column, lambda f, v: _parse_string(f, v, STRING_LENGTH), searchable=True))
register(FieldType("text", lambda f: sa.Text(), lambda f, v: _parse_string(f, v, TEXT_LENGTH), input="textarea",
                   searchable=True, listable=False))
register(FieldType("integer", lambda f: sa.Integer(), _parse_integer, input="number"))
register(FieldType("decimal", lambda f: sa.Numeric(DECIMAL_PRECISION, DECIMAL_SCALE), _parse_decimal, _render_decimal,
                   input="decimal"))
register(FieldType("boolean", lambda f: sa.Boolean(), _parse_boolean, _render_boolean, input="checkbox"))
register(FieldType("date", lambda f: sa.Date(), _parse_date, lambda v: "" if v is None else v.isoformat(), input="date",
                   now=lambda moment: moment.date()))
register(FieldType("datetime", lambda f: sa.DateTime(), _parse_datetime, _render_datetime, input="datetime-local",
                   now=lambda moment: moment.replace(microsecond=0)))
register(FieldType("choice", _choice_column, _parse_choice, input="select"))
register(FieldType("reference", lambda f: sa.String(32), _parse_reference, input="reference"))
register(FieldType("duration", lambda f: sa.BigInteger(), _parse_duration, words=duration_words))
register(FieldType("journal", None, _parse_journal, input="journal", journal=True, queryable=False, sortable=False,
                   listable=False))
register(FieldType("email", lambda f: sa.String(f.max_length or EMAIL_LENGTH), _parse_email, input="email", searchable=True))
register(FieldType("url", lambda f: sa.String(f.max_length or URL_LENGTH), _parse_url, input="url"))
# A secret: stored hashed by the record service, never read back; not queryable either (a STARTSWITH
# probe would read the hash out one character at a time).
register(FieldType("password", lambda f: sa.String(255), lambda f, v: _parse_string(f, v, PASSWORD_LENGTH),
                   lambda v: "", prepare=generate_password_hash, input="password", hashed=True, hidden=True,
                   queryable=False, sortable=False, listable=False))
