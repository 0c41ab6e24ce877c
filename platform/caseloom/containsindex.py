"""Contains indexes (a table's `contains_index:`): string fields whose "contains" searches an index serves.

A B-tree index serves `=`, a range and "starts with", never "contains": `nameLIKEacme` (ServiceNow's
contains, `lower(name) LIKE '%acme%'` here), and a reference's type-ahead, read every row of the table.
Among a million records that is 0.3 to 0.5 s a keystroke on PostgreSQL.

- **PostgreSQL:** a GIN trigram index (the `pg_trgm` extension, which ships with PostgreSQL and which a
  database's owner may create) over each field's lowered value, named `cx_<table>_<field>`: the
  expression the query operators compare (`caseloom.query.operators`), so "contains", "starts with",
  "ends with" and their negations of three characters or more are looked up in it. The planner
  chooses between it and the other indexes by their statistics, as for any index.
- **SQLite:** nothing. It has no trigram index over a column; it is the embedded database of small
  sites, where a contains search reads the table in milliseconds.

`ensure` runs after every migration (as the text indexes' does): it makes the indexes the definitions
name, then ANALYZEs their tables (the planner knows an expression's values only from an index's
statistics), and drops those they no longer name. Alembic's comparison leaves `cx_` indexes alone
(migrate).
"""

from __future__ import annotations

import sqlalchemy as sa

from . import indexbuild
from .storage import Storage, index_name

PREFIX = "cx"


class ExtensionMissing(Exception):
    """pg_trgm could not be created in the database: the message says who can."""


def indexed_fields(storage: Storage, root: str) -> tuple[str, ...]:
    """The fields the physical table `root` keeps a contains index of: those its tables name, in order."""
    return storage.declared_over(root, lambda table: table.contains_index)


def name_of(root: str, field: str) -> str:
    return index_name(root, (field,), PREFIX)


def ensure(conn: sa.Connection, storage: Storage, later: list[indexbuild.IndexBuild] | None = None) -> list[str]:
    """Make the contains indexes the definitions name and drop the others (PostgreSQL); returns what it did.
    An index of a table that holds rows is added to `later` (built or dropped after the commit,
    concurrently) when `later` is given."""
    if conn.dialect.name != "postgresql":
        return []
    wanted, tables, broken = _compare(conn, storage)
    existing = set(tables)
    done = []
    for name in sorted(existing - set(wanted)):
        table = tables[name]
        if later is not None and indexbuild.has_rows(conn, table):  # dropped after the commit, concurrently
            later.append(indexbuild.IndexBuild.drop(name, table))
        else:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
        done.append(f"drop the contains index {name}")
    missing = sorted(set(wanted) - (existing - broken))
    if missing:
        _extension(conn)
    now = set()
    for name in missing:
        root, field = wanted[name]
        create = f'CREATE INDEX "{name}" ON "{root}" USING gin (lower("{field}") gin_trgm_ops)'
        if later is not None and indexbuild.has_rows(conn, root):
            # the build drops an invalid one of its name first; the planner's statistics of the new
            # expression come with the index
            later.append(indexbuild.IndexBuild(name, root, create.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY", 1),
                                               analyze=True))
        else:
            if name in broken:
                conn.exec_driver_sql(f'DROP INDEX "{name}"')
            conn.exec_driver_sql(create)
            now.add(root)
        done.append(f"build the contains index of {root}.{field}")
    for root in sorted(now):  # the planner's statistics of the new expressions
        conn.exec_driver_sql(f'ANALYZE "{root}"')
    return done


def _compare(conn: sa.Connection, storage: Storage) -> tuple[dict[str, tuple[str, str]], dict[str, str], set[str]]:
    """The contains indexes the definitions want (name -> table, field), those there (name -> table), and
    which of those a concurrent build left invalid (built again)."""
    roots = sorted({t.root for t in storage.defs.tables.values()})
    wanted = {name_of(root, f): (root, f) for root in roots for f in indexed_fields(storage, root)}
    tables = dict(conn.execute(sa.text(
        "SELECT indexname, tablename FROM pg_indexes WHERE schemaname = current_schema() AND indexname LIKE :p"),
        {"p": PREFIX + "\\_%"}).all())
    return wanted, tables, set(tables) & indexbuild.invalid(conn)


def planned(conn: sa.Connection, storage: Storage) -> list[str]:
    """What `ensure` will do, without doing it: the dry run's lines."""
    if conn.dialect.name != "postgresql":
        return []
    wanted, tables, broken = _compare(conn, storage)
    return ([f"drop the contains index {name}" for name in sorted(set(tables) - set(wanted))]
            + [f"build the contains index of {wanted[name][0]}.{wanted[name][1]}"
               for name in sorted(set(wanted) - (set(tables) - broken))])


def _extension(conn: sa.Connection) -> None:
    if conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first() is not None:
        return
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise ExtensionMissing(
            f"a contains_index needs PostgreSQL's pg_trgm extension, which Caseloom's database user could not "
            f"create ({reason}): have the database's owner or a superuser run `CREATE EXTENSION pg_trgm;` in it, "
            f"or remove contains_index from the definitions") from exc
