"""Set-based inserts: one record per row of a SELECT, written by one INSERT ... SELECT.

The record service writes new records row by row in Python (insert_many) because rules,
lifecycles and notifications may look at each row. When a batch's rows differ only in
fields the database supplies (a list's members, values looked up through them) and nothing
that runs around the insert reads those fields, the outcome is the same for every row: the
checks run once, and the rows, their numbers, journal entries and notification e-mails are
written in SQL. `insert_select` decides, and returns None when the rows must go one by one.

A set-based insert analyses the table it grows as a load of row batches does
(bulk.keep_statistics_fresh): a job then plans on it, as the children's job plans on the members a
list's refresh has just inserted. The tables written alongside it, the journal here and the task
SLAs (caseloom.timing.setbased), are left to autovacuum: what reads them next is keyed by the new
records' sys_ids, which PostgreSQL estimates from the index's actual end, not from the statistics.
Analysing them after each batch had been 1.7 to 2.1 s of creating 100,000 children on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import stamps, textindex
from .access import field_rule, row_rule
from .bulk import keep_statistics_fresh
from .setwrite import journal_columns, new_sys_id_sql, sys_id_prefix

if TYPE_CHECKING:
    from .records import RecordService


log = logging.getLogger(__name__)

# Told of the rows each statement inserted: (connection, table, sys_id prefix, count). A background
# job listens (caseloom.jobs.undo) to remember, in the same unit of work, exactly what it created:
# the rows of one statement are the sys_ids prefix + 000000000000 .. prefix + ffffffffffff.
INSERTED: ContextVar[Callable[[sa.Connection, str, str, int], None] | None] = ContextVar(
    "caseloom_inserted", default=None)


def tell_inserted(conn: sa.Connection, table: str, prefix: str, count: int) -> None:
    """Say that `count` new records of `table` have sys_ids starting with `prefix` (see INSERTED)."""
    listener = INSERTED.get()
    if listener is not None and count:
        listener(conn, table, prefix, count)


def _declines(service: RecordService, tdef, values: dict, varying: set[str], validators: tuple) -> str | None:
    """Why the record service itself needs the rows one by one, or None."""
    if not service.set_based:
        return "set-based work is switched off (RecordService.set_based)"
    if validators:
        return f"table {tdef.name!r} has a validator, which runs per record"
    if service._deferred is not None:
        return "references are deferred in this unit of work"
    if service.check_access and not service.trusted and row_rule(service.defs, service.actor, tdef.name, "create") is not True:
        return f"the actor's create rule on {tdef.name!r} has a condition, tested on each record"
    if service.check_access and not service.trusted and not service.actor.is_admin:
        ruled = sorted(f for f in {*values, *varying} if tdef.field(f) is not None
                       and field_rule(service.defs, service.actor, tdef.name, f, "create") is not True)
        if ruled:
            return f"the actor's field rules on {', '.join(ruled)} are tested on each record"
    if varying & set(values):
        return f"{', '.join(sorted(varying & set(values)))} given both as shared values and per row"
    unstored = [f for f in sorted(varying) if tdef.field(f) is None or not tdef.field(f).stored]
    if unstored:
        return f"{', '.join(unstored)} not stored in the row"
    return None


def row_by_row(service: RecordService, tdef, reason: str) -> None:
    """The insert goes row by row; the unit of work remembers why (`service.row_by_row`, by table)."""
    service.row_by_row[tdef.name] = reason
    log.debug("inserts into %s go row by row: %s", tdef.name, reason)
    return None


def insert_select(service: RecordService, table: str, values: dict, select: sa.Select, fields: Sequence[str],
                  source: sa.FromClause | None = None, order_by: Any = None,
                  count: sa.Select | None = None) -> int | None:
    """Insert one `table` record per row of `select`, whose columns are the values of `fields`
    (references read from their tables in this unit of work, so not looked up again), with the
    same other `values` (input values: parsed, checked and defaulted as insert_many does).
    `source`: the table of `select` that yields at most one row per inserted record; `order_by`:
    the order numbers are given in. `count`: a SELECT of a number at least the rows of `select`,
    cheaper to run than counting them (the source's rows without the joins that read values for
    them); a numbered table's numbers are reserved for it, and those the insert leaves unused are
    a gap. Returns how many records were inserted, or None when the table's inserts need each row
    in Python (validators, rules or notifications that read one of `fields`, effects other than
    refusals, templates that are not plain substitutions)."""
    from .records import RecordError, _insert_plan, now, validators_for

    tdef = service.table(table, "create")
    plan = _insert_plan(service.storage, tdef)
    varying = set(fields)
    reason = _declines(service, tdef, values, varying, validators_for(service.storage, tdef.name))
    if reason:
        return row_by_row(service, tdef, reason)
    parsed, entries = service._parse(tdef, values)
    for name, default in plan.journal_defaults:
        entries.setdefault(name, default)
    stamp, user = now(), service.actor.user_name
    defaults = plan.defaults_at(stamp)  # `default: now` fields: the statement's moment, every row's sys_created_on
    record = defaults | parsed
    numbered = tdef.number is not None and tdef.field("number") is not None and record.get("number") is None
    hooks = service._hooks(tdef.name, "insert")
    effects = None
    if hooks is not None:
        in_sql = varying | {"sys_id"} | ({"number"} if numbered else set())
        effects = hooks.insert_set_plan(service, tdef, values, record, entries, varying, in_sql)
        if isinstance(effects, str):
            return row_by_row(service, tdef, effects)
    for name in plan.mandatory:
        if name not in varying and record.get(name) is None and not entries.get(name):
            raise RecordError(name, "is mandatory")
    service._check_references(tdef, [record | {"sys_id": ""}], known=tuple(fields))

    conn, storage = service.conn, service.storage
    dialect = conn.dialect.name
    physical = storage.physical(tdef.name)
    prefix = sys_id_prefix()
    columns: dict[str, sa.ColumnElement] = {"sys_id": new_sys_id_sql(dialect, source, prefix)}
    for name, column in zip(fields, select.selected_columns, strict=True):
        default = defaults.get(name)  # a value looked up as empty leaves the field's default
        columns[name] = column if default is None else sa.func.coalesce(column, sa.literal(default, physical.c[name].type))
    if numbered:
        reserved = conn.execute(count if count is not None
                                else sa.select(sa.func.count()).select_from(select.subquery())).scalar_one()
        if not reserved:
            return 0
        first = _reserve(conn, storage, tdef, reserved)
        columns["number"] = _number_sql(dialect, tdef.number, first - 1 + sa.func.row_number().over(order_by=order_by))
    constants = record | stamps.new_row(tdef.name, user, stamp)
    columns |= {name: sa.literal(value, physical.c[name].type) for name, value in constants.items()
                if name not in columns and name in physical.c}
    with conn.begin_nested():
        statement = sa.insert(physical).from_select(
            list(columns), select.with_only_columns(*columns.values(), maintain_column_froms=True))
        inserted = conn.execute(statement.execution_options(preserve_rowcount=True)).rowcount
        if not inserted:
            return 0
        keep_statistics_fresh(conn, physical, inserted)
        textindex.after_bulk_write(conn, storage, physical.name, inserted)
        if numbered and inserted > reserved:
            raise RecordError("number", "the rows to insert changed while they were numbered; try again")
        low, high = prefix + "0" * 12, prefix + "f" * 12
        new = physical.c.sys_id.between(low, high)  # exactly this statement's rows
        for name in plan.mandatory:
            if name in varying and conn.execute(sa.select(physical.c.sys_id).where(
                    new, physical.c[name].is_(None)).limit(1)).first() is not None:
                raise RecordError(name, "is mandatory")
        if effects is not None:
            effects.before()  # a refusal rolls the rows back
        _journal(service, physical, new, entries, stamp)
        if effects is not None:
            effects.after(low, high)
    service.written.add(tdef.name)
    tell_inserted(conn, tdef.name, prefix, inserted)
    service.note_made(tdef.name, (prefix + "0" * 12, prefix + "f" * 12, inserted))
    return inserted


# Set on a connection whose set-based inserts take their numbers in a transaction of their own
# (PostgreSQL): two slices inserting at once do not wait on the table's number counter.
NUMBERS_APART = "caseloom_numbers_apart"


def _reserve(conn: sa.Connection, storage, tdef, count: int) -> int:
    """Numbers for `count` records: in this unit of work, or, on a connection marked NUMBERS_APART
    (a slice of a job on PostgreSQL), in a transaction of its own, so that slices inserting at once
    do not queue on the counter's row until each commits (a unit that rolls back leaves a gap)."""
    from .records import reserve_numbers

    if conn.info.get(NUMBERS_APART) and conn.dialect.name == "postgresql":
        with conn.engine.begin() as apart:
            return reserve_numbers(apart, storage, tdef, count)
    return reserve_numbers(conn, storage, tdef, count)


def _number_sql(dialect: str, spec, value: sa.ColumnElement) -> sa.ColumnElement:
    """The numbers records.assign_numbers gives: prefix, then the counter zero-padded to `digits`."""
    if dialect == "sqlite":
        return sa.func.printf(spec.prefix.replace("%", "%%") + f"%0{spec.digits}d", value)
    text = sa.cast(value, sa.Text)
    return sa.literal(spec.prefix) + sa.func.lpad(text, sa.func.greatest(spec.digits, sa.func.length(text)), "0")


def _journal(service: RecordService, physical: sa.Table, new: sa.ColumnElement, entries: dict, stamp) -> None:
    """The journal entries of the new records (the same text on each), as records._write_journal."""
    journal = service.storage.physical("sys_journal_field")
    for element, text in entries.items():
        columns = journal_columns(False, element, text, physical, service,
                                  new_sys_id_sql(service.conn.dialect.name, physical), sa.literal(stamp, sa.DateTime))
        statement = sa.insert(journal).from_select(list(columns), sa.select(*columns.values()).where(new))
        service.conn.execute(statement)
        service.written.add("sys_journal_field")


__all__ = ["INSERTED", "insert_select", "tell_inserted"]
