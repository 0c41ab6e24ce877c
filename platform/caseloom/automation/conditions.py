"""Conditions of rules, notifications and transitions, evaluated against one record in a unit of work.

Dot-walks and system properties are read through the unit of work's cache (`service.lookups`),
which any update empties, so a batch of rows that walk to the same record reads it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..definitions.model import Definitions, TableDef
from ..properties import Properties
from ..query import Query, Term, select_rows
from ..query.conditions import fields_of
from ..query.evaluate import evaluate
from ..records import RecordService


class Conditions:
    """Evaluates declared conditions; remembers which fields each one reads."""

    def __init__(self, defs: Definitions):
        self.defs = defs
        self._reads: dict[int, tuple[str, ...]] = {}  # condition -> the fields it reads

    def holds(self, service: RecordService, condition, tdef: TableDef, record: dict, previous: dict | None,
              props: Properties) -> bool:
        """Whether a rule's or notification's condition holds for a record. For a new record the
        answer depends only on the values the condition reads, so the rows of a batch that share
        them (all the children of one parent) are evaluated once; the memo lives with the unit of
        work's dot-walk cache, which any update empties."""
        if condition is None:
            return True
        key = self._memo_key(condition, tdef, record) if previous is None else None
        if key is not None:
            try:
                return service.lookups[key]
            except KeyError:
                pass
            except TypeError:  # an unhashable value: evaluated every time
                key = None
        result = evaluate(condition, record, previous=previous, properties=props.get,
                          resolve=resolver(service, tdef, record))
        if key is not None:
            service.lookups[key] = result
        return result

    def _memo_key(self, condition, tdef: TableDef, record: dict) -> tuple:
        """The key of a new record's answer: the condition and the values it reads."""
        reads = self._reads.get(id(condition))
        if reads is None:
            reads = self._reads[id(condition)] = tuple(dict.fromkeys(f.split(".")[0] for f in fields_of(condition)))
        return ("holds", id(condition), tdef.name, tuple(record.get(f) for f in reads))


def unit_properties(service: RecordService) -> Properties:
    """The unit of work's system properties, read once (a property's update empties the cache)."""
    props = service.lookups.get("properties")
    if props is None:
        props = service.lookups["properties"] = Properties(service.defs, service.storage, service.conn)
    return props


def resolver(service: RecordService, tdef: TableDef, record: dict) -> Callable[[str], Any]:
    """Dot-walks from the record's own values (so a before-rule sees the reference about to be
    written), then through the database."""
    def resolve(path: str) -> Any:
        first, rest = path.split(".", 1)
        field = tdef.field(first)
        target = record.get(first)
        if field is None or field.type != "reference" or not target:
            return None
        key = (field.reference, target, rest)
        if key not in service.lookups:  # many rows of a batch walk to the same record
            stmt, _ = select_rows(service.storage, field.reference, Query(Term("sys_id", "eq", target)), [rest], 1)
            service.lookups[key] = service.conn.execute(stmt).scalar()
        return service.lookups[key]

    return resolve


def fields_read(condition) -> set[str]:
    """The fields of the record a condition reads (the first step of each dot-walk)."""
    return set() if condition is None else {f.split(".")[0] for f in fields_of(condition)}
