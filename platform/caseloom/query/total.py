"""A list's total: counted exactly up to a limit, and above it, on PostgreSQL, the planner's estimate.

Counting a million matching rows reads a million rows, however the WHERE is written. A list needs
the exact number only while it is small enough to page through; beyond that "about 1,000,000" is as
useful and costs a plan, not a scan (PostgREST's `count=estimated`). The count first reads at most
`limit + 1` matching rows; only when they are all there does the planner's row estimate of the same
SELECT (user's row rules included) stand in, never below `limit + 1`. SQLite has no row estimate
worth the name (`sqlite_stat1` describes indexes, not a WHERE), and it is the embedded database of
small sites, so there the count stays exact: one `count(*)`, without the bounded probe first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from ..storage import Storage
from .compile import Readable, Selection, count_rows
from .nodes import Query

EXACT_COUNT_LIMIT = "caseloom.list.exact_count_limit"  # the system property lists and the Table API read


@dataclass(frozen=True)
class Total:
    """How many records a list matches: `rows`, exact unless `estimated` (then at least the limit + 1)."""

    rows: int
    estimated: bool = False


class Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON) <select>` with the select's parameters bound as the select binds them."""

    inherit_cache = False

    def __init__(self, select: sa.Select):
        self.select = select


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.select, **kw)


def total_rows(conn: sa.Connection, storage: Storage, table: str, query: Query, readable: Readable | None,
               exact_up_to: int) -> Total:
    """The records of `table` matching `query` that `readable` lets the user read: exact up to
    `exact_up_to` (0 or less: always exact), above it the estimate where the database has one."""
    if exact_up_to <= 0 or conn.dialect.name != "postgresql":
        return Total(conn.execute(count_rows(storage, table, query, readable)).scalar_one())
    # the probe and its plan are outermost statements (the probe a FROM of its count, not correlated),
    # so their aliases are the storage's, made once (Selection's `shared`)
    matching = Selection(storage, table, readable=readable, shared=True).select(sa.literal(1), where=query.where)
    probe = matching.limit(exact_up_to + 1).subquery()
    found = conn.execute(sa.select(sa.func.count()).select_from(probe)).scalar_one()
    if found <= exact_up_to:
        return Total(found)
    return Total(max(planned_rows(conn, matching), exact_up_to + 1), estimated=True)


def planned_rows(conn: sa.Connection, select: sa.Select) -> int:
    """The PostgreSQL planner's estimate of how many rows `select` returns (its top node's Plan Rows)."""
    plan = conn.execute(Explain(select)).scalar_one()
    if isinstance(plan, str | bytes):  # a driver that leaves json undecoded
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])
