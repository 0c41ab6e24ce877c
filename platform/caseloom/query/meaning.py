"""What a term means for the field it reads: the comparisons it makes, shared by SQL and Python.

`compile` turns each Check into a WHERE clause and `evaluate` tests it on one record, so the
two interpreters cannot disagree on which value is compared with what: a reference compared
with a display value reads the referenced record's display field in both, a value is parsed
by the field's type in both, and the text operators read the text the API shows in both (see
the table in `operators`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..definitions.model import FieldDef, TableDef
from ..fieldtypes import SYS_ID, FieldValueError, is_empty
from .conditions import other_path
from .dateparts import DatePart
from .dynamic import is_dynamic
from .nodes import All, AnyOf, Not, QueryError, Term
from .operators import Operator, operator


@dataclass(frozen=True)
class Check:
    """One comparison: the value at `path` (of type `field`) against `value` with `op`."""

    op: Operator
    path: str
    field: FieldDef
    value: Any
    text: bool = False  # compare the field's rendered text (LIKE and friends)


@dataclass(frozen=True)
class Meaning:
    """A term as checks: one, or for IN/NOTIN one per path its items compare (sys_ids on the
    reference, display values on the display field), ORed for IN and ANDed for NOTIN."""

    checks: tuple[Check, ...]
    any: bool = True


@dataclass(frozen=True)
class Typed(Term):
    """A term bound to the field it reads (see `bind_fields`): evaluate needs no table to type it,
    and its meaning is worked out once, not per record (unless its value is dynamic)."""

    target: FieldDef | None = field(default=None, compare=False, repr=False)
    display: FieldDef | None = field(default=None, compare=False, repr=False)
    meaning: Meaning | None = field(default=None, compare=False, repr=False)
    other: FieldDef | None = field(default=None, compare=False, repr=False)  # a field comparison's other field


def refuse_unqueryable(path: str, fdef: FieldDef) -> None:
    """A field whose type is not `queryable`: a journal field has no column; a password hash is never
    returned, so it cannot be filtered on either (a STARTSWITH probe would read it out one character
    at a time)."""
    if not fdef.ftype.queryable:
        raise QueryError(f"{path}: {fdef.type} fields cannot be queried")


def field_at(tables: Mapping[str, TableDef], table: TableDef, path: str) -> FieldDef:
    """The field a path such as `account.primary_contact.email` ends at; QueryError naming the bad part."""
    parts = path.split(".")
    tdef = table
    for i, part in enumerate(parts):
        fdef = tdef.field(part)
        if fdef is None:
            raise QueryError(f"{path}: table {tdef.name!r} has no field {part!r}")
        if i == len(parts) - 1:
            return fdef
        if fdef.type != "reference":
            raise QueryError(f"{path}: {part!r} is not a reference, so it cannot be dot-walked")
        tdef = tables[fdef.reference]
    raise QueryError(f"empty field path {path!r}")


def display_of(tables: Mapping[str, TableDef], fdef: FieldDef) -> FieldDef | None:
    """The display field of the table a reference points at (None: not a reference, or no display)."""
    target = tables.get(fdef.reference) if fdef.reference else None
    return target.field(target.display) if target is not None and target.display else None


def is_display_value(value: Any) -> bool:
    """A reference's value that is not a sys_id (nor empty) stands for the referenced display value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return False
    return not SYS_ID.match(str(value))


def coerce(fdef: FieldDef, path: str, value: Any, is_list: bool = False) -> Any:
    """A condition's value in the field's stored type, parsed as a form's value would be; a QueryError
    naming the field when the field would refuse it."""
    try:
        if is_list:
            return [None if is_empty(v) else fdef.parse(v) for v in items_of(value)]
        return None if is_empty(value) else fdef.parse(value)  # empty is "is empty" (a boolean stores false)
    except FieldValueError as exc:
        raise QueryError(f"{path}: {exc}") from None


# What a field compares as with another field (`sameas`, `gt_field`): fields of one kind compare, others not.
# A choice compares as its values do; a reference as a sys_id of its table's hierarchy.
KINDS = {"string": "text", "text": "text", "email": "text", "url": "text", "integer": "number", "decimal": "number"}
KIND_WORDS = {"text": "a text", "number": "a number", "boolean": "a true/false", "date": "a date",
              "datetime": "a date and time", "duration": "a duration"}


def kind_of(tables: Mapping[str, TableDef], fdef: FieldDef) -> str:
    """The kind a field compares as with another field: `text`, `number`, ..., `reference:<root table>`."""
    if fdef.type == "reference":
        target = tables.get(fdef.reference)
        return f"reference:{target.root if target is not None else fdef.reference}"
    if fdef.choices:
        return "number" if fdef.choice_kind == "integer" else "text"
    return KINDS.get(fdef.type, fdef.type)


def _kind_words(kind: str) -> str:
    return f"a reference to {kind.split(':', 1)[1]}" if kind.startswith("reference:") else KIND_WORDS.get(kind, kind)


def compared(tables: Mapping[str, TableDef], term: Term, target: FieldDef, other: FieldDef) -> None:
    """Refuse, naming both fields, a comparison of two fields (`term`, an operator with `field`) that no query
    can make: a field of either side that cannot be queried, fields of two kinds, references ordered."""
    op = operator(term.op)
    refuse_unqueryable(term.field, target)
    refuse_unqueryable(term.value, other)
    mine, theirs = kind_of(tables, target), kind_of(tables, other)
    if mine != theirs:
        raise QueryError(f"{term.field}{op.token}{term.value}: {term.field} is {_kind_words(mine)} and "
                         f"{term.value} is {_kind_words(theirs)}; only fields of one kind compare")
    if op.ordered and mine.startswith("reference:"):
        raise QueryError(f"{term.field}{op.token}{term.value}: references have no order; compare them with "
                         f"SAMEAS or NSAMEAS")


def value_text(value: Any) -> str:
    """A condition's value as text, for the text operators (booleans as the API writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def stored(fdef: FieldDef, value: Any) -> Any:
    """A record's value in the field's stored type (a rule may see a value before the database
    has typed it); a value the field would now refuse is compared as it is."""
    if value is None:
        return None
    try:
        return fdef.parse(value)
    except FieldValueError:
        return value


def rendered(fdef: FieldDef, value: Any) -> str | None:
    """A record's value as the text the API shows (None stays None: it matches no text)."""
    value = stored(fdef, value)
    return None if value is None else fdef.render(value)


def classes_of(tables: Mapping[str, TableDef], term: Term) -> tuple[str, ...]:
    """An INSTANCEOF term's classes: the table it names and every table extending it, directly or not."""
    name = str(term.value or "").strip()
    if term.field.rsplit(".", 1)[-1] != "sys_class_name":
        raise QueryError(f"{term.field}INSTANCEOF{name}: INSTANCEOF reads a record's class; write it on "
                         f"sys_class_name (sys_class_nameINSTANCEOF{name or 'task'})")
    if name not in tables:
        raise QueryError(f"{term.field}: INSTANCEOF takes a table's name; there is no table {name!r}")

    def extends(table: TableDef) -> bool:
        while table is not None:
            if table.name == name:
                return True
            table = tables.get(table.extends) if table.extends else None
        return False

    return tuple(t.name for t in tables.values() if extends(t))


def meaning(term: Term, target: FieldDef, display: FieldDef | None,
            tables: Mapping[str, TableDef] | None = None) -> Meaning:
    """The checks a term makes on `target`, the field its path ends at (`display`: the display
    field of the table `target` references, if any; `tables`: the definitions' tables, which
    INSTANCEOF reads). Raises QueryError for what no query can mean."""
    op = operator(term.op)
    refuse_unqueryable(term.field, target)
    if op.classes:
        return Meaning((Check(op, term.field, target, classes_of(tables or {}, term)),))
    if op.parts:
        if target.type not in ("date", "datetime"):
            raise QueryError(f"{term.field}: DATEPART reads a date or a date and time; {term.field} is a "
                             f"{target.type} field")
        return Meaning((Check(op, term.field, target, term.value),))
    if not op.takes_value:
        return Meaning((Check(op, term.field, target, None),))
    if op.text_only:
        if isinstance(term.value, (list, tuple)):
            raise QueryError(f"{term.field}: {op.token} takes one value, not a list")
        path, fdef = (_display_path(term.field, display), display) if display is not None else (term.field, target)
        return Meaning((Check(op, path, fdef, value_text(term.value), text=True),))
    if op.list_value:
        return _list_meaning(op, term, target, display)
    if target.reference and is_display_value(term.value):
        display = _needed(term.field, target, display)
        value = coerce(display, term.field, term.value)
        return Meaning((Check(op, _display_path(term.field, display), display, value),))
    value = coerce(target, term.field, term.value)
    if value is None and op.ordered:  # `priority>=` compares with nothing: no record would match
        raise QueryError(f"{term.field}: {op.label} takes a value")
    return Meaning((Check(op, term.field, target, value),))


def _list_meaning(op: Operator, term: Term, target: FieldDef, display: FieldDef | None) -> Meaning:
    items = items_of(term.value)
    by_display = [v for v in items if target.reference and is_display_value(v)]
    checks = []
    if len(by_display) < len(items) or not items:
        own = [v for v in items if not (target.reference and is_display_value(v))]
        checks.append(Check(op, term.field, target, coerce(target, term.field, own, True)))
    if by_display:
        needed = _needed(term.field, target, display)
        values = coerce(needed, term.field, by_display, True)
        checks.append(Check(op, _display_path(term.field, needed), needed, values))
    return Meaning(tuple(checks), any=not op.negative)


def items_of(value: Any) -> list:
    """A list operator's values (a single value: a list of one; None: none)."""
    return list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]


def _needed(path: str, target: FieldDef, display: FieldDef | None) -> FieldDef:
    if display is None:
        raise QueryError(f"{path}: expected a sys_id; table {target.reference!r} has no display field")
    return display


def _display_path(path: str, display: FieldDef) -> str:
    return f"{path}.{display.name}"


def bind_fields(node: Any, tables: Mapping[str, TableDef], table: TableDef) -> Any:
    """The condition with each term bound to the field it reads on `table` (a Typed term): what a
    rule, notification or action condition is, once, at load. Raises QueryError for a term no query
    could mean (an unknown field, a password, a value the field refuses), naming it."""
    if isinstance(node, (All, AnyOf)):
        return type(node)(tuple(bind_fields(item, tables, table) for item in node.items))
    if isinstance(node, Not):
        return Not(bind_fields(node.item, tables, table))
    if not isinstance(node, Term) or isinstance(node, Typed):
        return node
    op = operator(node.op)
    if op is None:
        raise QueryError(f"{node.field}: unknown operator {node.op!r}")
    target = field_at(tables, table, node.field)
    if op.field:
        other = field_at(tables, table, other_path(node))
        compared(tables, node, target, other)
        return Typed(node.field, node.op, node.value, target, None, None, other)
    display = display_of(tables, target)
    found = None
    later = is_dynamic(node.value) or not _plain(node.value)  # known when it runs: worked out then
    if op.change is not None:
        if op.takes_value and not later:
            coerce(target, node.field, node.value)
    elif later:
        refuse_unqueryable(node.field, target)
    else:
        found = meaning(node, target, display, tables)
    return Typed(node.field, node.op, node.value, target, display, found)


_PLAIN = (str, int, float, Decimal, dt.date, DatePart)  # dt.datetime is a dt.date


def _plain(value: Any) -> bool:
    """Whether a value is data (as YAML, JSON or an encoded query give it), not something that is
    only a value once it runs (a template rendered per record)."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, _PLAIN)
