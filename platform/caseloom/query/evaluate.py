"""Evaluate a condition against one record in Python (rules and action conditions).

Lists and recipients never come here: they compile to SQL. One record's check needs
the record as a dict, for change operators the record before the write, a way to
follow dot-walked references, and the system properties.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .conditions import All, AnyOf, Node, Not, PropertyTerm, QueryError, Term
from .operators import operator

Resolver = Callable[[str], Any]  # a dot-walked path -> its value for this record


def evaluate(node: Node | None, record: dict, *, previous: dict | None = None,
             resolve: Resolver | None = None, properties: Callable[[str], Any] | None = None) -> bool:
    """Whether `record` satisfies `node` (None: always)."""
    if node is None:
        return True
    if isinstance(node, All):
        return all(evaluate(n, record, previous=previous, resolve=resolve, properties=properties) for n in node.items)
    if isinstance(node, AnyOf):
        return any(evaluate(n, record, previous=previous, resolve=resolve, properties=properties) for n in node.items)
    if isinstance(node, Not):
        return not evaluate(node.item, record, previous=previous, resolve=resolve, properties=properties)
    if isinstance(node, PropertyTerm):
        if properties is None:
            raise QueryError(f"property {node.name}: no properties available here")
        return _test(node.op, properties(node.name), node.value)
    return _term(node, record, previous, resolve)


def _term(term: Term, record: dict, previous: dict | None, resolve: Resolver | None) -> bool:
    op = operator(term.op)
    if "." in term.field:
        if resolve is None:
            raise QueryError(f"{term.field}: dot-walking is not available here")
        value = resolve(term.field)
    else:
        value = record.get(term.field)
    if op.change is not None:
        before = (previous or {}).get(term.field) if previous is not None else None
        return op.change(before, value, term.value) if previous is not None else op.change(None, value, term.value)
    return _test(term.op, value, term.value)


def _test(op_name: str, value: Any, expected: Any) -> bool:
    op = operator(op_name)
    if isinstance(value, list):  # list properties: `in` means membership of the expected value
        if op.name in ("in", "eq"):
            wanted = expected if isinstance(expected, list) else [expected]
            return any(str(w) in map(str, value) for w in wanted)
        value = ",".join(map(str, value))
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(expected, bool):
        expected = "true" if expected else "false"
    return op.test(value, expected)
