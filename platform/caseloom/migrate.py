"""Bring a database to the schema the definitions describe, with Alembic's operations.

Alembic's autogenerate compares the live database with the Storage metadata; each
resulting operation is checked for data loss before any of them runs. New tables,
fields and indexes are applied; a dropped table or field that holds data, or a type
change that would not fit the values already stored, is refused unless forced.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlalchemy as sa
from alembic.autogenerate import produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.operations import ops as aops

from . import containsindex, emptyfill, indexbuild, textindex
from .database import LOCK_NOT_AVAILABLE
from .storage import Storage

MANAGED = "managed_tables"
# A schema change on PostgreSQL takes its table's ACCESS EXCLUSIVE lock, and while it waits for it
# (behind a long read, an export, a job's unit on the table) every statement after it on that table
# waits too: a live system would stand still for as long as the oldest transaction on the table runs.
# So each try waits at most DDL_LOCK_WAIT_MS for a lock, then rolls back to its savepoint (what had
# queued behind it runs), pauses a little longer each time, and tries again: DDL_TRIES in all, about
# 26 s, before it gives up with TablesInUse and nothing changed.
DDL_LOCK_WAIT_MS = 2000
DDL_TRIES = 8
DDL_PAUSES = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 3.0)  # seconds between tries


class DataLossRefused(Exception):
    """The migration would lose data; nothing was changed."""

    def __init__(self, losses: list[str]):
        self.losses = losses
        super().__init__("refusing to migrate, this would lose data:\n  " + "\n  ".join(losses)
                         + "\nrun again with --force to accept the loss")


class TablesInUse(Exception):
    """Other transactions kept a table a schema change alters in use through every try; nothing was
    changed (the API and the UI answer 503: try again)."""


@dataclass
class Step:
    op: aops.MigrateOperation
    table: str
    description: str
    loss: str | None = None


def _managed_tables(conn: sa.Connection, storage: Storage) -> set[str]:
    meta = storage.internal("sys_meta")
    if not sa.inspect(conn).has_table("sys_meta"):
        return set()
    value = conn.execute(sa.select(meta.c.value).where(meta.c.name == MANAGED)).scalar()
    return set(json.loads(value)) if value else set()


def plan(conn: sa.Connection, storage: Storage) -> list[Step]:
    """Every change the database needs, each with the data it would lose (if any)."""
    managed = _managed_tables(conn, storage) | set(storage.metadata.tables)
    # an index a concurrent build left invalid (indexbuild) is as good as missing: built again if the
    # definitions want it, dropped (as any other) if not
    wanted = {index.name for table in storage.metadata.tables.values() for index in table.indexes}
    broken = indexbuild.invalid(conn) & wanted if conn.dialect.name == "postgresql" else set()

    def include(obj, name, type_, reflected, compare_to):
        if type_ == "table":
            return name in managed
        if type_ == "column" and name == textindex.PG_COLUMN or type_ == "index" and (name or "").startswith("tx_"):
            return False  # a text index's own (caseloom.textindex), made after the migration
        if type_ == "index" and (name or "").startswith(containsindex.PREFIX + "_"):
            return False  # a contains index (caseloom.containsindex), made after the migration
        return True

    def include_name(name, type_, parent_names):  # what is read from the database, before comparing
        return not (type_ == "index" and name in broken)

    context = MigrationContext.configure(conn, opts={"include_object": include, "include_name": include_name,
                                                           "compare_type": True})
    script = produce_migrations(context, storage.metadata)
    steps: list[Step] = []
    for op in script.upgrade_ops.ops:
        if isinstance(op, aops.ModifyTableOps):
            steps.extend(_describe(conn, child, op.table_name) for child in op.ops)
        else:
            steps.append(_describe(conn, op, getattr(op, "table_name", "")))
    steps = [s for s in steps if s is not None]
    return steps + _removed_classes(conn, storage, {s.table for s in steps if isinstance(s.op, aops.CreateTableOp)})


def _removed_classes(conn: sa.Connection, storage: Storage, created: set[str]) -> list[Step]:
    """Rows of a table whose definition is gone while its hierarchy's root table stays
    (a child of `task` removed): nothing physical changes, so autogenerate sees nothing,
    but the rows would be left with a sys_class_name no definition knows."""
    inspector = sa.inspect(conn)
    steps = []
    for root in sorted({t.root for t in storage.defs.tables.values()} - created):
        if not inspector.has_table(root):
            continue
        table = storage.metadata.tables[root]
        column = table.c.sys_class_name
        stmt = (sa.select(column, sa.func.count()).where(column.not_in(storage.classes(root)))
                .group_by(column).order_by(column))
        for name, rows in conn.execute(stmt).all():
            delete = aops.ExecuteSQLOp(sa.delete(table).where(column == name))
            steps.append(Step(delete, root, f"delete the rows of removed table {name} from {root}",
                              f"table {name} and its {rows} rows (stored in {root})"))
    return steps


def _count(conn: sa.Connection, table: str, where: str = "") -> int:
    # Names come from the database's own catalogue and our definitions, quoted by the dialect.
    prep = conn.dialect.identifier_preparer
    sql = f"SELECT COUNT(*) FROM {prep.quote(table)}" + (f" WHERE {where}" if where else "")
    return conn.execute(sa.text(sql)).scalar() or 0


def _describe(conn: sa.Connection, op: aops.MigrateOperation, table: str) -> Step | None:
    quote = conn.dialect.identifier_preparer.quote
    if isinstance(op, aops.CreateTableOp):
        return Step(op, table, f"create table {table}")
    if isinstance(op, aops.DropTableOp):
        rows = _count(conn, table)
        return Step(op, table, f"drop table {table}", f"table {table} and its {rows} rows" if rows else None)
    if isinstance(op, aops.AddColumnOp):
        return Step(op, table, f"add field {table}.{op.column.name}")
    if isinstance(op, aops.DropColumnOp):
        values = _count(conn, table, f"{quote(op.column_name)} IS NOT NULL")
        loss = f"field {table}.{op.column_name} and its {values} values" if values else None
        return Step(op, table, f"drop field {table}.{op.column_name}", loss)
    if isinstance(op, (aops.CreateIndexOp, aops.DropIndexOp)):
        verb = "create" if isinstance(op, aops.CreateIndexOp) else "drop"
        return Step(op, table, f"{verb} index {op.index_name} on {table}")
    if isinstance(op, aops.AlterColumnOp):
        return _describe_alter(conn, op, table)
    return Step(op, table, f"{type(op).__name__} on {table}")


def _describe_alter(conn: sa.Connection, op: aops.AlterColumnOp, table: str) -> Step | None:
    if op.modify_type is None:
        return None  # nullability and defaults are the record service's business
    column = conn.dialect.identifier_preparer.quote(op.column_name)
    old, new = op.existing_type, op.modify_type
    description = f"change field {table}.{op.column_name} from {old} to {new}"
    if isinstance(new, (sa.Text, sa.String)) and not getattr(new, "length", None):
        return Step(op, table, description)  # widening to unlimited text keeps everything
    if isinstance(old, sa.String) and isinstance(new, sa.String):
        if old.length is not None and new.length >= old.length:
            return Step(op, table, description)
        too_long = _count(conn, table, f"LENGTH({column}) > {int(new.length)}")
        loss = f"{too_long} values of {table}.{op.column_name} longer than {new.length}" if too_long else None
        return Step(op, table, description, loss)
    values = _count(conn, table, f"{column} IS NOT NULL")
    loss = f"{values} values of {table}.{op.column_name} would be converted from {old} to {new}" if values else None
    return Step(op, table, description, loss)


def migrate(engine: sa.Engine, storage: Storage, force: bool = False, not_built: list[str] | None = None) -> list[str]:
    """Apply every planned change in one transaction, then build concurrently the new indexes of tables
    that hold rows (indexbuild); returns what was done. What could not be built is added to `not_built`
    (without it, to what is returned)."""
    with engine.begin() as conn:
        done = migrate_connection(conn, storage, force)
        later = indexbuild.take_later(conn)
    notes = indexbuild.build_later(engine, later)
    if not_built is None:
        return done + notes
    not_built.extend(notes)
    return done


def migrate_connection(conn: sa.Connection, storage: Storage, force: bool = False) -> list[str]:
    """Apply every planned change inside the caller's transaction (DDL is transactional on
    SQLite and PostgreSQL, so a later failure undoes the schema change too). On PostgreSQL the new
    indexes of tables that hold rows are left for after the commit: `indexbuild.take_later(conn)`,
    then `indexbuild.build_later`."""
    steps = plan(conn, storage)
    losses = [s.loss for s in steps if s.loss]
    if losses and not force:
        raise DataLossRefused(losses)
    made = apply_steps(conn, storage, steps)
    return [s.description for s in steps] + made


def apply_steps(conn: sa.Connection, storage: Storage, steps: list[Step]) -> list[str]:
    """Run steps from `plan` (already checked for data loss by the caller) in the caller's transaction,
    then make the text and contains indexes what the definitions say (returns what that did). On
    PostgreSQL in tries that give way to the transactions using the tables (DDL_LOCK_WAIT_MS), and the
    new indexes of tables that hold rows kept for after the commit (`indexbuild.take_later`)."""
    indexbuild.take_later(conn)  # what an earlier change on this connection, rolled back, left
    if conn.dialect.name != "postgresql":
        return _apply_steps(conn, storage, steps, [])
    before = conn.exec_driver_sql("SHOW lock_timeout").scalar()
    tried = 0
    while True:
        tried += 1
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {DDL_LOCK_WAIT_MS}")
            later: list[indexbuild.IndexBuild] = []
            made = _apply_steps(conn, storage, steps, later)
        except sa.exc.OperationalError as exc:
            savepoint.rollback()
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:  # not a lock it waited for
                raise
            if tried == DDL_TRIES:
                tables = ", ".join(sorted({s.table for s in steps})) or "the tables' indexes"
                raise TablesInUse(
                    f"other transactions kept using {tables} through {DDL_TRIES} tries of "
                    f"{DDL_LOCK_WAIT_MS / 1000:g} s to change it; nothing was changed. Try again once the long "
                    f"work on it has ended (PostgreSQL's pg_stat_activity shows what runs)") from exc
            time.sleep(DDL_PAUSES[min(tried, len(DDL_PAUSES)) - 1])
        else:
            savepoint.commit()
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{before}'")  # the rest of the transaction as it was
            indexbuild.keep_for_later(conn, later)
            return made


def _apply_steps(conn: sa.Connection, storage: Storage, steps: list[Step], later: list[indexbuild.IndexBuild]
                 ) -> list[str]:
    existing = set(sa.inspect(conn).get_table_names())
    textindex.before_altering(conn, storage, {t: c for t, c in _altered(steps).items() if t in existing})
    _apply(conn, steps, later)
    _remember_tables(conn, storage)
    filled = emptyfill.fill(conn, storage)
    return textindex.ensure(conn, storage, later) + containsindex.ensure(conn, storage, later) + filled


def _altered(steps: list[Step]) -> dict[str, set[str]]:
    """The columns the steps alter or drop, by table."""
    altered: dict[str, set[str]] = {}
    for step in steps:
        if isinstance(step.op, (aops.AlterColumnOp, aops.DropColumnOp)):
            altered.setdefault(step.table, set()).add(step.op.column_name)
    return altered


def planned_indexes(conn: sa.Connection, storage: Storage, steps: list[Step]) -> list[str]:
    """What applying `steps` will then do to the text and contains indexes and to the empty values older
    rows lack (emptyfill), without doing it (the dry run's lines, after the steps' own)."""
    return (textindex.planned(conn, storage, _altered(steps)) + containsindex.planned(conn, storage)
            + emptyfill.planned(conn, storage))


def _apply(conn: sa.Connection, steps: list[Step], later: list[indexbuild.IndexBuild]) -> None:
    operations = Operations(MigrationContext.configure(conn))
    batch = conn.dialect.name == "sqlite"
    for step in steps:
        op = step.op
        if hasattr(op, "column"):
            op.column = op.column._copy()
        if batch and isinstance(op, (aops.AlterColumnOp, aops.DropColumnOp)):
            with operations.batch_alter_table(step.table) as batch_ops:
                batch_ops.invoke(op)
        elif isinstance(op, aops.CreateIndexOp) and conn.dialect.name == "postgresql":
            if indexbuild.has_rows(conn, step.table):  # the build drops an invalid one of its name first
                later.append(indexbuild.IndexBuild(op.index_name, step.table, _concurrently(conn, op)))
            else:
                indexbuild.drop_if_invalid(conn, op.index_name)
                operations.invoke(op)
        elif isinstance(op, aops.DropIndexOp) and conn.dialect.name == "postgresql" and indexbuild.has_rows(conn, step.table):
            later.append(indexbuild.IndexBuild.drop(op.index_name, step.table))
        else:
            operations.invoke(op)


def _concurrently(conn: sa.Connection, op: aops.CreateIndexOp) -> str:
    """The CREATE INDEX CONCURRENTLY statement of `op` (a partial index's condition inline)."""
    index = op.to_index()
    index.dialect_options["postgresql"]["concurrently"] = True
    return str(sa.schema.CreateIndex(index).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))


def _remember_tables(conn: sa.Connection, storage: Storage) -> None:
    meta = storage.internal("sys_meta")
    value = json.dumps(sorted(storage.metadata.tables))
    updated = conn.execute(sa.update(meta).where(meta.c.name == MANAGED).values(value=value)).rowcount
    if not updated:
        conn.execute(sa.insert(meta).values(name=MANAGED, value=value))
