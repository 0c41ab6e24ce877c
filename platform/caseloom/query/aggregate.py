"""Aggregates of a table's records (ServiceNow's GlideAggregate and Aggregate API): a count and the
average, sum, minimum and maximum of fields, for all the records a condition selects or per group
of values (dot-walks allowed), filtered on the aggregates themselves (HAVING) and ordered by them.

One SELECT ... GROUP BY, through the user's read access as every list is: the row rules in the
WHERE, a dot-walked table's rule in its join, a field read under a condition empty where the
record does not match it, so a user counts only what they may read. Each part of a request names
where it came from (`source`: a parameter), and every error says it.
"""

from __future__ import annotations

import datetime as dt
import operator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from ..access import AccessDenied
from ..definitions.model import FieldDef
from ..storage import Storage
from .compile import Readable, Selection
from .nodes import Node, QueryError, Term

FUNCTIONS = ("count", "avg", "sum", "min", "max")
NUMERIC_TYPES = ("integer", "decimal", "duration")
COMPARISONS = {"=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt,
               "<=": operator.le}
MAX_GROUP_FIELDS = 10
MAX_MEASURES = 50
MAX_GROUPS = 10_000  # groups one call answers; more is an error naming the grouping


class AggregateError(QueryError):
    """A part of an aggregate request that cannot be computed; the message starts with its source."""


@dataclass(frozen=True)
class Measure:
    """An aggregate: `function` of the field at `path` (count: of records when `path` is None), or of
    a duration: the seconds from one date-time field to another (`span`, as "time to resolve")."""

    function: str
    path: str | None
    source: str  # where it was asked for (a parameter), for errors
    span: tuple[str, str] | None = None
    share: Node | None = None  # a percent's: the condition of the records counted as the share (reports only)

    @property
    def key(self) -> tuple[str, str | None]:
        if self.share is not None:
            return self.function, repr(self.share)
        return self.function, self.path if self.span is None else "->".join(self.span)


class Seconds(sa.sql.expression.ColumnElement):
    """The seconds from one date-time column to another (NULL when either is empty)."""

    inherit_cache = True
    type = sa.Float()

    def __init__(self, start: sa.ColumnElement, end: sa.ColumnElement):
        self.start, self.end = start, end


@compiles(Seconds, "sqlite")
def _seconds_sqlite(element: Seconds, compiler, **kw) -> str:
    return (f"((julianday({compiler.process(element.end, **kw)}) - julianday({compiler.process(element.start, **kw)}))"
            " * 86400.0)")


@compiles(Seconds)
def _seconds_postgresql(element: Seconds, compiler, **kw) -> str:
    return f"EXTRACT(EPOCH FROM ({compiler.process(element.end, **kw)} - {compiler.process(element.start, **kw)}))"


class Period(sa.sql.expression.ColumnElement):
    """The first day of the day, ISO week (from Monday) or month a date-time column falls in, as the
    text YYYY-MM-DD: a time axis's bucket, the same on both databases."""

    inherit_cache = True
    type = sa.String()

    def __init__(self, column: sa.ColumnElement, per: str):
        if per not in PERIODS:
            raise QueryError(f"a period is one of {', '.join(PERIODS)}, not {per!r}")
        self.column, self.per = column, per


PERIODS = ("day", "week", "month")


@compiles(Period, "sqlite")
def _period_sqlite(element: Period, compiler, **kw) -> str:
    column = compiler.process(element.column, **kw)
    if element.per == "day":
        return f"date({column})"
    if element.per == "week":
        return f"date({column}, '-6 days', 'weekday 1')"
    return f"date({column}, 'start of month')"


@compiles(Period)
def _period_postgresql(element: Period, compiler, **kw) -> str:
    return f"to_char(date_trunc('{element.per}', {compiler.process(element.column, **kw)}), 'YYYY-MM-DD')"


@dataclass(frozen=True)
class Having:
    measure: Measure
    comparison: str  # one of COMPARISONS
    value: float


@dataclass(frozen=True)
class Order:
    """By a grouped field (`path`) or an aggregate (`measure`)."""

    descending: bool
    source: str
    path: str | None = None
    measure: Measure | None = None


@dataclass(frozen=True)
class AggregateQuery:
    where: Node | None
    group_by: tuple[str, ...] = ()
    measures: tuple[Measure, ...] = ()  # what each answer reports
    having: tuple[Having, ...] = ()
    order: tuple[Order, ...] = ()
    group_source: str = "group_by"
    where_source: str = "query"


@dataclass(frozen=True)
class Group:
    path: str
    field: FieldDef
    display: bool  # whether the answers carry the referenced record's display value after the value


@dataclass
class Answer:
    """One row: the grouped values (stored, and the display of a reference when read) and the measures."""

    values: list[tuple[Any, Any]]  # (stored value, display value or None) per group
    measures: dict[tuple[str, str | None], Any]


def aggregate(storage: Storage, conn: sa.Connection, table: str, query: AggregateQuery,
              readable: Readable | None = None) -> tuple[list[Group], list[Answer]]:
    """Run the aggregate in one statement: the groups' fields and one Answer per group (one for the
    whole selection when ungrouped), in the asked order (else by the grouped values). A grouped
    reference's display values are read afterwards, once per group (`displays`), not joined to
    every record counted."""
    stmt, groups, measures = compile_aggregate(storage, table, query, readable)
    width = len(groups)
    answers = [Answer([(row[i], None) for i in range(width)], {key: row[width + j] for j, key in enumerate(measures)})
               for row in conn.execute(stmt)]
    if groups and len(answers) > MAX_GROUPS:
        raise AggregateError(f"{query.group_source}: more than {MAX_GROUPS:,} groups; narrow the query or group "
                             "by fewer fields")
    for i, group in enumerate(groups):
        if group.display:
            shown = displays(storage, conn, group.field, {a.values[i][0] for a in answers}, readable)
            for answer in answers:
                answer.values[i] = (answer.values[i][0], shown.get(answer.values[i][0]))
    return groups, answers


DISPLAY_CHUNK = 500  # referenced records' display values read per statement


def displays(storage: Storage, conn: sa.Connection, field: FieldDef, ids: set, readable: Readable | None = None
             ) -> dict[Any, Any]:
    """sys_id -> display value of the records a reference field's values name, through the user's read
    access as a dot-walk reads them (a record they may not read is left out; a field read under a
    condition is empty where the record does not match it)."""
    target = storage.defs.tables[field.reference]
    sel = Selection(storage, target.name, readable=readable)
    shown, _ = sel.column(target.display)
    key, _ = sel.column("sys_id")
    ids = sorted(i for i in ids if i is not None)
    out: dict[Any, Any] = {}
    for start in range(0, len(ids), DISPLAY_CHUNK):
        condition = sel.condition(Term("sys_id", "in", ids[start:start + DISPLAY_CHUNK]))
        stmt = sa.select(key, shown).select_from(sel.from_clause).where(condition)
        out.update((row[0], row[1]) for row in conn.execute(stmt))
    return out


def compile_aggregate(storage: Storage, table: str, query: AggregateQuery, readable: Readable | None = None
                      ) -> tuple[sa.Select, list[Group], list[tuple[str, str | None]]]:
    """The SELECT: the grouped columns (their stored values: a reference's display values are read
    after it, `displays`), then one column per distinct measure of `query.measures`, in their order;
    HAVING and ORDER BY as asked."""
    if len(query.group_by) > MAX_GROUP_FIELDS:
        raise AggregateError(f"{query.group_source}: at most {MAX_GROUP_FIELDS} fields")
    sel = Selection(storage, table, readable=readable)
    columns: list[sa.ColumnElement] = []
    groups: list[Group] = []
    grouped: dict[str, sa.ColumnElement] = {}
    for path in query.group_by:
        column, field = _column(sel, path, query.group_source)
        if not (field.ftype.queryable and field.ftype.sortable):
            raise AggregateError(f"{query.group_source}: {path}: {field.type} fields cannot be grouped by")
        columns.append(column)
        grouped[path] = column
        groups.append(Group(path, field, _has_display(sel, field)))
    measured: dict[tuple[str, str | None], sa.ColumnElement] = {}
    everything = [*query.measures, *(h.measure for h in query.having), *(o.measure for o in query.order if o.measure)]
    if len(everything) > MAX_MEASURES:
        raise AggregateError(f"at most {MAX_MEASURES} aggregates in one request")
    for measure in everything:
        if measure.key not in measured:
            measured[measure.key] = measure_sql(sel, measure)
    reported = list(dict.fromkeys(m.key for m in query.measures))
    try:
        where = sel.condition(query.where)
    except (QueryError, AccessDenied) as exc:
        raise type(exc)(f"{query.where_source}: {exc}") from None
    stmt = sa.select(*columns, *(measured[key] for key in reported)).select_from(sel.from_clause)
    if where is not None:
        stmt = stmt.where(where)
    if columns:
        stmt = stmt.group_by(*columns)
    if query.having:
        stmt = stmt.having(sa.and_(*(_having(measured[h.measure.key], h) for h in query.having)))
    order = []
    for item in query.order:
        if item.path is not None and item.path not in grouped:
            raise AggregateError(f"{item.source}: {item.path} is not a grouped field "
                                 f"({', '.join(query.group_by) or 'nothing is grouped'})")
        column = grouped[item.path] if item.path is not None else measured[item.measure.key]
        order.append(column.desc() if item.descending else column.asc())
    named = {item.path for item in query.order}
    order += [column.asc() for path, column in grouped.items() if path not in named]  # then by the values
    if order:
        stmt = stmt.order_by(*order)
    if groups:
        stmt = stmt.limit(MAX_GROUPS + 1)
    return stmt, groups, reported


def _column(sel: Selection, path: str, source: str) -> tuple[sa.ColumnElement, FieldDef]:
    try:
        return sel.column(path)
    except AccessDenied as exc:
        raise AccessDenied(f"{source}: {exc}") from None
    except QueryError as exc:
        raise AggregateError(f"{source}: {exc}") from None


def _has_display(sel: Selection, field: FieldDef) -> bool:
    """Whether a grouped reference's values are shown by the referenced records' display values: not
    when its table has none or the user may not read it (the value then stands for itself, as in
    the Table API)."""
    target = sel.defs.tables.get(field.reference) if field.type == "reference" else None
    if target is None or not target.display:
        return False
    try:
        _, shown = Selection(sel.storage, target.name, readable=sel.readable).column(target.display)
    except (AccessDenied, QueryError):
        return False
    return not shown.ftype.hidden


def numeric(field: FieldDef) -> bool:
    """Whether averages and sums of the field mean something: numbers and durations, and choices
    stored as whole numbers (a priority, a state)."""
    return field.type in NUMERIC_TYPES or (field.type == "choice" and field.choice_kind == "integer")


def measure_sql(sel: Selection, measure: Measure) -> sa.ColumnElement:
    """The SQL of one aggregate over `sel`'s rows (its errors name `measure.source`)."""
    if measure.function == "percent" and measure.share is not None:  # a report's share, in percent
        shared = sa.func.sum(sa.case((sel.condition(measure.share), 1), else_=0))
        return sa.cast(shared, sa.Float) * 100.0 / sa.func.nullif(sa.func.count(), 0)
    if measure.function not in FUNCTIONS:
        raise AggregateError(f"{measure.source}: unknown aggregate {measure.function!r} "
                             f"(one of {', '.join(FUNCTIONS)})")
    if measure.span is not None:
        if measure.function not in ("avg", "sum", "min", "max"):
            raise AggregateError(f"{measure.source}: a duration takes avg, sum, min or max, not {measure.function}")
        return getattr(sa.func, measure.function)(_seconds(sel, measure))
    if measure.path is None:
        if measure.function != "count":
            raise AggregateError(f"{measure.source}: {measure.function} needs a field")
        return sa.func.count()
    column, field = _column(sel, measure.path, measure.source)
    if measure.function in ("avg", "sum") and not numeric(field):
        raise AggregateError(f"{measure.source}: {measure.path} is a {field.type} field; {measure.function} takes "
                             f"numbers ({', '.join(NUMERIC_TYPES)}, or a choice stored as a number)")
    if measure.function in ("min", "max") and not field.ftype.sortable:
        raise AggregateError(f"{measure.source}: {measure.path}: {field.type} fields have no {measure.function}")
    if measure.function == "avg":
        return sa.func.avg(sa.cast(column, sa.Float))  # the same number on both databases
    return getattr(sa.func, measure.function)(column)


def _seconds(sel: Selection, measure: Measure) -> Seconds:
    """The seconds of a measure's duration, between its two date-time fields (`span`)."""
    ends = []
    for path in measure.span or ():
        column, field = _column(sel, path, measure.source)
        if field.type != "datetime":
            raise AggregateError(f"{measure.source}: {path} is a {field.type} field, not a date-time")
        ends.append(column)
    return Seconds(*ends)


def medians_by(storage: Storage, conn: sa.Connection, table: str, where: Node | None, measure: Measure,
               group: str, per: str | None = None, readable: Readable | None = None) -> dict[Any, float]:
    """The median of `measure` (as `median`) per value of the field `group`, or per day, week or month
    of it (`per`, a trend's periods, keyed by their first day as text), in one statement through the
    user's read access: each record ranked in its group by the measured value, then the one or two
    middle ones of each group averaged. Groups whose values are all empty are left out."""
    sel = Selection(storage, table, readable=readable)
    value = _median_value(sel, measure)
    key, _ = _column(sel, group, measure.source)
    if per is not None:
        key = Period(key, per)
    try:
        condition = sel.condition(where)
    except (QueryError, AccessDenied) as exc:
        raise type(exc)(f"{measure.source}: {exc}") from None
    present = sa.and_(value.is_not(None), key.is_not(None) if per is not None else sa.true(),
                      *((condition,) if condition is not None else ()))
    ranked = (sa.select(key.label("k"), sa.cast(value, sa.Float).label("v"),
                        sa.func.row_number().over(partition_by=key, order_by=value).label("rn"),
                        sa.func.count().over(partition_by=key).label("n"))
              .select_from(sel.from_clause).where(present).subquery())
    middle = (ranked.c.rn * 2).between(ranked.c.n, ranked.c.n + 2)  # the middle one, or the middle two
    stmt = sa.select(ranked.c.k, sa.func.avg(ranked.c.v)).where(middle).group_by(ranked.c.k)
    return {(str(k) if per is not None else k): float(v) for k, v in conn.execute(stmt)}


def _median_value(sel: Selection, measure: Measure) -> sa.ColumnElement:
    """What a median is taken of: a duration between two date-time fields, or a numeric field."""
    if measure.span is not None:
        return _seconds(sel, measure)
    value, field = _column(sel, measure.path or "", measure.source)
    if not numeric(field):
        raise AggregateError(f"{measure.source}: {measure.path} is a {field.type} field; a median takes numbers")
    return value


def median(storage: Storage, conn: sa.Connection, table: str, where: Node | None, measure: Measure,
           readable: Readable | None = None) -> float | None:
    """The median of a field (a number, a duration) or of a duration between two date-time fields
    (`measure.span`) over the records `where` selects, through the user's read access: the middle
    value, or the mean of the two middle ones (None when there is none). SQLite has no median or
    percentile function, so on both databases it is the count, then the one or two middle values
    read in order (by an index where there is one)."""
    sel = Selection(storage, table, readable=readable)
    value = _median_value(sel, measure)
    try:
        condition = sel.condition(where)
    except (QueryError, AccessDenied) as exc:
        raise type(exc)(f"{measure.source}: {exc}") from None
    present = value.is_not(None) if condition is None else sa.and_(condition, value.is_not(None))
    count = conn.execute(sa.select(sa.func.count()).select_from(sel.from_clause).where(present)).scalar_one()
    if not count:
        return None
    middle = (sa.select(sa.cast(value, sa.Float)).select_from(sel.from_clause).where(present).order_by(value)
              .limit(2 - count % 2).offset((count - 1) // 2))
    values = [float(v) for v in conn.execute(middle).scalars()]
    return sum(values) / len(values)


def _having(expression: sa.ColumnElement, having: Having) -> sa.ColumnElement:
    return COMPARISONS[having.comparison](expression, having.value)


def number_text(value: Any) -> str:
    """An aggregate's number as ServiceNow writes it, a string: whole numbers without a fraction,
    others with at most four decimals ("1.5", "2", "0.3333")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal, float)):
        rounded = round(Decimal(str(value)), 4)
        text = format(rounded.normalize(), "f")
        return "0" if text in ("-0", "") else text
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


__all__ = ["AggregateError", "AggregateQuery", "Answer", "COMPARISONS", "FUNCTIONS", "Group", "Having", "MAX_GROUPS",
           "Measure", "Order", "PERIODS", "Period", "Seconds", "aggregate", "compile_aggregate", "displays", "measure_sql",
           "median", "medians_by",
           "number_text", "numeric"]
