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
| `gs.daysAgo(N)` | now minus N days (N may be negative: days ahead) |
| `gs.daysAgoStart(N)` | 00:00:00 of the day N days ago |
| `gs.hoursAgo(N)` | now minus N hours |
| `gs.minutesAgo(N)` | now minus N minutes |

With no user bound (the platform's own work), a term whose value is the user's id or name
matches nothing, whatever its operator; in an IN list, that one value matches nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, replace
from typing import Any

from .nodes import All, AnyOf, Node, Not, PropertyTerm, QueryError, Term

PREFIX = "javascript:"


@dataclass(frozen=True)
class Acting:
    """Who a condition's `gs.getUserID()` and `gs.getUserName()` stand for."""

    sys_id: str | None
    user_name: str | None


_ACTING: ContextVar[Acting | None] = ContextVar("caseloom_acting", default=None)
_CLOCK: ContextVar[dt.datetime | None] = ContextVar("caseloom_clock", default=None)


@contextmanager
def acting_as(sys_id: str | None, user_name: str | None) -> Iterator[Acting]:
    """Bind the user that dynamic values in conditions stand for, for the block (this thread or
    task only: a context variable)."""
    token = bind_acting(sys_id, user_name)
    try:
        yield _ACTING.get()
    finally:
        unbind_acting(token)


def bind_acting(sys_id: str | None, user_name: str | None) -> Token:
    """`acting_as` for hooks that cannot wrap a block (a request's before and teardown hooks):
    binds the user and returns the token `unbind_acting` takes."""
    return _ACTING.set(Acting(sys_id or None, user_name or None))


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


# name -> (takes a whole-number argument, how its value is made)
TOKENS: dict[str, tuple[bool, Callable[[int | None], Any]]] = {
    "getUserID": (False, _user("sys_id")),
    "getUserName": (False, _user("user_name")),
    "nowDateTime": (False, lambda _: now()),
    "beginningOfToday": (False, lambda _: _midnight(now())),
    "endOfToday": (False, lambda _: _midnight(now()) + dt.timedelta(hours=23, minutes=59, seconds=59)),
    "daysAgo": (True, lambda n: now() - dt.timedelta(days=n)),
    "daysAgoStart": (True, lambda n: _midnight(now() - dt.timedelta(days=n))),
    "hoursAgo": (True, lambda n: now() - dt.timedelta(hours=n)),
    "minutesAgo": (True, lambda n: now() - dt.timedelta(minutes=n)),
}
_CALL = re.compile(r"\s*gs\.([A-Za-z]+)\(\s*([^)]*?)\s*\)\s*;?\s*")
_NUMBER = re.compile(r"[+-]?\d{1,6}")  # a million days is far beyond any date a database stores


@dataclass(frozen=True)
class Dynamic:
    """A recognised `javascript:gs.name(arg)` value; prints as its canonical text."""

    name: str
    arg: int | None = None

    def __str__(self) -> str:
        return f"{PREFIX}gs.{self.name}({'' if self.arg is None else self.arg})"

    def value(self) -> Any:
        """Its value now, for the bound user (NO_USER when the token needs a user and none is bound)."""
        return TOKENS[self.name][1](self.arg)


def known() -> str:
    return ", ".join(f"gs.{name}({'N' if takes else ''})" for name, (takes, _) in TOKENS.items())


def parse_dynamic(text: str) -> Dynamic:
    """The Dynamic a `javascript:...` value names; a QueryError naming it when it is not one of TOKENS."""
    call = _CALL.fullmatch(text[len(PREFIX):]) if text.startswith(PREFIX) else None
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
        return node if all(a is b for a, b in zip(items, node.items, strict=True)) else type(node)(items)
    if isinstance(node, Not):
        item = resolve_dynamic(node.item)
        return node if item is node.item else Not(item)
    if not isinstance(node, (Term, PropertyTerm)) or not is_dynamic(node.value):
        return node
    value = value_now(node.value)
    if isinstance(value, list):
        value = [v for v in value if v is not NO_USER]
    elif value is NO_USER:
        return NOTHING
    return replace(node, value=value)
