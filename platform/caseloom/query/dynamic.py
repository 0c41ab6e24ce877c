"""Dynamic values in conditions: ServiceNow's `javascript:gs.getUserID()` and its kin, as data.

ServiceNow writes the current user and the current time into encoded queries as calls such
as `assigned_to=javascript:gs.getUserID()` or `sys_created_on>=javascript:gs.daysAgoStart(7)`.
Caseloom executes nothing: a fixed set of those calls is recognised when a condition is parsed
(anything else after `javascript:` is a QueryError naming it, so `caseloom validate` reports
it at load) and replaced by its value when the condition is compiled to SQL or evaluated in
Python, from the acting user bound with `acting_as` and the clock (UTC, whole seconds).

| token | value |
| --- | --- |
| `gs.getUserID()` | the acting user's sys_id |
| `gs.getUserName()` | the acting user's user_name |
| `gs.nowDateTime()` | now |
| `gs.beginningOfToday()` | today at 00:00:00 |
| `gs.endOfToday()` | today at 23:59:59 |
| `gs.beginningOfYesterday()` ... `gs.endOfNextYear()` | the first / last second of a day, week (from Monday), month or year |
| `gs.daysAgo(N)` | now minus N days (N may be negative: days ahead) |
| `gs.daysAgoStart(N)` | 00:00:00 of the day N days ago |
| `gs.daysAgoEnd(N)` | 23:59:59 of the day N days ago |
| `gs.hoursAgo(N)` | now minus N hours |
| `gs.minutesAgo(N)` | now minus N minutes |
| `gs.monthsAgo(N)`, `gs.yearsAgo(N)` | now minus N calendar months or years (the month's last day when it is shorter) |
| `gs.getUser().getMyGroups()` (or `getMyGroups()`) | the sys_ids of the acting user's groups |
| `gs.getUser().getRecord().getValue('path')` | a field of the acting user's record (dot-walks allowed) |

With no user bound (the platform's own work), a term whose value is the user's id or name
matches nothing, whatever its operator; in an IN list, that one value matches nothing. So does
a user field that is empty, and the groups of a user in none.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from typing import Any

from .nodes import All, AnyOf, Node, Not, PropertyTerm, QueryError, Term

PREFIX = "javascript:"


@dataclass(frozen=True)
class Acting:
    """Who a condition's `gs.getUserID()` and `gs.getUserName()` stand for."""

    sys_id: str | None
    user_name: str | None
    # the value at a path of the user's own record (USER_GROUPS: their groups' sys_ids), read when a
    # condition first needs it; None: no record to read (the user's fields are then empty)
    lookup: Callable[[str], Any] | None = field(default=None, compare=False, repr=False)


USER_GROUPS = "@groups"  # the lookup's name for the user's groups

_ACTING: ContextVar[Acting | None] = ContextVar("caseloom_acting", default=None)
_CLOCK: ContextVar[dt.datetime | None] = ContextVar("caseloom_clock", default=None)


@contextmanager
def acting_as(sys_id: str | None, user_name: str | None,
              lookup: Callable[[str], Any] | None = None) -> Iterator[Acting]:
    """Bind the user that dynamic values in conditions stand for, for the block (this thread or
    task only: a context variable); `lookup` reads their own record's fields (see Acting)."""
    token = bind_acting(sys_id, user_name, lookup)
    try:
        yield _ACTING.get()
    finally:
        unbind_acting(token)


def bind_acting(sys_id: str | None, user_name: str | None, lookup: Callable[[str], Any] | None = None) -> Token:
    """`acting_as` for hooks that cannot wrap a block (a request's before and teardown hooks):
    binds the user and returns the token `unbind_acting` takes."""
    return _ACTING.set(Acting(sys_id or None, user_name or None, lookup))


def unbind_acting(token: Token) -> None:
    """Restore who was acting before `bind_acting` returned `token`."""
    _ACTING.reset(token)


def acting() -> Acting | None:
    """The user bound by `acting_as`, or None."""
    return _ACTING.get()


@contextmanager
def fixed_clock(moment: dt.datetime) -> Iterator[None]:
    """Make dynamic time values read `moment` (naive UTC) instead of the clock, for the block."""
    token = _CLOCK.set(moment.replace(microsecond=0))
    try:
        yield
    finally:
        _CLOCK.reset(token)


def now() -> dt.datetime:
    """The current time as dynamic values see it: naive UTC, whole seconds."""
    fixed = _CLOCK.get()
    if fixed is not None:
        return fixed
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


class _Unbound:
    """The value of `gs.getUserID()` with no user bound: equal to nothing."""

    def __repr__(self) -> str:
        return "NO_USER"


NO_USER: Any = _Unbound()


def _midnight(moment: dt.datetime) -> dt.datetime:
    return moment.replace(hour=0, minute=0, second=0)


def _user(attribute: str) -> Callable[[int | None], Any]:
    def value(_: int | None) -> Any:
        user = _ACTING.get()
        found = getattr(user, attribute) if user is not None else None
        return NO_USER if found is None else found

    return value


def _user_value(path: str) -> Any:
    """A field of the acting user's record (USER_GROUPS: their groups), NO_USER when there is none."""
    user = _ACTING.get()
    if user is None or user.sys_id is None or user.lookup is None:
        return NO_USER
    found = user.lookup(path)
    if path == USER_GROUPS:
        return list(found) or NO_USER
    return NO_USER if found in (None, "") else found


_LAST_SECOND = dt.timedelta(seconds=1)  # a period's end is its last whole second, as ServiceNow's endOf...() are


def _day_start(days_ago: int) -> dt.datetime:
    return _midnight(now() - dt.timedelta(days=days_ago))


def _week_start(weeks_ago: int) -> dt.datetime:
    """00:00:00 of the Monday of the week so many weeks ago (ServiceNow's weeks begin on Monday)."""
    today = _midnight(now())
    return today - dt.timedelta(days=today.weekday(), weeks=weeks_ago)


def _month_start(months_ago: int) -> dt.datetime:
    today = now()
    index = today.year * 12 + today.month - 1 - months_ago
    return dt.datetime(index // 12, index % 12 + 1, 1)


def _year_start(years_ago: int) -> dt.datetime:
    return dt.datetime(now().year - years_ago, 1, 1)


def _months_before(moment: dt.datetime, months: int) -> dt.datetime:
    """The same day and time so many months before (negative: after), on the month's last day when it has
    no such day (31 March less a month: 29 February in a leap year)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = index // 12, index % 12 + 1
    last = (dt.datetime(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return moment.replace(year=year, month=month, day=min(moment.day, last))


def _period(start: Callable[[int], dt.datetime], ago: int) -> tuple[Callable[[int | None], Any], Callable[[int | None], Any]]:
    """A calendar period's beginningOf... and endOf... (the next one's start, less a second)."""
    return (lambda _: start(ago)), (lambda _: start(ago - 1) - _LAST_SECOND)


# name -> (takes a whole-number argument, how its value is made)
TOKENS: dict[str, tuple[bool, Callable[[int | None], Any]]] = {
    "getUserID": (False, _user("sys_id")),
    "getUserName": (False, _user("user_name")),
    "nowDateTime": (False, lambda _: now()),
    "daysAgo": (True, lambda n: now() - dt.timedelta(days=n)),
    "daysAgoStart": (True, lambda n: _day_start(n)),
    "daysAgoEnd": (True, lambda n: _day_start(n - 1) - _LAST_SECOND),
    "hoursAgo": (True, lambda n: now() - dt.timedelta(hours=n)),
    "minutesAgo": (True, lambda n: now() - dt.timedelta(minutes=n)),
    "monthsAgo": (True, lambda n: _months_before(now(), n)),
    "yearsAgo": (True, lambda n: _months_before(now(), 12 * n)),
}
# the calendar periods a list filter's "on" and "between" name (`gs.beginningOfLastMonth()`, `gs.endOfThisWeek()`)
for _when, _start, _ago in (("Today", _day_start, 0), ("Yesterday", _day_start, 1), ("Tomorrow", _day_start, -1),
                            ("ThisWeek", _week_start, 0), ("LastWeek", _week_start, 1), ("NextWeek", _week_start, -1),
                            ("ThisMonth", _month_start, 0), ("LastMonth", _month_start, 1),
                            ("NextMonth", _month_start, -1), ("ThisYear", _year_start, 0),
                            ("LastYear", _year_start, 1), ("NextYear", _year_start, -1)):
    _begins, _ends = _period(_start, _ago)
    TOKENS[f"beginningOf{_when}"], TOKENS[f"endOf{_when}"] = (False, _begins), (False, _ends)
_CALL = re.compile(r"\s*gs\.([A-Za-z]+)\(\s*([^)]*?)\s*\)\s*;?\s*")
_GROUPS = re.compile(r"\s*(?:gs\.getUser\(\)\.)?getMyGroups\(\)\s*;?\s*")
_USER_FIELD = re.compile(r"\s*gs\.getUser\(\)\.getRecord\(\)\.getValue\(\s*(['\"])([a-z][a-z0-9_.]{0,200})\1\s*\)\s*;?\s*")
_NUMBER = re.compile(r"[+-]?\d{1,6}")  # a million days is far beyond any date a database stores


@dataclass(frozen=True)
class Dynamic:
    """A recognised `javascript:gs.name(arg)` value; prints as its canonical text."""

    name: str
    arg: int | None = None
    path: str | None = None  # getValue's field path on the user's record; USER_GROUPS for getMyGroups

    def __str__(self) -> str:
        if self.path == USER_GROUPS:
            return f"{PREFIX}gs.getUser().getMyGroups()"
        if self.path is not None:
            return f"{PREFIX}gs.getUser().getRecord().getValue('{self.path}')"
        return f"{PREFIX}gs.{self.name}({'' if self.arg is None else self.arg})"

    def value(self) -> Any:
        """Its value now, for the bound user (NO_USER when the token needs a user and none is bound)."""
        if self.path is not None:
            return _user_value(self.path)
        try:
            return TOKENS[self.name][1](self.arg)
        except (OverflowError, ValueError):  # gs.daysAgo(999999): before the year 1
            raise QueryError(f"{self}: a moment outside the years 1 to 9999, which no date field holds") from None

    @property
    def user_path(self) -> str | None:
        """The field path on the user's record this value reads (None: not a user field)."""
        return self.path if self.path not in (None, USER_GROUPS) else None


def known() -> str:
    return ", ".join([*(f"gs.{name}({'N' if takes else ''})" for name, (takes, _) in TOKENS.items()),
                      "gs.getUser().getMyGroups()", "gs.getUser().getRecord().getValue('field.path')"])


def parse_dynamic(text: str) -> Dynamic:
    """The Dynamic a `javascript:...` value names; a QueryError naming it when it is not one of TOKENS."""
    body = text[len(PREFIX):] if text.startswith(PREFIX) else None
    if body is not None and _GROUPS.fullmatch(body):
        return Dynamic("getMyGroups", path=USER_GROUPS)
    user_field = _USER_FIELD.fullmatch(body) if body is not None else None
    if user_field is not None:
        return Dynamic("getValue", path=user_field.group(2))
    call = _CALL.fullmatch(body) if body is not None else None
    if call is None or call.group(1) not in TOKENS:
        raise QueryError(f"{text!r} is not a dynamic value Caseloom knows (scripts are never run); known: {known()}")
    name, arg = call.group(1), call.group(2)
    takes = TOKENS[name][0]
    if takes and not _NUMBER.fullmatch(arg):
        raise QueryError(f"{text!r}: gs.{name}() takes a whole number of up to six digits, e.g. gs.{name}(7)")
    if not takes and arg:
        raise QueryError(f"{text!r}: gs.{name}() takes no argument")
    return Dynamic(name, int(arg) if takes else None)


def recognise(value: Any) -> Any:
    """A parsed condition value: `javascript:` strings (also inside lists) become Dynamic values."""
    if isinstance(value, str) and value.startswith(PREFIX):
        return parse_dynamic(value)
    if isinstance(value, list):
        return [recognise(v) for v in value]
    return value


def is_dynamic(value: Any) -> bool:
    """Whether a value (or an item of a list value) is dynamic, recognised or still as text."""
    if isinstance(value, (list, tuple)):
        return any(is_dynamic(v) for v in value)
    return isinstance(value, Dynamic) or (isinstance(value, str) and value.startswith(PREFIX))


def value_now(value: Any) -> Any:
    """A term's value with its dynamic parts replaced by what they stand for now. Values still
    as text (a Term built in code, a list filter's row) are recognised here."""
    if isinstance(value, Dynamic):
        return value.value()
    if isinstance(value, str) and value.startswith(PREFIX):
        return parse_dynamic(value).value()
    if isinstance(value, (list, tuple)) and is_dynamic(value):
        return [value_now(v) for v in value]
    return value


NOTHING = AnyOf(())  # an empty OR: the condition that holds for no record


def resolve_dynamic(node: Node | None) -> Node | None:
    """The condition with every dynamic value replaced by its value now: what compile and evaluate
    run. A term on the user with no user bound becomes NOTHING; in a list, that value is dropped.
    A condition with no dynamic value is returned as it is."""
    if node is None:
        return None
    if isinstance(node, (All, AnyOf)):
        items = tuple(resolve_dynamic(item) for item in node.items)
        if all(a is b for a, b in zip(items, node.items, strict=True)):
            return node
        # a part that matches nothing (an empty user value) leaves an OR and empties an AND, so the SQL
        # keeps only what can use an index (`contact = X OR 0 = 1` would make SQLite scan the table)
        if isinstance(node, AnyOf):
            kept = tuple(item for item in items if item != NOTHING)
            return kept[0] if len(kept) == 1 else AnyOf(kept)
        return NOTHING if NOTHING in items else All(items)
    if isinstance(node, Not):
        item = resolve_dynamic(node.item)
        return node if item is node.item else Not(item)
    if not isinstance(node, (Term, PropertyTerm)) or not is_dynamic(node.value):
        return node
    value = value_now(node.value)
    if isinstance(node.value, (list, tuple)):  # an IN list: a group list's items join it
        value = [item for v in value for item in (v if isinstance(v, list) else [v]) if item is not NO_USER]
    elif value is NO_USER:
        return NOTHING
    elif isinstance(value, list):  # `=javascript:getMyGroups()`: one of them, as ServiceNow reads it
        return replace(node, op=_AS_LIST.get(node.op, node.op), value=value)
    return replace(node, value=value)


_AS_LIST = {"eq": "in", "ne": "notin"}  # a term comparing with a list of groups
