"""Values older rows lack, filled once a field says what they are (part of every migration).

- A field that declares `default: now` (a new record takes the moment it is created, its
  `sys_created_on`) gives the rows it left empty before the default existed that same moment: their
  `sys_created_on` (a date field: its day). So a report or a count by it sees the records made
  before, as a record's moment of opening is never empty on ServiceNow.
- A boolean is never empty (a `null` is stored `false`): rows stored empty before that rule get `false`.
- A field that declares `fill: {from: FIELD, where: QUERY}` gives the rows it left empty (those the table
  held before the field existed) FIELD's value, on the rows QUERY matches (every row without one): a
  record's moment of resolution from its moment of closing, on the records closed.

Each (physical table, field) is filled once, noted in `sys_meta` (`filled:<table>.<field>`), in the
migration's transaction: a later empty value, which the write path does not allow, is not looked for
again on every start. Rows of the classes that do not have the field (a sibling table's, stored in
the same physical table) are left alone. No audit row or `sys_updated_on` change: as a column
default filling existing rows, it is the schema's doing, not a user's.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .definitions.model import FieldDef
from .query import Selection, parse_encoded
from .storage import Storage

PREFIX = "filled:"


@dataclass(frozen=True)
class Fill:
    root: str  # the physical table
    field: FieldDef
    classes: tuple[str, ...] | None  # sys_class_name values that have the field; None: every row

    @property
    def key(self) -> str:
        return f"{PREFIX}{self.root}.{self.field.name}"

    @property
    def source(self) -> str:
        if self.field.fill is not None:
            return self.field.fill[0]
        return "sys_created_on" if self.field.default_now else "false"


def _wanted(storage: Storage) -> list[Fill]:
    """Every field of a physical table with empty values to fill, and the classes that have it."""
    defs, found = storage.defs, []
    for root in sorted({t.root for t in defs.tables.values()}):
        classes = defs.descendants(root)
        by_field: dict[str, tuple[FieldDef, list[str]]] = {}
        for name in classes:
            for field in defs.tables[name].fields.values():
                if field.system or not field.stored:
                    continue
                if field.default_now or field.type == "boolean" or field.fill is not None:
                    by_field.setdefault(field.name, (field, []))[1].append(name)
        for field, having in by_field.values():
            everyone = set(having) == set(classes) or "sys_class_name" not in storage.metadata.tables[root].c
            found.append(Fill(root, field, None if everyone else tuple(sorted(having))))
    return found


def _pending(conn: sa.Connection, storage: Storage) -> list[Fill]:
    meta = storage.internal("sys_meta")
    done = set(conn.execute(sa.select(meta.c.name).where(meta.c.name.startswith(PREFIX))).scalars())
    existing = set(sa.inspect(conn).get_table_names())
    return [f for f in _wanted(storage) if f.key not in done and f.root in existing]


def _where(storage: Storage, fill: Fill) -> tuple[sa.Table, sa.ColumnElement]:
    table = storage.metadata.tables[fill.root]
    return table, sa.and_(table.c[fill.field.name].is_(None), _rows(storage, fill, table))


def _rows(storage: Storage, fill: Fill, table: sa.Table) -> sa.ColumnElement:
    """The rows a fill is for, whatever they hold now: those of the classes with the field, and for a declared
    `fill` those whose source has a value and that its condition matches."""
    where = sa.true() if fill.classes is None else table.c.sys_class_name.in_(fill.classes)
    if fill.field.fill is None:
        return where
    source, condition = fill.field.fill
    where = sa.and_(where, table.c[source].is_not(None))
    if condition.strip():  # on the physical table itself: an UPDATE's WHERE (checked at load: no dot-walk)
        matched = Selection(storage, fill.field.table, alias=False).condition(parse_encoded(condition).where)
        where = sa.and_(where, matched)
    return where


def fill(conn: sa.Connection, storage: Storage) -> list[str]:
    """Fill what each field not yet filled left empty, note it as done, and say what was filled."""
    said, meta = [], storage.internal("sys_meta")
    for one in _pending(conn, storage):
        table, where = _where(storage, one)
        column = table.c[one.field.name]
        if one.field.fill is not None:
            value = table.c[one.source]
        elif one.field.default_now:
            created = table.c.sys_created_on
            value = created if one.field.type == "datetime" else (
                sa.func.date(created) if conn.dialect.name == "sqlite" else sa.cast(created, sa.Date))
        else:
            value = sa.false()
        filled = conn.execute(sa.update(table).where(where).values({column: value})).rowcount
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(meta)
        # a migration run at the same time by another process (two servers starting) noted it already
        conn.execute(insert.values(name=one.key, value=one.source).on_conflict_do_nothing())
        if filled:
            said.append(f"filled {filled:,} empty {one.root}.{one.field.name} with {one.source}")
    return said


def planned(conn: sa.Connection, storage: Storage) -> list[str]:
    """What `fill` would do now, without doing it (a dry run's lines)."""
    said, inspector = [], sa.inspect(conn)
    if not inspector.has_table("sys_meta"):
        return said
    columns: dict[str, set[str]] = {}
    for one in _pending(conn, storage):
        table, where = _where(storage, one)
        if one.root not in columns:
            columns[one.root] = {c["name"] for c in inspector.get_columns(one.root)}
        if one.field.fill is not None and one.field.fill[0] not in columns[one.root]:
            continue  # filled from a field the migration adds too: nothing to copy yet
        if one.field.name not in columns[one.root]:
            if not one.field.default_now and one.field.fill is None:
                continue  # a boolean column the migration adds: its rows take the column's default
            where = _rows(storage, one, table)  # a column the migration adds: each of its rows is empty
        count = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
        if count:
            said.append(f"fill {count:,} empty {one.root}.{one.field.name} with {one.source}")
    return said


__all__ = ["fill", "planned"]
