"""The operator table shared by encoded queries, YAML conditions and the list filter.

One row per operator: its YAML name, its encoded-query token, how it compiles to SQL,
how it tests one value in Python, and the words a person sees. Adding an operator is
adding a row (the parity test in tests/test_condition_parity.py then runs it over every
field type, in SQL and in Python).

Both `sql(column, value)` and `test(stored, value)` receive the value already in the
field's stored type (`query.meaning` parses it with the field, as a record's value is
parsed), or None for an empty one; the text operators receive the field's text as the
API renders it and the value as text. The exact meaning, identical in SQL and in Python:

- `=` (eq): `x` equals the value; an empty value (None, "", blanks) matches an empty `x`.
- `!=` (ne): the negation of `=`: an empty `x` matches unless the value is empty.
- `<` `<=` `>` `>=`: numbers and dates by value, booleans false < true, text by Unicode code
  point (on PostgreSQL too, whatever its collation); an empty `x` or value matches nothing.
- `LIKE` `STARTSWITH` `ENDSWITH`: `x`'s text contains / starts / ends with the value's text,
  ignoring case (ASCII letters only on SQLite, whose lower() folds no others); never an empty `x`.
- `NOTLIKE`: the negation of `LIKE`: an empty `x` always matches.
- `IN`: `x` equals one of the values as `=` compares each (an empty item matches an empty `x`);
  no values: nothing. `NOTIN`: its negation.
- `ISEMPTY` / `ISNOTEMPTY`: `x` is / is not empty. `EMPTYSTRING` is `ISEMPTY` (an empty text is stored
  empty); `ANYTHING` holds for every record.
- `DATEPART`: a part of a date or date-time `x` (its day of the week, ISO week, month, quarter, year or hour)
  compared with a value (`query.dateparts`); an empty `x` never matches.
- `INSTANCEOF` (on `sys_class_name`): `x` is the named table or a table extending it.
- `SAMEAS` `NSAMEAS` `GT_FIELD` `GT_OR_EQUALS_FIELD` `LT_FIELD` `LT_OR_EQUALS_FIELD`: `x` compared with
  another field `y` of the same record (the value is `y`'s path), as `=`, `!=`, `>`, `>=`, `<`, `<=`
  compare `x` with `y`'s value: both empty are the same; an empty side is never ordered. The two
  fields are of one kind (`query.meaning.KINDS`): text with text, numbers with numbers, a date
  with a date, a reference with a reference to the same table (the same or not only).

Per field type: strings, text, e-mail, URL and string choices compare exactly (case and
spaces count; a choice compares its value, never its label); integers, decimals (`1.50`
equals `1.5`; SQLite stores decimals as 64-bit floats, exact to 15 significant digits),
booleans (`true`/`1`/`yes`), dates and date-times (`2024-01-02 03:04:05`; a date-time
compared with a date value is at midnight) compare as values, the condition's value parsed
as a form's would be (a value the field would refuse is a QueryError naming the field). A
reference compares its sys_id with a sys_id, and the referenced record's display field with
anything else (`account=Acme`, per item in `IN`); its text (LIKE) is the display value. The
text of a value is what the API shows: `true`/`false`, `1.5`, `2024-01-02 03:04:05`, a
choice's value. Password and journal fields cannot be queried. `changes`, `changesto` and
`changesfrom` compare a record before and after a write, values as `=` compares them: rules
only. A value may be dynamic (`javascript:gs.getUserID()`): see `query.dynamic`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..database import in_list
from .dateparts import holds as part_holds
from .dateparts import sql as part_sql


@dataclass(frozen=True)
class Operator:
    name: str  # as written in YAML conditions
    token: str  # as written in encoded queries
    label: str
    sql: Callable[[sa.ColumnElement, Any], sa.ColumnElement]
    test: Callable[[Any, Any], bool]
    takes_value: bool = True
    list_value: bool = False
    text_only: bool = False  # LIKE and friends: compare as text
    ordered: bool = False  # < and friends: text compares by code point
    negative: bool = False  # the negation of another operator: holds where it does not
    # Rules only: compares the value before and after a write (`changes`, `changesto`).
    change: Callable[[Any, Any, Any], bool] | None = None
    # Compares with another field of the same record (`sameas`, `gt_field`): the value is that field's path, and
    # `sql(column, other_column)`, `test(value, other_value)` receive both sides (see `query.meaning.compared`).
    field: bool = False
    # Takes a table's name and compares a record's class with it and the tables extending it (`INSTANCEOF`):
    # `sql` and `test` receive the class names (see `query.meaning.classes_of`).
    classes: bool = False
    # Compares a part of a date or date-time (`DATEPART`): the value is a `query.dateparts.DatePart`.
    parts: bool = False


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(pattern: Callable[[str], str]) -> Callable[[sa.ColumnElement, Any], sa.ColumnElement]:
    """`lower(x) LIKE lower(pattern)`: both sides folded by the same function, so a value matches
    itself on SQLite too, whose lower() folds ASCII letters only."""
    def sql(col, v):
        return sa.func.lower(col).like(sa.func.lower(sa.literal(pattern(_like_escape(v)), sa.String)), escape="\\")

    return sql


def _contains(col, v):
    return _like(lambda v: f"%{v}%")(col, v)


def _ordered(py_op, sql_op):
    def sql(col, v):  # a literal typed as the column: SQLAlchemy takes no `x < True`
        return sa.false() if v is None else sql_op(col, sa.literal(v, col.type))

    def test(a, b):
        return a is not None and b is not None and py_op(a, b)

    return sql, test


def _eq(a, b) -> bool:
    return a is None if b is None else a is not None and a == b


def _in_sql(col, values):
    present = [v for v in values if v is not None]
    parts = [in_list(col, present)] if present else []
    if len(present) < len(values):
        parts.append(col.is_(None))
    return sa.or_(*parts) if parts else sa.false()


def _not_in_sql(col, values):
    present = [v for v in values if v is not None]
    if len(present) < len(values):
        return sa.and_(col.is_not(None), in_list(col, present, negate=True)) if present else col.is_not(None)
    return sa.or_(in_list(col, present, negate=True), col.is_(None)) if present else sa.true()


OPERATORS: dict[str, Operator] = {}


def register(op: Operator) -> Operator:
    OPERATORS[op.name] = op
    return op


register(Operator("eq", "=", "is", lambda c, v: c.is_(None) if v is None else c == v, _eq))
register(Operator("ne", "!=", "is not", lambda c, v: c.is_not(None) if v is None else sa.or_(c != v, c.is_(None)),
                  lambda a, b: not _eq(a, b), negative=True))
for _name, _token, _label, _op in (("lt", "<", "less than", lambda a, b: a < b),
                                   ("le", "<=", "at most", lambda a, b: a <= b),
                                   ("gt", ">", "greater than", lambda a, b: a > b),
                                   ("ge", ">=", "at least", lambda a, b: a >= b)):
    register(Operator(_name, _token, _label, *_ordered(_op, _op), ordered=True))
register(Operator("like", "LIKE", "contains", _contains,
                  lambda a, b: a is not None and b.lower() in a.lower(), text_only=True))
register(Operator("notlike", "NOTLIKE", "does not contain", lambda c, v: sa.or_(~_contains(c, v), c.is_(None)),
                  lambda a, b: a is None or b.lower() not in a.lower(), text_only=True, negative=True))
register(Operator("startswith", "STARTSWITH", "starts with", _like(lambda v: f"{v}%"),
                  lambda a, b: a is not None and a.lower().startswith(b.lower()), text_only=True))
register(Operator("endswith", "ENDSWITH", "ends with", _like(lambda v: f"%{v}"),
                  lambda a, b: a is not None and a.lower().endswith(b.lower()), text_only=True))
register(Operator("in", "IN", "is one of", _in_sql, lambda a, b: any(_eq(a, v) for v in b), list_value=True))
register(Operator("notin", "NOTIN", "is not one of", _not_in_sql, lambda a, b: not any(_eq(a, v) for v in b),
                  list_value=True, negative=True))
register(Operator("empty", "ISEMPTY", "is empty", lambda c, v: c.is_(None),
                  lambda a, b: a is None, takes_value=False))
register(Operator("notempty", "ISNOTEMPTY", "is not empty", lambda c, v: c.is_not(None),
                  lambda a, b: a is not None, takes_value=False, negative=True))
# ServiceNow's list filters also write these two: "is anything" (no condition on the field at all) and "is empty
# string" (a value stored as an empty text: Caseloom stores none, an empty value is empty)
register(Operator("anything", "ANYTHING", "is anything", lambda c, v: sa.true(), lambda a, b: True,
                  takes_value=False))
register(Operator("emptystring", "EMPTYSTRING", "is empty", lambda c, v: c.is_(None),
                  lambda a, b: a is None, takes_value=False))


# ServiceNow's comparisons of two fields of a record: `ownerSAMEASapprover`, `finishedGT_FIELDdue_on`.
# `sameas` holds where `=` would hold with the other field's value as its value (both empty: the same), and
# `nsameas` is its negation; the ordered ones, like `<`, never hold where either side is empty.
register(Operator("sameas", "SAMEAS", "is the same as", lambda c, o: c.is_not_distinct_from(o), _eq, field=True))
register(Operator("nsameas", "NSAMEAS", "is different from", lambda c, o: c.is_distinct_from(o),
                  lambda a, b: not _eq(a, b), field=True, negative=True))
for _name, _token, _label, _op in (("lt_field", "LT_FIELD", "less than the field", lambda a, b: a < b),
                                   ("le_field", "LT_OR_EQUALS_FIELD", "at most the field", lambda a, b: a <= b),
                                   ("gt_field", "GT_FIELD", "greater than the field", lambda a, b: a > b),
                                   ("ge_field", "GT_OR_EQUALS_FIELD", "at least the field", lambda a, b: a >= b)):
    register(Operator(_name, _token, _label, _op, lambda a, b, _op=_op: a is not None and b is not None and _op(a, b),
                      ordered=True, field=True))


# ServiceNow's date parts: `due_onDATEPARTMonday@javascript:gs.datePart('dayofweek','monday','EE')`
register(Operator("datepart", "DATEPART", "is", part_sql, part_holds, parts=True))

# ServiceNow's `sys_class_nameINSTANCEOFtask`: a record of the table or of a table extending it
register(Operator("instanceof", "INSTANCEOF", "is a", lambda c, names: c.in_(names),
                  lambda a, names: a is not None and a in names, classes=True))


def _no_sql(column, value):
    raise ValueError("change operators compare a record before and after a write; they work in rules only")


# (old, new, value) in the field's stored type, as `=` compares them
register(Operator("changes", "VALCHANGES", "changes", _no_sql, lambda a, b: False, takes_value=False,
                  change=lambda old, new, v: not _eq(old, new)))
register(Operator("changesto", "CHANGESTO", "changes to", _no_sql, lambda a, b: False,
                  change=lambda old, new, v: not _eq(old, new) and _eq(new, v)))
register(Operator("changesfrom", "CHANGESFROM", "changes from", _no_sql, lambda a, b: False,
                  change=lambda old, new, v: not _eq(old, new) and _eq(old, v)))

# Encoded tokens, longest first so `<=` wins over `<` and `NOTLIKE` over `LIKE`.
BY_TOKEN: dict[str, Operator] = {op.token: op for op in OPERATORS.values()}
# ServiceNow writes "is not one of" and "does not contain" with a space (`stateNOT IN6,7`, `nameNOT
# LIKEsap`, as its list's "Copy query" gives them), and takes CONTAINS for LIKE; each reads as the operator's own
# token (which is what Caseloom writes)
BY_TOKEN.update({"NOT IN": OPERATORS["notin"], "NOT LIKE": OPERATORS["notlike"], "CONTAINS": OPERATORS["like"]})
TOKENS_LONGEST_FIRST = sorted(BY_TOKEN, key=len, reverse=True)
ALIASES = {"=": "eq", "==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge",
           "isempty": "empty", "isnotempty": "notempty", "lt_or_equals_field": "le_field",
           "gt_or_equals_field": "ge_field"}


def operator(name: str) -> Operator | None:
    """An operator by YAML name, alias or encoded token."""
    key = ALIASES.get(name, name)
    return OPERATORS.get(key) or BY_TOKEN.get(name) or OPERATORS.get(str(name).lower())
