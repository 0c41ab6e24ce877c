"""Physical tables from definitions.

A table hierarchy (`task` and the tables extending it) is stored in one physical
table named after its root, with `sys_class_name` telling the rows apart, as
ServiceNow's flattened task table does. A query on the parent sees the children's
rows without a join; a query on a child adds `sys_class_name IN (...)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from functools import cached_property
from typing import TypeVar

import sqlalchemy as sa

from .definitions.model import Definitions, FieldDef, TableDef, WorkspaceDef

T = TypeVar("T")

# Platform bookkeeping that is not a definition table.
INTERNAL_TABLES = ("sys_number_counter", "sys_meta", "sys_definition_file", "sys_definition_history", "sys_job",
                   "sys_worker", "sys_session", "sys_signin_failure", "sys_script_usage", "sys_attachment_doc")


AUDIT = "sys_audit"


def index_name(table: str, columns: tuple[str, ...], prefix: str = "ix") -> str:
    name = f"{prefix}_{table}_{'_'.join(columns)}"
    if len(name) <= 60:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[:51]}_{digest}"


def _partial_index(table: sa.Table, cols: tuple[str, ...]) -> None:
    """An index of the rows whose first column has a value. Most references and choices are empty
    on most rows (a case's parent), and an index full of NULLs is both bigger and, by its
    statistics, useless to the planner; `col = ?` implies the condition, so lookups use it."""
    first = table.c[cols[0]]
    sa.Index(index_name(table.name, cols, "ixn"), *(table.c[c] for c in cols),
             sqlite_where=first.is_not(None), postgresql_where=first.is_not(None))


def _field_index(table: sa.Table, cols: tuple[str, ...], whole: bool) -> None:
    """The index of an indexed field (and the columns after it): of every row when `whole`, else partial."""
    if whole:
        sa.Index(index_name(table.name, cols), *(table.c[c] for c in cols))
    else:
        _partial_index(table, cols)


def _indexed(field: FieldDef, table: TableDef) -> bool:
    if field.index is not None:  # declared: `index: false` keeps a choice with few values unindexed
        return field.index
    return field.type in ("reference", "choice") or (table.display == field.name)


class Storage:
    """The SQLAlchemy MetaData for a Definitions, and where each logical table lives."""

    @classmethod
    def of(cls, defs: Definitions) -> Storage:
        """The storage of `defs`, made once for them: building the MetaData of a large application
        takes a tenth of a second, and every runtime on the same definitions (an app, its worker, a
        live switch back) can share it, as it holds nothing of a database or a connection."""
        found = defs.derived.get(cls)
        if found is None:
            found = defs.derived[cls] = cls(defs)
        return found

    def __init__(self, defs: Definitions):
        self.defs = defs
        self.cache: dict = {}  # plans derived from the definitions (e.g. per-table insert plans)
        self.metadata = sa.MetaData()
        self._build_internal()
        for root in sorted({t.root for t in defs.tables.values()}):
            self._build_physical(root)
        self._build_children_audit()

    def physical(self, table: str) -> sa.Table:
        return self.metadata.tables[self.defs.tables[table].root]

    def cached(self, key: Hashable, build: Callable[[], T]) -> T:
        """What `build` makes, made once per storage (per definitions set) and kept under `key`: a
        statement or plan a hot path would otherwise build on every call."""
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = build()
        return found

    def alias(self, table: str, name: str) -> sa.Alias:
        """The physical table of `table` aliased as `name`, made once: an alias builds its column
        collection on first use (a third of the Python time of a one-record read), and an
        alias is immutable, so statements may share it (not a statement and its subquery: see
        Selection's `shared`)."""
        def build() -> sa.Alias:
            made = self.physical(table).alias(name)
            made.c  # noqa: B018  (its columns made now, not by two threads at once later)
            return made

        return self.cached(("alias", self.defs.tables[table].root, name), build)

    def internal(self, name: str) -> sa.Table:
        return self.metadata.tables[name]

    @cached_property
    def _classes(self) -> dict[str, tuple[str, ...]]:
        return {name: self.defs.descendants(name) for name in self.defs.tables}

    def classes(self, table: str) -> tuple[str, ...]:
        """The sys_class_name values a query on `table` sees."""
        return self._classes[table]

    def declared_over(self, root: str, names: Callable[[TableDef], tuple[str, ...]]) -> tuple[str, ...]:
        """The fields the tables stored in physical table `root` name, each once, in order: what an index of
        the physical table covers when each table declares some (`text_index`, `contains_index`)."""
        fields: dict[str, None] = {}
        for name in self.defs.descendants(root):
            fields.update(dict.fromkeys(names(self.defs.tables[name])))
        return tuple(fields)

    def class_filter(self, table: str, physical: sa.FromClause | None = None) -> sa.ColumnElement | None:
        """A WHERE clause restricting the physical table to `table` and its children, if needed."""
        tdef = self.defs.tables[table]
        classes = self.classes(table)
        all_classes = self.classes(tdef.root)
        if set(classes) == set(all_classes):
            return None
        column = (physical if physical is not None else self.physical(table)).c.sys_class_name
        return column == classes[0] if len(classes) == 1 else column.in_(classes)

    def _build_physical(self, root: str) -> None:
        columns: dict[str, sa.Column] = {}
        index_columns: dict[str, TableDef] = {}
        extra_indexes: list[tuple[str, ...]] = []
        for name in self.defs.descendants(root):
            tdef = self.defs.tables[name]
            extra_indexes.extend(tdef.indexes)
            for field in tdef.stored_fields:
                if field.name not in columns:
                    columns[field.name] = self._column(field)
                elif field.type == "string" and (field.max_length or 0) > (columns[field.name].type.length or 0):
                    columns[field.name] = self._column(field)
                if _indexed(field, tdef) and not field.system:
                    index_columns[field.name] = tdef
        table = sa.Table(root, self.metadata, *columns.values())
        classed = any(cols[0] == "sys_class_name" for cols in extra_indexes)  # a declared one serves it
        if len(self.defs.descendants(root)) > 1 and not classed:  # rows of several classes share the table
            sa.Index(index_name(root, ("sys_class_name",)), table.c.sys_class_name)
        # A declared index that starts with an indexed column serves that column's lookups too,
        # so the column gets no index of its own: one index less to write on every insert.
        leading = {cols[0] for cols in extra_indexes if len(cols) > 1}
        # A display field (a record's number or name) is what lists are sorted by, and a mandatory field has
        # no empty rows to leave out: their indexes hold every row, as an ORDER BY can only walk an index that
        # does (a partial one left a list sorted by the field to sort every row)
        whole = {f.name for name in self.defs.descendants(root) for f in self._whole(self.defs.tables[name])}
        for column in sorted(index_columns):
            if column not in leading:
                _field_index(table, (column,), column in whole)
        for cols in dict.fromkeys(extra_indexes):
            if len(cols) == 1 and cols[0] in index_columns:
                continue
            if cols[0] in index_columns:
                _field_index(table, cols, cols[0] in whole)
            else:
                sa.Index(index_name(root, cols), *(table.c[c] for c in cols))

    def _build_children_audit(self) -> None:
        """For each workspace's children field, a partial index of the audit: that field's changes on the
        children's tables, by new value. A workspace's timeline tells when children were added, from the
        audit rows whose new value is the record; the audit has no index of values (a text of any length),
        so each view of a major case read the whole audit for them: 125 ms at 1.4 million rows on
        PostgreSQL, growing with the audit. Only the changes of that reference are entered (their values
        are sys_ids): writing any other audit row costs nothing more."""
        audit = self.metadata.tables.get(AUDIT)
        if audit is None:
            return
        for ws in sorted(self.defs.workspaces.values(), key=lambda w: w.name):
            name = index_name(AUDIT, (ws.children, "newvalue"), "ixa")
            if name in {index.name for index in audit.indexes}:
                continue
            field = audit.c.fieldname == ws.children
            # SQLite uses a partial index only when the query's terms match its condition's one by one (an IN
            # list never does); it has no limit on an entry's size either, which PostgreSQL's condition on
            # the tables is for (another table's field of that name may hold a long text)
            sa.Index(name, audit.c.newvalue, sqlite_where=field,
                     postgresql_where=sa.and_(field, audit.c.tablename.in_(self.children_audited(ws))))

    def children_audited(self, ws: WorkspaceDef) -> list[str]:
        """The tables whose audit rows of a workspace's children field its timeline reads (and its partial
        index holds): the children's table, those it extends and those extending it, in one order."""
        return sorted(self.defs.lineage(ws.child_table))

    @staticmethod
    def _whole(tdef: TableDef) -> list[FieldDef]:
        """The fields of `tdef` whose index holds every row: its display field and its mandatory fields,
        but references and choices, whose indexes are for lookups (`field = value`), which a partial index
        serves as well."""
        return [f for f in tdef.stored_fields if (f.name == tdef.display or f.mandatory)
                and f.type not in ("reference", "choice")]

    @staticmethod
    def _column(field: FieldDef) -> sa.Column:
        if field.name == "sys_id":
            return sa.Column("sys_id", sa.String(32), primary_key=True)
        nullable = field.name not in ("sys_class_name", "sys_created_on", "sys_updated_on", "sys_mod_count")
        # A type that is never empty (a boolean: false) has its default as the column's too, so that the
        # rows a table already has when the field is added hold it (PostgreSQL adds it without a rewrite).
        empty = None if field.system else field.parse(None)
        if empty is None:
            return sa.Column(field.name, field.ftype.column(field), nullable=nullable)
        value = empty if field.default is None else field.default
        return sa.Column(field.name, field.ftype.column(field), nullable=nullable,
                         server_default=sa.true() if value else sa.false())

    def _build_internal(self) -> None:
        sa.Table(
            "sys_number_counter", self.metadata,
            sa.Column("name", sa.String(80), primary_key=True),
            sa.Column("next_value", sa.Integer, nullable=False),
        )
        sa.Table(
            "sys_meta", self.metadata,
            sa.Column("name", sa.String(80), primary_key=True),
            sa.Column("value", sa.Text),
        )
        sa.Table(
            "sys_definition_file", self.metadata,
            sa.Column("path", sa.String(255), primary_key=True),
            sa.Column("text", sa.Text, nullable=False),
            sa.Column("version", sa.String(32), nullable=False),
            sa.Column("updated_on", sa.DateTime, nullable=False),
            sa.Column("updated_by", sa.String(40)),
        )
        sa.Table(
            "sys_definition_history", self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("path", sa.String(255), nullable=False),
            sa.Column("action", sa.String(10), nullable=False),
            sa.Column("old_text", sa.Text),
            sa.Column("new_text", sa.Text),
            sa.Column("user", sa.String(40)),
            sa.Column("created_on", sa.DateTime, nullable=False),
        )
        job = sa.Table(
            "sys_job", self.metadata,  # background jobs and their progress (caseloom.jobs)
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("name", sa.String(80), nullable=False),
            sa.Column("state", sa.String(10), nullable=False),  # queued | running | done | failed
            sa.Column("done", sa.Integer, nullable=False),
            sa.Column("total", sa.Integer, nullable=False),
            sa.Column("message", sa.Text),
            sa.Column("params", sa.Text),  # the job's inputs as JSON, so a re-run has them
            sa.Column("created_on", sa.DateTime, nullable=False),
            sa.Column("updated_on", sa.DateTime, nullable=False),
            sa.Column("created_by", sa.String(40)),
            sa.Column("target_table", sa.String(80)),
            sa.Column("target_sys_id", sa.String(32)),
            # the run that holds a running job, "host/pid-namespace:pid:token" (caseloom.jobs.liveness),
            # and when it last said it was alive: a job whose run is gone is resumed by another worker
            sa.Column("worker", sa.String(160)),
            sa.Column("heartbeat_on", sa.DateTime),
        )
        sa.Index("ix_sys_job_target", job.c.target_table, job.c.target_sys_id)
        sa.Index("ix_sys_job_state", job.c.state)  # the reaper's look for queued and running jobs
        # the last jobs to end (caseloom.status), a state at a time, and the queued jobs waiting too long (the
        # reaper): an index of updated_on alone was taken for the latter, and read every old job each round
        sa.Index("ix_sys_job_state_updated_on", job.c.state, job.c.updated_on)
        sa.Table(
            "sys_worker", self.metadata,  # job consumers, stamped every heartbeat while alive (caseloom.jobs.workers)
            sa.Column("id", sa.String(160), primary_key=True),  # its worker id, "host/pid-namespace:pid:token"
            sa.Column("node", sa.String(160), nullable=False),  # "host/pid-namespace"
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("threads", sa.Integer, nullable=False),
            sa.Column("started_on", sa.DateTime, nullable=False),
            sa.Column("seen_on", sa.DateTime, nullable=False),
        )
        user_session = sa.Table(
            "sys_session", self.metadata,  # signed-in browser sessions (caseloom.sessions)
            sa.Column("token_hash", sa.String(64), primary_key=True),  # SHA-256 of the cookie's token
            sa.Column("user_sys_id", sa.String(32), nullable=False),
            sa.Column("created_on", sa.DateTime, nullable=False),
            sa.Column("last_seen", sa.DateTime, nullable=False),
            sa.Column("address", sa.String(64)),  # the client's address at sign-in
        )
        sa.Index("ix_sys_session_user", user_session.c.user_sys_id)
        sa.Index("ix_sys_session_last_seen", user_session.c.last_seen)
        signin_failure = sa.Table(
            "sys_signin_failure", self.metadata,  # failed sign-ins per user name and address (caseloom.signin)
            sa.Column("kind", sa.String(10), primary_key=True),  # user | address
            sa.Column("name", sa.String(255), primary_key=True),
            sa.Column("failures", sa.Integer, nullable=False),
            sa.Column("window_start", sa.DateTime, nullable=False),
            sa.Column("locked_until", sa.DateTime),
        )
        sa.Index("ix_sys_signin_failure_window", signin_failure.c.window_start)
        sa.Table(
            "sys_attachment_doc", self.metadata,  # the bytes of each sys_attachment (caseloom.attachments)
            sa.Column("sys_id", sa.String(32), primary_key=True),  # the attachment's
            sa.Column("data", sa.LargeBinary, nullable=False),
        )
        sa.Table(
            "sys_script_usage", self.metadata,  # CPU seconds of sandboxed scripts per user and hour (caseloom.scriptbudget)
            sa.Column("user_name", sa.String(40), primary_key=True),
            sa.Column("hour", sa.DateTime, primary_key=True),
            sa.Column("cpu_seconds", sa.Float, nullable=False),
        )
