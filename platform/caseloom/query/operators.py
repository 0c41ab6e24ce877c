"""The operator table shared by encoded queries, YAML conditions and the list filter.

One row per operator: its YAML name, its encoded-query token, how it compiles to SQL,
how it tests one value in Python, and the words a person sees. Adding an operator is
adding a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


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
    # Rules only: compares the value before and after a write (`changes`, `changesto`).
    change: Callable[[Any, Any, Any], bool] | None = None


def _is_empty(value: Any) -> bool:
    return value is None or value == ""


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(col, v):
    return sa.func.lower(col).like(f"%{_like_escape(str(v).lower())}%", escape="\\")


def _ordered(py_op):
    def test(a, b):
        if _is_empty(a) or _is_empty(b):
            return False
        try:
            return py_op(a, b)
        except TypeError:
            return py_op(str(a), str(b))

    return test


OPERATORS: dict[str, Operator] = {}


def register(op: Operator) -> Operator:
    OPERATORS[op.name] = op
    return op


register(Operator("eq", "=", "is", lambda c, v: c.is_(None) if v is None else c == v,
                  lambda a, b: _text(a) == _text(b)))
register(Operator("ne", "!=", "is not", lambda c, v: c.is_not(None) if v is None else sa.or_(c != v, c.is_(None)),
                  lambda a, b: _text(a) != _text(b)))
register(Operator("lt", "<", "less than", lambda c, v: c < v, _ordered(lambda a, b: a < b)))
register(Operator("le", "<=", "at most", lambda c, v: c <= v, _ordered(lambda a, b: a <= b)))
register(Operator("gt", ">", "greater than", lambda c, v: c > v, _ordered(lambda a, b: a > b)))
register(Operator("ge", ">=", "at least", lambda c, v: c >= v, _ordered(lambda a, b: a >= b)))
register(Operator("like", "LIKE", "contains", _contains,
                  lambda a, b: _text(b).lower() in _text(a).lower(), text_only=True))
register(Operator("notlike", "NOTLIKE", "does not contain", lambda c, v: sa.or_(~_contains(c, v), c.is_(None)),
                  lambda a, b: _text(b).lower() not in _text(a).lower(), text_only=True))
register(Operator("startswith", "STARTSWITH", "starts with",
                  lambda c, v: sa.func.lower(c).like(f"{_like_escape(str(v).lower())}%", escape="\\"),
                  lambda a, b: _text(a).lower().startswith(_text(b).lower()), text_only=True))
register(Operator("endswith", "ENDSWITH", "ends with",
                  lambda c, v: sa.func.lower(c).like(f"%{_like_escape(str(v).lower())}", escape="\\"),
                  lambda a, b: _text(a).lower().endswith(_text(b).lower()), text_only=True))
register(Operator("in", "IN", "is one of", lambda c, v: c.in_(v),
                  lambda a, b: _text(a) in {_text(x) for x in b}, list_value=True))
register(Operator("notin", "NOTIN", "is not one of", lambda c, v: sa.or_(c.not_in(v), c.is_(None)),
                  lambda a, b: _text(a) not in {_text(x) for x in b}, list_value=True))
register(Operator("empty", "ISEMPTY", "is empty", lambda c, v: c.is_(None),
                  lambda a, b: _is_empty(a), takes_value=False))
register(Operator("notempty", "ISNOTEMPTY", "is not empty", lambda c, v: c.is_not(None),
                  lambda a, b: not _is_empty(a), takes_value=False))



def _no_sql(column, value):
    raise ValueError("change operators compare a record before and after a write; they work in rules only")


register(Operator("changes", "VALCHANGES", "changes", _no_sql, lambda a, b: False, takes_value=False,
                  change=lambda old, new, v: _text(old) != _text(new)))
register(Operator("changesto", "CHANGESTO", "changes to", _no_sql, lambda a, b: False,
                  change=lambda old, new, v: _text(old) != _text(new) and _text(new) == _text(v)))
register(Operator("changesfrom", "CHANGESFROM", "changes from", _no_sql, lambda a, b: False,
                  change=lambda old, new, v: _text(old) != _text(new) and _text(old) == _text(v)))

# Encoded tokens, longest first so `<=` wins over `<` and `NOTLIKE` over `LIKE`.
BY_TOKEN: dict[str, Operator] = {op.token: op for op in OPERATORS.values()}
TOKENS_LONGEST_FIRST = sorted(BY_TOKEN, key=len, reverse=True)
ALIASES = {"=": "eq", "==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge",
           "isempty": "empty", "isnotempty": "notempty"}


def operator(name: str) -> Operator | None:
    """An operator by YAML name, alias or encoded token."""
    key = ALIASES.get(name, name)
    return OPERATORS.get(key) or BY_TOKEN.get(name) or OPERATORS.get(str(name).lower())
