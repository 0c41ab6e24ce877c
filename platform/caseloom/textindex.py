"""Full-text indexes (a table's `text_index:`): the words of some text fields, kept current by the
database itself, so every write path keeps them current, set-based ones included.

- **SQLite:** an FTS5 table `<table>_text` (porter stemming over unicode61) with the physical table
  as its external content, and three triggers (after insert, update of the indexed fields, delete).
- **PostgreSQL:** a generated column `sys_text` (`to_tsvector('english', ...)` of the fields, stored)
  and a GIN index on it.

The physical table of a hierarchy (task) holds the union of the fields its tables index. A query asks
for it with ServiceNow's keyword term `123TEXTQUERY321=words` (every word, the last one as typed so far:
"storage sl" finds "Storage volume is slow"; the others whole, as the index stems them, so a common word
is looked up, never every word it begins); a list's quick search uses it where a table has one. `ensure`
runs after every migration: it makes what is missing, and rebuilds an index whose fields changed or
whose table SQLite rebuilt (a dropped or altered column: the triggers are gone and row ids may move).
"""

from __future__ import annotations

import json
import re

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from . import indexbuild
from .query.conditions import TEXT_QUERY
from .storage import Storage

PG_COLUMN = "sys_text"
LANGUAGE = "english"
META = "text_index:"  # sys_meta rows: the fields each physical table's index holds
_WORD = re.compile(r"\w+", re.UNICODE)


def indexed_fields(storage: Storage, root: str) -> tuple[str, ...]:
    """The fields the physical table `root` indexes: those its tables' `text_index` name, in order."""
    return storage.declared_over(root, lambda table: table.text_index)


def words(text: str) -> list[str]:
    """The words of a search, lower-cased (anything else in it, quotes and operators, is dropped)."""
    return [w.lower() for w in _WORD.findall(text)][:32]


class TextMatch(sa.sql.expression.ColumnElement):
    """The row of `base` (the physical table, or its alias) has every word (the last as a prefix) in its
    physical table's text index; compiled for each database."""

    inherit_cache = False
    type = sa.Boolean()
    # a condition already: never compared with 1 (SQLite's `x = 1` for a boolean would keep the planner
    # from looking the rows up by the index's row ids, so a list in some order would scan the table)
    _is_implicitly_boolean = True

    def __init__(self, base: str, root: str, found: list[str]):
        self.base, self.root, self.found = base, root, found


@compiles(TextMatch, "sqlite")
def _match_sqlite(element: TextMatch, compiler, **kw) -> str:
    words = [f'"{w}"' for w in element.found[:-1]] + [f'"{element.found[-1]}"*']
    query = compiler.process(sa.literal(" ".join(words)), **kw)
    fts = f"{element.root}_text"
    return f'"{element.base}".rowid IN (SELECT rowid FROM "{fts}" WHERE "{fts}" MATCH {query})'


@compiles(TextMatch)
def _match_postgresql(element: TextMatch, compiler, **kw) -> str:
    words = [*element.found[:-1], f"{element.found[-1]}:*"]
    query = compiler.process(sa.literal(" & ".join(words)), **kw)
    return f"\"{element.base}\".{PG_COLUMN} @@ to_tsquery('{LANGUAGE}', {query})"


def match(storage: Storage, base: sa.FromClause, table: str, text: str) -> sa.ColumnElement:
    """The SQL condition: the row of `base` has every word of `text` (the last as a prefix) in the text index
    of `table`'s physical table (false for a search with no words)."""
    found = words(text)
    if not found:
        return sa.false()
    return TextMatch(base.name, storage.defs.tables[table].root, found)


def index_name(root: str) -> str:
    """The name of the text index of the physical table `root` (PostgreSQL)."""
    return f"tx_{root}"


# rows one set-based statement writes to a table with a text index, from which PostgreSQL's pending list is
# emptied at once (`after_bulk_write`)
CLEAN_FROM = 10_000
# only an index's owner may (a deployment whose tables another role owns leaves the list to the database)
_CLEAN = sa.text("SELECT gin_clean_pending_list(i.indexrelid) FROM pg_index AS i JOIN pg_class AS c "
                 "ON c.oid = i.indexrelid WHERE i.indexrelid = to_regclass(:name) AND i.indisvalid "
                 "AND pg_has_role(current_user, c.relowner, 'USAGE')")


def after_bulk_write(conn: sa.Connection, storage: Storage, root: str, rows: int) -> None:
    """PostgreSQL: after one statement inserted or updated `rows` rows of the physical table `root` (at least
    CLEAN_FROM), move its text index's pending entries into the index. A GIN index takes new entries into a
    pending list (`fastupdate`), which every search reads whole; the write that takes it past 4 MB empties
    it, unless autovacuum is emptying it then, so after a job's writes it could hold a hundred thousand
    rows' words: 110 to 166 ms for one search of 200,000 pending rows, against under a millisecond
    once emptied (51 ms). The job empties it now, in its own time (what the writes would pay anyway)."""
    if rows < CLEAN_FROM or conn.dialect.name != "postgresql" or not indexed_fields(storage, root):
        return
    conn.execute(_CLEAN, {"name": index_name(root)})


def ensure(conn: sa.Connection, storage: Storage, later: list[indexbuild.IndexBuild] | None = None) -> list[str]:
    """Make or rebuild what the definitions' text indexes need; returns what it did. On PostgreSQL the
    GIN index of a table that holds rows is added to `later` (built after the commit, concurrently)
    when `later` is given."""
    done = []
    roots = sorted({t.root for t in storage.defs.tables.values()})
    for root in roots:
        fields = indexed_fields(storage, root)
        stored = _stored(conn, storage, root)
        if conn.dialect.name == "postgresql":
            done += _ensure_pg(conn, root, fields, stored, later)
        else:
            done += _ensure_sqlite(conn, root, fields, stored)
        if tuple(stored or ()) != fields:
            _remember(conn, storage, root, fields)
    return done


def before_altering(conn: sa.Connection, storage: Storage, columns: dict[str, set[str]]) -> None:
    """On PostgreSQL, drop the text index of the tables (keys of `columns`) where a migration alters or drops
    a column its generated column reads (such a column cannot change type or go while the generated column
    reads it); `ensure` makes it again afterwards. Only then: adding the generated column again rewrites the
    whole table under its lock, where widening another field changes nothing but the catalogue."""
    if conn.dialect.name != "postgresql":
        return
    for root in sorted(columns):
        if columns[root] & set(_stored(conn, storage, root) or ()):
            conn.exec_driver_sql(f'ALTER TABLE "{root}" DROP COLUMN IF EXISTS {PG_COLUMN}')
            _remember(conn, storage, root, ())


def _stored(conn: sa.Connection, storage: Storage, root: str) -> list[str] | None:
    meta = storage.internal("sys_meta")
    value = conn.execute(sa.select(meta.c.value).where(meta.c.name == META + root)).scalar()
    return json.loads(value) if value else None


def _remember(conn: sa.Connection, storage: Storage, root: str, fields: tuple[str, ...]) -> None:
    meta = storage.internal("sys_meta")
    conn.execute(sa.delete(meta).where(meta.c.name == META + root))
    if fields:
        conn.execute(sa.insert(meta).values(name=META + root, value=json.dumps(list(fields))))


def _sqlite_parts(conn: sa.Connection, root: str) -> list[str]:
    """Which of the text index's table and three triggers are there (SQLite)."""
    fts = f"{root}_text"
    names = [f"{root}_text_{kind}" for kind in ("insert", "update", "delete")]
    return conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') AND name IN "
                                "(:a, :b, :c, :d)"), {"a": fts, "b": names[0], "c": names[1], "d": names[2]}
                        ).scalars().all()


def _ensure_sqlite(conn: sa.Connection, root: str, fields: tuple[str, ...], stored: list[str] | None) -> list[str]:
    fts = f"{root}_text"
    names = [f"{root}_text_{kind}" for kind in ("insert", "update", "delete")]
    exists = _sqlite_parts(conn, root)
    if not fields:
        if exists:
            for trigger in names:
                conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{trigger}"')
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{fts}"')
            return [f"drop the text index of {root}"]
        return []
    if fts in exists and len(exists) == 4 and list(fields) == (stored or []):
        return []
    for trigger in names:
        conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{trigger}"')
    conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{fts}"')
    cols = ", ".join(f'"{f}"' for f in fields)
    new = ", ".join(f'new."{f}"' for f in fields)
    old = ", ".join(f'old."{f}"' for f in fields)
    conn.exec_driver_sql(f'CREATE VIRTUAL TABLE "{fts}" USING fts5({cols}, content="{root}", content_rowid="rowid", '
                         f"tokenize='porter unicode61')")
    conn.exec_driver_sql(f'CREATE TRIGGER "{names[0]}" AFTER INSERT ON "{root}" BEGIN '
                         f'INSERT INTO "{fts}"(rowid, {cols}) VALUES (new.rowid, {new}); END')
    conn.exec_driver_sql(f'CREATE TRIGGER "{names[1]}" AFTER UPDATE OF {cols} ON "{root}" BEGIN '
                         f'INSERT INTO "{fts}"("{fts}", rowid, {cols}) VALUES (\'delete\', old.rowid, {old}); '
                         f'INSERT INTO "{fts}"(rowid, {cols}) VALUES (new.rowid, {new}); END')
    conn.exec_driver_sql(f'CREATE TRIGGER "{names[2]}" AFTER DELETE ON "{root}" BEGIN '
                         f'INSERT INTO "{fts}"("{fts}", rowid, {cols}) VALUES (\'delete\', old.rowid, {old}); END')
    conn.exec_driver_sql(f'INSERT INTO "{fts}"("{fts}") VALUES (\'rebuild\')')
    return [f"build the text index of {root} ({', '.join(fields)})"]


def _pg_column(conn: sa.Connection, root: str) -> bool:
    return conn.execute(sa.text("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                                "AND table_name = :t AND column_name = :c"), {"t": root, "c": PG_COLUMN}).first() is not None


def planned(conn: sa.Connection, storage: Storage, altered: dict[str, set[str]]) -> list[str]:
    """What `ensure` will do after a migration that alters or drops the columns `altered` (table ->
    columns), without doing it: the dry run's lines."""
    said = []
    for root in sorted({t.root for t in storage.defs.tables.values()}):
        fields, stored = indexed_fields(storage, root), list(_stored(conn, storage, root) or ())
        if conn.dialect.name == "postgresql":
            present = _pg_column(conn, root) and not altered.get(root, set()) & set(stored)
            current = present and list(fields) == stored and bool(indexbuild.validity(conn, index_name(root)))
        else:  # altering or dropping a column copies the table (batch mode): its triggers go
            parts = _sqlite_parts(conn, root)
            present = bool(parts)
            current = len(parts) == 4 and list(fields) == stored and root not in altered
        if not fields:
            said += [f"drop the text index of {root}"] if present else []
        elif not current:
            said.append(f"build the text index of {root} ({', '.join(fields)})")
    return said


def _ensure_pg(conn: sa.Connection, root: str, fields: tuple[str, ...], stored: list[str] | None,
               later: list[indexbuild.IndexBuild] | None) -> list[str]:
    has_column = _pg_column(conn, root)
    if has_column and list(fields) == (stored or []):
        if indexbuild.validity(conn, index_name(root)):
            return []
        _gin_index(conn, root, later)  # a concurrent build that did not finish: built again
        return [f"build the text index of {root} ({', '.join(fields)})"]
    if has_column:
        conn.exec_driver_sql(f'ALTER TABLE "{root}" DROP COLUMN {PG_COLUMN}')  # its index goes with it
    if not fields:
        return [f"drop the text index of {root}"] if has_column else []
    text = " || ' ' || ".join(f"coalesce(\"{f}\", '')" for f in fields)
    conn.exec_driver_sql(f'ALTER TABLE "{root}" ADD COLUMN {PG_COLUMN} tsvector GENERATED ALWAYS AS '
                         f"(to_tsvector('{LANGUAGE}'::regconfig, {text})) STORED")
    _gin_index(conn, root, later)
    return [f"build the text index of {root} ({', '.join(fields)})"]


def _gin_index(conn: sa.Connection, root: str, later: list[indexbuild.IndexBuild] | None) -> None:
    name = index_name(root)
    if later is not None and indexbuild.has_rows(conn, root):  # the build drops an invalid one of its name first
        later.append(indexbuild.IndexBuild(name, root, f'CREATE INDEX CONCURRENTLY "{name}" ON "{root}" '
                                                       f"USING gin ({PG_COLUMN})"))
    else:
        indexbuild.drop_if_invalid(conn, name)
        conn.exec_driver_sql(f'CREATE INDEX "{name}" ON "{root}" USING gin ({PG_COLUMN})')


__all__ = ["TEXT_QUERY", "TextMatch", "after_bulk_write", "ensure", "indexed_fields", "match", "words"]
