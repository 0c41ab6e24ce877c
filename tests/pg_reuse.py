"""PostgreSQL test databases that are put back as they were instead of copied afresh.

A copy of a template database (CREATE DATABASE ... TEMPLATE) costs half a second or more of the
server's time, almost all of it in the kernel: every file of the system catalogs is written again
(a 10 MB database is 7.5 MB of catalogs), and dropped after the test. Most tests change a few rows of
a few tables. So each test process keeps its copies, and after a test puts back only what it changed:

- what changed is found from the server's activity counters (PostgreSQL 15 and later, with
  `track_counts` on, as by default): a table any session of the test inserted into, updated, deleted
  from, analyzed or vacuumed, and the schema catalogs only when the counters show a write to one (a
  temporary table writes them too). The counters are those of the sessions that have ended, and the
  test's sessions are ended first; the reset then zeroes them (`pg_stat_reset`), as a fresh copy has
  them. Without them (an older server), from each table's row count and the newest `xmin` among its
  rows (any insert or update writes a new transaction id; a delete lowers the count), its
  statistics and its planner sizes. Sequences are compared with the template's either way;
- a changed table is emptied (TRUNCATE, so its rows are laid out again in the template's order) and
  refilled from the template's rows, kept in memory in COPY's binary format; its planner statistics
  (`pg_class` sizes, `pg_statistic`) are made those of the template again;
- a test that changed the schema (anything in the catalogs: a table, a column, an index, a setting
  of the database) gets its copy dropped, and the next test a fresh one.

The next test then sees what a fresh copy shows: the same rows in the same order, the same sequences,
the same statistics and activity counters, and no session of the test before it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

# Catalogs whose rows make up a database's schema: a test that writes any of them changed the
# schema (TRUNCATE too, as it gives the table a new file), and its copy is not reused.
SCHEMA_CATALOGS = ("pg_class", "pg_attribute", "pg_attrdef", "pg_constraint", "pg_index", "pg_type", "pg_proc",
                   "pg_namespace", "pg_trigger", "pg_rewrite", "pg_depend", "pg_extension", "pg_policy",
                   "pg_event_trigger", "pg_sequence", "pg_inherits", "pg_statistic_ext", "pg_enum",
                   "pg_publication", "pg_largeobject_metadata", "pg_default_acl")
SYSTEM_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"


# A session's first temporary table makes its temporary schemas (pg_temp_N, pg_toast_temp_N, N its
# slot), which stay for the next session in that slot: not a change of the schema a test sees.
TEMPORARY_SCHEMAS = "nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'"


def _fingerprint(conn: psycopg.Connection) -> tuple:
    """The schema's state: each schema catalog's row count and newest row version (the schemas but the
    temporary ones), and the settings made for the database (ALTER DATABASE ... SET)."""
    parts = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {name}, count(*), max(xmin::text::bigint) FROM {table}{where}").format(
            name=sql.Literal(name), table=sql.Identifier("pg_catalog", name),
            where=sql.SQL(" WHERE " + TEMPORARY_SCHEMAS if name == "pg_namespace" else ""))
        for name in SCHEMA_CATALOGS)
    return tuple(conn.execute(parts).fetchall()), _settings(conn)


def _settings(conn: psycopg.Connection) -> tuple:
    """The settings made for the database (ALTER DATABASE ... SET), by role."""
    return tuple((role, tuple(config or ())) for role, config in conn.execute(
        "SELECT setrole, setconfig FROM pg_db_role_setting WHERE setdatabase = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1"))


def _tables(conn: psycopg.Connection) -> list[tuple[int, str, str]]:
    """The user tables: (oid, schema, name), in a fixed order."""
    return conn.execute("""
        SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND """ + SYSTEM_SCHEMAS + " ORDER BY n.nspname, c.relname").fetchall()


def _contents(conn: psycopg.Connection) -> tuple:
    """What an empty database's schemas hold, by kind, and how the schemas themselves are set up."""
    schemas = conn.execute("SELECT n.nspname, n.nspowner::regrole::text, n.nspacl::text FROM pg_namespace n WHERE "
                           + SYSTEM_SCHEMAS + " ORDER BY 1").fetchall()
    objects = conn.execute(
        "SELECT 'relation', count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE " + SYSTEM_SCHEMAS
        + " UNION ALL SELECT 'type', count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE "
        + SYSTEM_SCHEMAS + " UNION ALL SELECT 'function', count(*) FROM pg_proc p JOIN pg_namespace n "
        "ON n.oid = p.pronamespace WHERE " + SYSTEM_SCHEMAS
        + " UNION ALL SELECT 'extension ' || extname, 1 FROM pg_extension"
        " UNION ALL SELECT 'event trigger ' || evtname, 1 FROM pg_event_trigger").fetchall()
    return tuple(schemas), tuple(sorted(objects)), _settings(conn)


def _signatures(conn: psycopg.Connection, tables: list[tuple[int, str, str]]) -> dict[int, tuple]:
    """Each table's row count and newest row version, and its statistics' row count and newest version."""
    if not tables:
        return {}
    parts = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {oid}::oid, count(*), max(xmin::text::bigint) FROM {table}").format(
            oid=sql.Literal(oid), table=sql.Identifier(schema, name)) for oid, schema, name in tables)
    rows = {oid: (count, newest) for oid, count, newest in conn.execute(parts)}
    stats = {oid: (count, newest) for oid, count, newest in conn.execute(
        "SELECT starelid, count(*), max(xmin::text::bigint) FROM pg_statistic WHERE starelid = ANY(%s) "
        "GROUP BY starelid", [[oid for oid, _, _ in tables]])}
    return {oid: (rows[oid], stats.get(oid)) for oid, _, _ in tables}


def _written(conn: psycopg.Connection, tables: list[tuple[int, str, str]]) -> tuple[bool, set[int]]:
    """From the activity counters since the last reset: whether any schema catalog was written, and the
    tables whose rows, statistics or planner sizes a session may have changed (inserted, updated,
    deleted, analyzed or vacuumed; a rolled-back write counts too)."""
    rows = conn.execute("""
        SELECT relid, schemaname = 'pg_catalog' FROM pg_stat_all_tables
        WHERE (schemaname = 'pg_catalog' AND relname = ANY(%(catalogs)s) AND n_tup_ins + n_tup_upd + n_tup_del > 0)
           OR (relid = ANY(%(oids)s) AND n_tup_ins + n_tup_upd + n_tup_del + analyze_count + autoanalyze_count
               + vacuum_count + autovacuum_count > 0)""",
                        {"catalogs": list(SCHEMA_CATALOGS), "oids": [oid for oid, _, _ in tables]}).fetchall()
    return any(catalog for _, catalog in rows), {oid for oid, catalog in rows if not catalog}


def _sequences(conn: psycopg.Connection) -> dict[tuple[str, str], tuple]:
    found = {}
    for schema, name in conn.execute("SELECT schemaname, sequencename FROM pg_sequences").fetchall():
        found[(schema, name)] = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))).fetchone()
    return found


def _sizes(conn: psycopg.Connection, oids: list[int]) -> dict[int, tuple]:
    """The planner's sizes of tables and their indexes and TOAST tables: {oid: (relpages, reltuples, relallvisible)}."""
    return {oid: rest for oid, *rest in conn.execute("""
        SELECT c.oid, c.relpages, c.reltuples, c.relallvisible FROM pg_class c
        WHERE c.oid = ANY(%(oids)s)
           OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = ANY(%(oids)s))
           OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE oid = ANY(%(oids)s))""", {"oids": oids})}


@dataclass
class Template:
    """A template database's contents, read once: rows, sequences, statistics, as a reset needs them."""

    name: str
    tables: list[tuple[int, str, str]] = field(default_factory=list)
    rows: dict[int, bytes] = field(default_factory=dict)
    columns: dict[int, list[str]] = field(default_factory=dict)
    sequences: dict = field(default_factory=dict)
    signatures: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    analysed: set[int] = field(default_factory=set)


@dataclass
class Copy:
    """One working database: a copy of `template`, or an empty database (`template` None)."""

    name: str
    template: Template | None
    fingerprint: tuple = ()  # a copy's schema as the reset left it, or what an empty database holds
    signatures: dict = field(default_factory=dict)


EMPTY = ""  # the key of empty databases among the spare copies


class Pool:
    """One test process's working databases on one PostgreSQL server, each put back after its test."""

    def __init__(self, conninfo: str, admin: str, prefix: str):
        # libpq's connection string for the server, the database to create and drop from, and the copies' prefix
        self.conninfo, self.admin, self.prefix = conninfo, admin, prefix
        self.templates: dict[str, Template] = {}
        self.spare: dict[str, list[Copy]] = {}
        self.busy: dict[str, Copy] = {}
        self.counts = {"created": 0, "reused": 0, "dropped": 0}
        self._admin: psycopg.Connection | None = None
        self._counted: bool | None = None

    @property
    def counted(self) -> bool:
        """Whether the activity counters tell what a test wrote: PostgreSQL 15's, kept in shared memory
        and written by a session before it is seen to end (earlier servers sent them to a collector
        process, some time later), with `track_counts` on."""
        if self._counted is None:
            self._counted = self._server().execute(
                "SELECT current_setting('server_version_num')::int >= 150000 "
                "AND current_setting('track_counts')::bool").fetchone()[0]
        return self._counted

    def _connect(self, database: str) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, dbname=database, autocommit=True)

    def _server(self) -> psycopg.Connection:
        """The one connection to the admin database that creates, drops and watches the others."""
        if self._admin is None or self._admin.closed:
            self._admin = self._connect(self.admin)
        return self._admin

    def make(self, name: str, template: str | None = None) -> None:
        """CREATE DATABASE `name` (a copy of `template`, or empty), its commits not waiting for the
        disk: a test's database is thrown away, and each flush took 3 ms on CI's disk."""
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
        self._server().execute(create)
        self._server().execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name)))

    def drop(self, name: str) -> None:
        self._server().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def acquire(self, template: str | None = None) -> str:
        """The name of a database that is, as far as a test can tell, a fresh copy of `template`, or a
        fresh empty database (`template` None); its commits do not wait for the disk (a test's
        database is thrown away, and each flush took 3 ms on CI's disk)."""
        spare = self.spare.setdefault(template or EMPTY, [])
        if spare:
            copy = spare.pop()
            self.counts["reused"] += 1
        else:
            copy = self._create(template)
            self.counts["created"] += 1
        self.busy[copy.name] = copy
        return copy.name

    def release(self, name: str) -> None:
        """Put the database back as it was given, or drop it when that cannot be done."""
        copy = self.busy.pop(name)
        try:
            kept = self._reset(copy)
        except psycopg.Error:
            kept = False
        if kept:
            self.spare[copy.template.name if copy.template else EMPTY].append(copy)
        else:
            self.counts["dropped"] += 1
            self.drop(copy.name)

    def forget(self, template: str) -> None:
        """Drop the spare copies of `template`, which is about to be made again or dropped."""
        for copy in self.spare.pop(template, []):
            self.drop(copy.name)
        self.templates.pop(template, None)

    def close(self) -> None:
        """Drop every database of the pool, those a failed test never gave back too."""
        for copies in self.spare.values():
            for copy in copies:
                self.drop(copy.name)
        for name in self.busy:
            self.drop(name)
        self.spare.clear()
        self.busy.clear()
        if self._admin is not None:
            self._admin.close()

    def _template(self, name: str) -> Template:
        if name in self.templates:
            return self.templates[name]
        template = Template(name)
        with self._connect(name) as conn:
            template.tables = _tables(conn)
            oids = [oid for oid, _, _ in template.tables]
            for oid, schema, table in template.tables:
                template.columns[oid] = [column for column, in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
                    "AND attgenerated = '' ORDER BY attnum", [oid])]
                data = bytearray()
                with conn.cursor().copy(sql.SQL("COPY {} ({}) TO STDOUT (FORMAT binary)").format(
                        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, template.columns[oid])))) as copy:
                    for chunk in copy:
                        data += chunk
                template.rows[oid] = bytes(data)
            template.sequences = _sequences(conn)
            template.signatures = _signatures(conn, template.tables)
            template.sizes = _sizes(conn, oids)
            template.analysed = {oid for oid, in conn.execute(
                "SELECT DISTINCT starelid FROM pg_statistic WHERE starelid = ANY(%s)", [oids])}
        self.templates[name] = template
        return template

    def _create(self, template_name: str | None) -> Copy:
        template = self._template(template_name) if template_name else None
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        self.make(name, template.name if template else None)
        copy = Copy(name, template)
        with self._connect(name) as conn:
            copy.fingerprint = _fingerprint(conn) if template else _contents(conn)
            copy.signatures = dict(template.signatures) if template else {}
        return copy

    def _disconnect_others(self, name: str) -> None:
        """End every session the test left on the database (a pool, a thread, a killed worker's)."""
        deadline = time.monotonic() + 10
        while self._server().execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()", [name]).fetchall():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sessions on {name} did not end")
            time.sleep(0.01)

    def _reset(self, copy: Copy) -> bool:
        self._disconnect_others(copy.name)
        with self._connect(copy.name) as conn:
            kept = self._empty_again(conn, copy) if copy.template is None else self._restore(conn, copy, self.counted)
            if not kept:
                return False
            if self.counted:  # this session's own writes counted before the reset, not after it (at its end)
                conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute("SELECT pg_stat_reset()")  # a fresh copy's activity counters: none
            # a session that came while the database was being put back may have written to it (asked
            # from this session: once it is closed, its own backend may still be seen leaving)
            return not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND pid <> pg_backend_pid()").fetchone()[0]

    @staticmethod
    def _empty_again(conn: psycopg.Connection, copy: Copy) -> bool:
        """An empty database: drop what the test made in it; kept if it then holds what it held."""
        if _contents(conn) == copy.fingerprint:
            return True
        schemas = [name for name, in conn.execute("SELECT n.nspname FROM pg_namespace n WHERE " + SYSTEM_SCHEMAS)]
        with conn.transaction():
            for schema in schemas:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
            conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
            conn.execute("COMMENT ON SCHEMA public IS 'standard public schema'")
        return _contents(conn) == copy.fingerprint

    @staticmethod
    def _restore(conn: psycopg.Connection, copy: Copy, counted: bool) -> bool:
        """A template's copy: the tables a test changed get the template's rows and statistics again;
        kept unless the test changed the schema. `counted`: what changed is read from the activity
        counters (see the module's docstring), not from every table's rows."""
        template = copy.template
        if counted:
            catalogs, written = _written(conn, template.tables)
            if _settings(conn) != copy.fingerprint[1]:
                return False
            if catalogs and (_fingerprint(conn) != copy.fingerprint or _tables(conn) != template.tables):
                return False
            changed = [(oid, schema, table) for oid, schema, table in template.tables if oid in written]
        else:
            if _fingerprint(conn) != copy.fingerprint or _tables(conn) != template.tables:
                return False
            now = _signatures(conn, template.tables)
            sizes = _sizes(conn, [oid for oid, _, _ in template.tables])  # a VACUUM changes only those
            changed = [(oid, schema, table) for oid, schema, table in template.tables
                       if now[oid] != copy.signatures[oid] or sizes.get(oid) != template.sizes.get(oid)]
        if changed:
            oids = [oid for oid, _, _ in changed]
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")  # no triggers run
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(
                    sql.Identifier(schema, table) for _, schema, table in changed)))
                for oid, schema, table in changed:
                    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
                            sql.Identifier(schema, table),
                            sql.SQL(", ").join(map(sql.Identifier, template.columns[oid])))) as target:
                        target.write(template.rows[oid])
                conn.execute("DELETE FROM pg_statistic WHERE starelid = ANY(%s)", [oids])
            again = [sql.Identifier(schema, table) for oid, schema, table in changed if oid in template.analysed]
            if again:  # the template's statistics, read again from the same rows in the same order
                conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(again)))
            with conn.transaction():  # and the planner's sizes, which TRUNCATE and ANALYZE set anew
                for oid, sizes in _sizes(conn, oids).items():
                    want = template.sizes.get(oid)
                    if want is not None and tuple(want) != tuple(sizes):
                        conn.execute("UPDATE pg_class SET relpages = %s, reltuples = %s, relallvisible = %s "
                                     "WHERE oid = %s", [*want, oid])
            if not counted:
                copy.signatures.update(_signatures(conn, changed))
        sequences = _sequences(conn)
        for (schema, name), value in template.sequences.items():
            if sequences.get((schema, name)) != value:
                conn.execute("SELECT setval(%s::regclass, %s, %s)", [f'"{schema}"."{name}"', *value])
        if changed or not counted:  # TRUNCATE gave the tables new files: their catalog rows are new
            copy.fingerprint = _fingerprint(conn)
        return True
