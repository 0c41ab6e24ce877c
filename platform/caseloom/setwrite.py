"""Set-based updates: one change applied to every record matching a condition, in SQL.

Used for parent-to-children sync and cascades: a fixed number of statements whatever
the number of children: one INSERT ... SELECT of audit rows per changed field (taken
before the update, so they hold the old values), one UPDATE, and one INSERT ... SELECT
of journal entries per journal field. Rules do not fire again on each matched record
(ServiceNow's setWorkflow(false) for the same kind of bulk change).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by, array

from . import stamps, textindex
from .database import JOINED_SET
from .definitions.model import TableDef
from .query import Selection

if TYPE_CHECKING:
    from .records import RecordService


def sys_id_prefix() -> str:
    """The first 20 hex digits of the sys_ids of one INSERT ... SELECT: those of a new sys_id
    (the time in milliseconds, then 32 random bits)."""
    from .records import new_sys_id

    return new_sys_id()[:20]


def new_sys_id_sql(dialect: str, source: sa.FromClause | None = None, prefix: str | None = None) -> sa.ColumnElement:
    """Fresh 32-hex sys_ids computed by the database, one per row of one INSERT ... SELECT: a
    prefix (`sys_id_prefix`, one per statement: call this once per statement), then a 48-bit
    serial, the row's place in the SELECT. Ascending ids append to the primary key's index
    instead of touching a random page of it per row, and the statement's rows are the ids
    between prefix + 000000000000 and prefix + ffffffffffff. On SQLite the serial is the rowid
    of `source` (each source row yields at most one row per statement), cheaper than a window
    function."""
    prefix = prefix or sys_id_prefix()
    if dialect == "sqlite":
        serial = sa.literal_column(f"{source.name}.rowid") if source is not None else sa.func.row_number().over()
        return sa.func.printf("%s%012x", prefix, serial)
    return sa.literal(prefix) + sa.func.lpad(sa.func.to_hex(sa.func.row_number().over()), 12, "0")


def joined_set(dialect: str, values: list[sa.ColumnElement]) -> sa.ColumnElement:
    """The distinct non-empty texts of `values` (expressions of one row), sorted by code point and
    joined by commas, or NULL when there are none: what `",".join(sorted({...}))` makes of them in
    Python (an e-mail's recipients from several addresses). On PostgreSQL an ordered aggregate over
    the values, compared byte by byte (`COLLATE "C"`, Python's order whatever the database's
    collation); SQLite (before 3.44) has no ordered aggregate, so there it is a function every
    connection has (`database.JOINED_SET`)."""
    if dialect == "sqlite":
        return getattr(sa.func, JOINED_SET)(*values)
    value = sa.func.unnest(array([sa.cast(v, sa.Text) for v in values])).column_valued("value")
    ordered = value.collate("C")
    return sa.select(sa.func.string_agg(sa.distinct(ordered), aggregate_order_by(sa.literal(",", sa.Text), ordered))
                     ).where(value != "").scalar_subquery()


def _as_text(column: sa.ColumnElement, field_type: str) -> sa.ColumnElement:
    if field_type == "boolean":
        return sa.case((column.is_(None), None), (column, "true"), else_="false")
    return sa.cast(column, sa.Text)


def update_where(service: RecordService, tdef: TableDef, where: Any, values: dict,
                 journal: dict[str, str] | None = None) -> int:
    """Apply `values` (already parsed) and `journal` entries to every `tdef` record matching
    `where` (a condition Node) whose values differ; returns how many records changed."""
    journal = {k: v for k, v in (journal or {}).items() if v}
    service.lookups.clear()
    storage, conn, actor = service.storage, service.conn, service.actor
    physical = storage.physical(tdef.name)
    selection = Selection(storage, tdef.name)
    base = selection.condition(where)
    if selection.from_clause is selection.base:  # no dot-walks: the condition goes on the table itself
        selection = Selection(storage, tdef.name, alias=False)
        base = selection.condition(where)
    differs = [selection.base.c[name].is_distinct_from(value) for name, value in values.items()]
    if not differs and not journal:
        return 0
    changed = sa.and_(base, sa.or_(*differs)) if differs and not journal else base
    if selection.base is physical:
        row_filter = changed if changed is not None else sa.true()
    else:  # rows found through joins: by their sys_ids
        ids = sa.select(selection.base.c.sys_id).select_from(selection.from_clause).where(changed)
        row_filter = physical.c.sys_id.in_(ids.scalar_subquery())
    stamp = _stamp()
    audit = storage.physical("sys_audit")
    journal_table = storage.physical("sys_journal_field")
    dialect = conn.dialect.name
    # Audit and journal rows first: they read the old values of exactly the rows about to change.
    for name, value in (values if tdef.audit else {}).items():
        field = tdef.field(name)
        if not field.audit:
            continue
        rendered = None if value is None else field.render(value)
        column = physical.c[name]
        columns = (stamps.new_rows_sql("sys_audit", actor.user_name, stamp, new_sys_id_sql(dialect, physical))
                   | stamps.audit_columns_sql(physical, name, _as_text(column, field.type),
                                              sa.literal(rendered, sa.Text), actor.user_name, service.transaction))
        select = sa.select(*columns.values()).where(row_filter, column.is_distinct_from(value))
        conn.execute(sa.insert(audit).from_select(list(columns), select))
    for name, text in journal.items():  # each entry audited as the row path audits it: where table and field are
        audited = tdef.audit and tdef.field(name).audit
        for target in (journal_table, audit) if audited else (journal_table,):
            new_id = new_sys_id_sql(dialect, physical)
            cols = journal_columns(target is audit, name, text, physical, service, new_id, stamp)
            conn.execute(sa.insert(target).from_select(list(cols), sa.select(*cols.values()).where(row_filter)))
    update = sa.update(physical).where(row_filter).values(**values, **stamps.touched_sql(physical, actor.user_name, stamp))
    automation = service.automation
    if automation is None or not automation.has_slas(service, tdef.name):
        result = conn.execute(update)
    else:  # the records' SLAs follow their new values (caseloom.timing), found before the values change
        with touched_ids(conn, sa.select(physical.c.sys_id).where(row_filter)) as touched:
            result = conn.execute(update)
            automation.after_set_update(service, tdef, touched)
    service.written.add(tdef.name)
    textindex.after_bulk_write(conn, storage, physical.name, result.rowcount)
    return result.rowcount


@contextmanager
def touched_ids(conn: sa.Connection, select: sa.Select) -> Iterator[Touched]:
    """The sys_ids `select` finds now, kept in a temporary table for the statements that follow (an
    UPDATE changes the values that found them)."""
    with kept_rows(conn, select, "touched") as table, _without_merge_joins(conn):
        low = high = None
        if conn.dialect.name == "postgresql":  # their key's range too (see Touched)
            low, high = conn.execute(sa.select(sa.func.min(table.c.sys_id), sa.func.max(table.c.sys_id))).one()
        yield Touched(low=low, high=high, ids=sa.select(table.c.sys_id))


@contextmanager
def _without_merge_joins(conn: sa.Connection) -> Iterator[None]:
    """On PostgreSQL, no merge join for the statements that read the touched records (`sys_id IN (SELECT
    ...)`, a semi-join). Two plans were measured on a million-row table, 100,000 rows touched:
    - a merge join walks the whole primary key to meet the touched ids (2.75 s); with SSD costs
      (`random_page_cost = 1.1`) the planner prefers it to probing the key once per id (1.0 s), and
      without merge joins it probes;
    - the earlier `sys_id = ANY(ARRAY(SELECT ...))` always probed when it was the only condition, but
      beside a condition the planner believed selective (a state no record had when the statistics were
      taken, as after the very UPDATE that set it) it became a filter comparing each row with every id:
      quadratic, 2.2 s for 10,000 touched rows, where the semi-join takes 0.05 s.
    The setting is the transaction's (`set_config(..., true)`), put back on the way out; a database error
    rolls it back with the statement's transaction."""
    if conn.dialect.name != "postgresql":
        yield
        return
    before = conn.exec_driver_sql("SELECT current_setting('enable_mergejoin'), "
                                  "set_config('enable_mergejoin', 'off', true)").scalar_one()
    try:
        yield
    except sa.exc.DBAPIError:
        raise
    except BaseException:
        _set_merge_joins(conn, before)
        raise
    _set_merge_joins(conn, before)


def _set_merge_joins(conn: sa.Connection, value: str) -> None:
    conn.exec_driver_sql("SELECT set_config('enable_mergejoin', %(v)s, true)", {"v": value})


@contextmanager
def kept_rows(conn: sa.Connection, select: sa.Select, name: str) -> Iterator[sa.Table]:
    """The rows `select` finds now (its first column a sys_id, the key), kept in a temporary table
    for the statements that follow: found once, however many statements then read them. On
    PostgreSQL the table is analyzed (autovacuum never sees a temporary table), so the planner knows
    how many rows the statements that join it will meet."""
    first, *rest = select.selected_columns
    with _temporary(conn, name, sa.Column(first.name, sa.String(32), primary_key=True),
                    *(sa.Column(c.name, c.type) for c in rest)) as table:
        conn.execute(sa.insert(table).from_select([c.name for c in table.c], select))
        yield _analyzed(conn, table)


@contextmanager
def kept_values(conn: sa.Connection, name: str, key: sa.Column, columns: list[sa.Column],
                rows: list[dict]) -> Iterator[sa.Table]:
    """`rows` (worked out in Python) in a temporary table with the primary key `key` and `columns`,
    for one statement to join instead of one statement per row."""
    with _temporary(conn, name, key, *columns) as table:
        conn.execute(sa.insert(table), rows)
        yield _analyzed(conn, table)


@contextmanager
def _temporary(conn: sa.Connection, name: str, *columns: sa.Column) -> Iterator[sa.Table]:
    table = sa.Table(f"{name}_{sys_id_prefix()[-8:]}", sa.MetaData(), *columns, prefixes=["TEMPORARY"])
    table.create(conn)
    try:
        yield table
    finally:
        table.drop(conn)


def _analyzed(conn: sa.Connection, table: sa.Table) -> sa.Table:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"ANALYZE {table.name}"))
    return table


@dataclass(frozen=True)
class Touched:
    """The records one set-based write touched: the sys_ids between `low` and `high` (the rows of
    one INSERT ... SELECT, see new_sys_id_sql) or those `ids` selects (an UPDATE's, kept in a
    temporary table by touched_ids).

    A range is a plain condition on the key, or on a column that refers to the records: cheaper
    than `sys_id IN (SELECT ...)`, which SQLite first builds into a temporary index, once per
    statement (a third of the time of attaching 100,000 SLAs).

    On PostgreSQL, `ids` come with their range as well (`low` and `high`: the smallest and largest of
    them), which adds nothing to what is selected but tells the planner where they are: a parent's
    children were made together, so their keys are one run of the primary key. Without it the planner
    hashes the touched ids and scans the whole table for them (0.52 s among a million records for a
    sync of 100,000 children), where the range reads just their run (0.14 s)."""

    low: str | None = None
    high: str | None = None
    ids: sa.Select | None = None

    def of(self, column: sa.ColumnElement) -> sa.ColumnElement:
        """`column` (a sys_id, or a reference to the records) is one of the touched records'."""
        if self.ids is None:
            return column.between(self.low, self.high)
        among = column.in_(self.ids.scalar_subquery())
        return among if self.low is None else sa.and_(column.between(self.low, self.high), among)

    def where(self, table: sa.FromClause) -> sa.ColumnElement:
        """The rows of `table` (the records' physical table or an alias of it) that were touched."""
        return self.of(table.c.sys_id)

    def count(self, table: sa.FromClause) -> sa.Select:
        """How many records were touched (`table`: their physical table)."""
        if self.ids is not None:
            return sa.select(sa.func.count()).select_from(self.ids.subquery())
        return sa.select(sa.func.count()).select_from(table).where(self.where(table))


def journal_columns(for_audit: bool, name: str, text: str, physical: sa.Table, service, new_id, stamp) -> dict:
    """The columns of an INSERT ... SELECT from `physical` of one journal entry `text` in field
    `name` per selected record (or, `for_audit`, of the audit row of that entry)."""
    user = service.actor.user_name
    common = stamps.new_rows_sql("sys_audit" if for_audit else "sys_journal_field", user, stamp, new_id)
    if for_audit:
        return common | stamps.audit_columns_sql(physical, name, sa.null(), sa.literal(text, sa.Text), user,
                                                 service.transaction)
    return common | {"name": physical.c.sys_class_name, "element_id": physical.c.sys_id,
                     "element": sa.literal(name), "value": sa.literal(text, sa.Text)}


def _stamp() -> sa.ColumnElement:
    from .records import now

    return sa.literal(now(), sa.DateTime)


__all__ = ["Touched", "update_where", "new_sys_id_sql", "sys_id_prefix", "journal_columns", "touched_ids", "kept_rows",
           "kept_values"]
