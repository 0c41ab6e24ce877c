"""Evaluate a condition against one record in Python (rules, notifications, action conditions).

Lists and recipients never come here: they compile to SQL. One record's check needs the record
as a dict, for change operators the record before the write, a way to follow dot-walked
references (`resolve`), and the system properties.

A term bound to its field (`meaning.bind_fields`, done once when definitions load, or here with
`table=` and `tables=`) means exactly what it means in SQL: the same `meaning.Check`s, tested on
the record's values in the field's type (`account=Acme` reads `account.name` through `resolve`,
as SQL joins it). A term that is not bound (a condition evaluated with no table, a property)
compares the condition's value in the type of the record's value where it can, else as text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ..definitions.model import TableDef
from ..fieldtypes import FieldValueError, parse_boolean
from .dynamic import resolve_dynamic
from .meaning import Check, Meaning, Typed, bind_fields, coerce, items_of, meaning, other_path, rendered, stored, value_text
from .nodes import All, AnyOf, Node, Not, PropertyTerm, QueryError, Term
from .operators import Operator, operator

Resolver = Callable[[str], Any]  # a dot-walked path -> its value for this record


@dataclass(frozen=True)
class _Record:
    values: dict
    previous: dict | None
    resolve: Resolver | None
    properties: Callable[[str], Any] | None

    def read(self, path: str) -> Any:
        if "." not in path:
            return self.values.get(path)
        if self.resolve is None:
            raise QueryError(f"{path}: dot-walking is not available here")
        return self.resolve(path)


def evaluate(node: Node | None, record: dict, *, previous: dict | None = None,
             resolve: Resolver | None = None, properties: Callable[[str], Any] | None = None,
             table: TableDef | None = None, tables: Mapping[str, TableDef] | None = None) -> bool:
    """Whether `record` satisfies `node` (None: always). With `table` and `tables`, terms not yet
    bound to their fields are bound for this call (binding at load is cheaper)."""
    if node is None:
        return True
    if table is not None and tables is not None:
        node = bind_fields(node, tables, table)
    return _holds(node, _Record(record, previous, resolve, properties))


def _holds(node: Node, record: _Record) -> bool:
    if isinstance(node, Typed) and node.meaning is not None:  # the common case: bound at load, no dynamic value
        return _checks_hold(node.meaning, record)
    if isinstance(node, All):
        return all(_holds(n, record) for n in node.items)
    if isinstance(node, AnyOf):
        return any(_holds(n, record) for n in node.items)
    if isinstance(node, Not):
        return not _holds(node.item, record)
    now = resolve_dynamic(node)  # per term: a condition with none is not copied for each record
    if now is not node:
        return _holds(now, record)
    if isinstance(node, PropertyTerm):
        if record.properties is None:
            raise QueryError(f"property {node.name}: no properties available here")
        return _untyped(operator(node.op), record.properties(node.name), node.value)
    if isinstance(node, Typed):
        return _typed(node, record)
    return _unbound(node, record)


def _typed(term: Typed, record: _Record) -> bool:
    op = operator(term.op)
    if op.field:  # two fields of the record, each in its own type (their kinds checked when bound)
        return op.test(stored(term.target, record.read(term.field)), stored(term.other, record.read(term.value)))
    if op.change is not None:
        new = stored(term.target, record.read(term.field))
        old = None if record.previous is None else stored(term.target, record.previous.get(term.field))
        return op.change(old, new, coerce(term.target, term.field, term.value) if op.takes_value else None)
    return _checks_hold(meaning(term, term.target, term.display), record)


def _checks_hold(found: Meaning, record: _Record) -> bool:
    if len(found.checks) == 1:
        return _check(found.checks[0], record)
    results = (_check(check, record) for check in found.checks)
    return any(results) if found.any else all(results)


def _check(check: Check, record: _Record) -> bool:
    value = record.read(check.path)
    return check.op.test(rendered(check.field, value) if check.text else stored(check.field, value), check.value)


def _unbound(term: Term, record: _Record) -> bool:
    op = operator(term.op)
    if op is None:
        raise QueryError(f"{term.field}: unknown operator {term.op!r}")
    if op.classes:
        raise QueryError(f"{term.field}: INSTANCEOF reads the tables' definitions; this condition is read without them")
    value = record.read(term.field)
    if op.field:  # unbound: the other field's value as this one's value would be compared with it
        return _untyped(op, value, record.read(other_path(term)))
    if op.change is not None:
        before = None if record.previous is None else record.previous.get(term.field)
        sample = value if value is not None else before
        return op.change(*(_as_type_of(sample, v) for v in (before, value, term.value)))
    return _untyped(op, value, term.value)


def _untyped(op: Operator, value: Any, expected: Any) -> bool:
    if isinstance(value, list):  # list properties: `in` and `=` mean membership of the expected value
        if op.name in ("in", "eq"):
            return any(str(w) in map(str, value) for w in items_of(expected))
        value = ",".join(map(str, value))
    if value == "":
        value = None
    if op.text_only:
        return op.test(None if value is None else value_text(value), value_text(expected))
    if not op.takes_value:
        return op.test(value, None)
    if op.list_value:
        return op.test(*_comparable(value, items_of(expected)))
    value, (expected,) = _comparable(value, [expected])
    return op.test(value, expected)


def _comparable(value: Any, expected: list) -> tuple[Any, list]:
    """The record's value and the expected values in one type: the record value's where every
    expected value converts to it, else text."""
    converted = [_as_type_of(value, v) for v in expected]
    if value is None or isinstance(value, str) or not any(isinstance(c, str) for c in converted):
        return value, converted
    return _text_or_none(value), [_text_or_none(v) for v in expected]


_CONVERT: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (bool, parse_boolean),
    (int, lambda v: int(str(v).strip())),
    (Decimal, lambda v: Decimal(str(v).strip())),
    (dt.datetime, lambda v: v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v).strip())),
    (dt.date, lambda v: v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v).strip())),
)


def _as_type_of(sample: Any, value: Any) -> Any:
    """`value` in the type of `sample` (None: empty), as text when it cannot be."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    for kind, convert in _CONVERT:
        if isinstance(sample, kind):
            try:
                return convert(value)
            except (ValueError, TypeError, InvalidOperation, FieldValueError):
                return value_text(value)
    return value_text(value)


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else value_text(value)
