"""Set-based writes: one compiled INSERT, executemany'd with the dialect's own bind processing, or on
PostgreSQL, for a batch of rows, one COPY.

SQLAlchemy's generic per-row parameter handling costs more than SQLite's own work for
wide bulk inserts; compiling once and applying each column's bind processor directly
does the same conversion at a fraction of the cost. PostgreSQL runs an executemany'd INSERT once
per row (its executor started and stopped each time); COPY streams the rows into one command.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from .database import array_text, unbounded, written

PLANS = "caseloom_insert_plans"


def _plan(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> tuple[str, tuple, bool, tuple]:
    """The table's compiled INSERT of `columns`, kept on the table itself (its `info`): a cache of its
    own would keep every table it had seen alive, and each table its whole MetaData, long after a
    change of definitions (or a test) had let the runtime go."""
    plans = table.info.setdefault(PLANS, {})
    plan = plans.get((columns, dialect))
    if plan is None:
        plan = plans[(columns, dialect)] = _compiled(table, columns, dialect)
    return plan


def _compiled(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> tuple[str, tuple, bool, tuple]:
    stmt = sa.insert(table).values({name: sa.bindparam(name) for name in columns})
    compiled = stmt.compile(dialect=dialect)
    order = tuple(compiled.positiontup) if compiled.positional else columns
    processors = tuple(_processor(table.c[name].type, dialect) for name in order)
    return str(compiled), order, compiled.positional, processors


def _processor(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    return type_.dialect_impl(dialect).bind_processor(dialect)


ANALYZE_EVERY = 20_000  # rows bulk-inserted into one table before PostgreSQL's statistics are refreshed


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    """INSERT every row (all rows have the same keys) with one executemany, or one COPY (above)."""
    if not rows:
        return
    keep_statistics_fresh(conn, table, len(rows))
    sql, order, positional, processors = _plan(table, tuple(rows[0]), conn.dialect)
    copy = conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM
    params: list = _values(rows, order, processors)
    if not (copy or positional):
        params = [dict(zip(order, values, strict=True)) for values in params]
    if copy:
        _copy(conn, table, params, order)
    else:
        conn.exec_driver_sql(sql, params)


def _values(rows: list[dict], order: tuple[str, ...], processors: tuple) -> list[tuple]:
    """Each row's values in `order`, bind-processed (each processor memoized for the batch)."""
    get = operator.itemgetter(*order) if len(order) > 1 else (lambda row: (row[order[0]],))
    converting = [(i, _memoized(p)) for i, p in enumerate(processors) if p is not None]
    if not converting:
        return [tuple(get(row)) for row in rows]
    params = []
    for row in rows:
        values = list(get(row))
        for i, process in converting:
            value = values[i]
            if value is not None:
                values[i] = process(value)
        params.append(tuple(values))
    return params


COPY_FROM = 50  # rows from which a PostgreSQL insert is one COPY rather than an executemany
UPDATE_PLANS = "caseloom_update_plans"
MAX_UPDATE_PLANS = 64  # a table's compiled UPDATEs kept, one per set of columns changed together


def update_rows(conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: list[dict],
                touched: Callable[[sa.Table, Any, Any], dict], user: str, stamp: Any) -> None:
    """UPDATE each row (a dict of `columns` and its `sys_id`) by its sys_id, the system columns of an
    update as `touched(table, user, stamp)` says (caseloom.stamps.touched_sql). Compiled once per table
    and set of columns and bind-processed as insert_rows does: SQLAlchemy's per-row parameter handling
    cost more than the database's own work for a few hundred rows. One executemany; on PostgreSQL, for
    many rows, one `UPDATE ... FROM unnest(...)` of a column array each (an executemany runs the
    statement once per row, its executor started and stopped each time: 50 µs a row)."""
    if not rows:
        return
    arrays = conn.dialect.name == "postgresql" and len(rows) >= ARRAYS_FROM and \
        len({row["sys_id"] for row in rows}) == len(rows)  # (a row given twice: each update in turn)
    plans = table.info.setdefault(UPDATE_PLANS, {})
    plan = plans.get((columns, arrays, conn.dialect))
    if plan is None:
        if len(plans) >= MAX_UPDATE_PLANS:  # the Table API may change any set of fields: keep the newest
            plans.pop(next(iter(plans), None), None)  # (another thread may have taken it first)
        plan = plans[(columns, arrays, conn.dialect)] = _compiled_update(table, columns, touched, arrays,
                                                                          conn.dialect)
    sql, order, positional, binds = plan
    fixed = {"t_user": user, "t_stamp": stamp}  # the same in every row, as are the statement's constants
    template: list = []
    keyed = []  # the positions of the row's own values, and their keys
    for i, (name, (key, constant, process)) in enumerate(zip(order, binds, strict=True)):
        if key is not None:
            keyed.append((i, key, process))
            template.append(None)
            continue
        value = fixed.get(name, constant)
        template.append(value if value is None or process is None else process(value))
    values = _values(rows, tuple(k for _, k, _ in keyed), tuple(p for _, _, p in keyed))
    if arrays:  # one parameter set: each column's values as the text of an array (database.array_text)
        values = [tuple(array_text(column) for column in zip(*values, strict=True))]
    params = []
    for row_values in values:
        row = template.copy()
        for (i, _, _), value in zip(keyed, row_values, strict=True):
            row[i] = value
        params.append(tuple(row) if positional else dict(zip(order, row, strict=True)))
    conn.exec_driver_sql(sql, params[0] if arrays else params)


ARRAYS_FROM = 20  # rows from which a PostgreSQL update is one UPDATE ... FROM unnest(...)


def _compiled_update(table: sa.Table, columns: tuple[str, ...], touched: Callable[[sa.Table, Any, Any], dict],
                     arrays: bool, dialect: sa.Dialect) -> tuple[str, tuple, bool, tuple]:
    """The UPDATE of `columns` by sys_id (`arrays`: from one array of each column's values, unnested),
    its parameters' order and, for each, (the row's key or None, the constant's value, the bind
    processor of the column's values)."""
    system = touched(table, sa.bindparam("t_user", type_=table.c.sys_updated_by.type),
                     sa.bindparam("t_stamp", type_=table.c.sys_updated_on.type))
    keys = {"k_sys_id": "sys_id", **{f"v_{c}": c for c in columns}}
    if arrays:
        # each array of the column's type without its length or scale: a cast to varchar(40)[] would cut a
        # longer value to fit, where the assignment to the column refuses it, as a plain UPDATE does
        types = {name: unbounded(table.c[key].type) for name, key in keys.items()}
        given = sa.func.unnest(*(sa.cast(sa.bindparam(n), ARRAY(t)) for n, t in types.items())).table_valued(
            *(sa.column(n, t) for n, t in types.items())).render_derived().alias("given")
        stmt = sa.update(table).where(table.c.sys_id == given.c.k_sys_id).values(
            {**{c: given.c[f"v_{c}"] for c in columns}, **system})
    else:
        stmt = sa.update(table).where(table.c.sys_id == sa.bindparam("k_sys_id", type_=table.c.sys_id.type)).values(
            {**{c: sa.bindparam(f"v_{c}", type_=table.c[c].type) for c in columns}, **system})
    compiled = stmt.compile(dialect=dialect)
    names = tuple(compiled.positiontup) if compiled.positional else tuple(compiled.binds)
    binds = tuple((keys.get(name), compiled.binds[name].effective_value,
                   _processor(table.c[keys[name]].type if name in keys else compiled.binds[name].type, dialect))
                  for name in names)
    # a named parameter goes by the name the SQL gives it (escaped, were a column's name to need it)
    order = names if compiled.positional else tuple(compiled.escaped_bind_names.get(n, n) for n in names)
    return str(compiled), order, compiled.positional, binds


def _copy(conn: sa.Connection, table: sa.Table, rows: list[tuple], columns: tuple[str, ...]) -> None:
    """COPY the rows (values already bind-processed, in `columns`' order) into the table, in the
    connection's transaction. Text format: the server reads each value as its column's type, as it
    does an INSERT's parameters. Errors come out as SQLAlchemy's, as an INSERT's would."""
    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    raw = conn.connection.dbapi_connection
    written(conn)  # a write the engine's events do not see
    try:
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.Error as error:
        raise sa.exc.DBAPIError.instance(sql, None, error, conn.dialect.loaded_dbapi.Error,
                                         dialect=conn.dialect) from error


def _memoized(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A bind processor that converts each distinct value once: a batch's rows share their
    timestamps and flags, and formatting a datetime for SQLite costs more than writing it."""
    memo: dict = {}

    def convert(value: Any) -> Any:
        try:
            return memo[value]
        except KeyError:
            converted = memo[value] = process(value)
            return converted
        except TypeError:  # unhashable
            return process(value)

    return convert


def keep_statistics_fresh(conn: sa.Connection, table: sa.Table, count: int) -> None:
    """A bulk load of rows in batches (insert_rows: the record service's insert_many, the bench's
    and demo's loads) that grows a table from a few rows to many leaves PostgreSQL planning with the
    old statistics (autovacuum catches up later), so a load that inserts and then looks up what it
    inserted slows down quadratically. Re-ANALYZE the table once the rows written since its last
    ANALYZE here reach ANALYZE_EVERY and a quarter of the rows it held then (as autovacuum's scale
    factor does): a table growing from nothing is analysed about a dozen times on its way to a
    million rows, and a table of a million rows not at all for its first 250,000 more. (Each ANALYZE
    of a big table costs a sample of 30,000 rows: every 20,000 rows written, that was a third of
    a million-child job on PostgreSQL.) The tables a set-based insert writes alongside its own
    do without it (caseloom.setinsert). A table autovacuum is working on is skipped
    (`SKIP_LOCKED`): its statistics are being made fresh already, and waiting for its lock held the
    job a second or more (until autovacuum gives way, after `deadlock_timeout`)."""
    if conn.dialect.name != "postgresql":
        return
    written = conn.info.setdefault("caseloom_bulk_rows", {})
    so_far = written[table.name] = written.get(table.name, 0) + count
    if so_far < ANALYZE_EVERY:
        return
    held = conn.info.setdefault("caseloom_bulk_held", {})
    if table.name not in held:  # the rows the statistics counted before this connection wrote any
        held[table.name] = max(float(conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (table.name,)).scalar() or 0), 0.0)
    if so_far >= held[table.name] / 4:
        written[table.name] = 0
        _analyse(conn, table, _keyed_columns(table))
        held[table.name] = float(conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (table.name,)).scalar() or 0)


STALE_SHARE = 0.2  # rows changed since a table's last ANALYZE, as a share of those it counted, that make it stale
STALE_ROWS = 500  # and at least this many


def refresh_if_stale(conn: sa.Connection, table: sa.Table) -> bool:
    """ANALYZE `table` now when the rows changed since its last ANALYZE, by any connection, reach
    STALE_SHARE of those its statistics count and STALE_ROWS (autovacuum would get to it, up to a
    minute later). For a job that reads a table other workers have just filled: its children,
    made by slices in other connections, each too few for `keep_statistics_fresh`. A resumed
    job's count of the members still without a child, planned for the one child its statistics
    promised, ran a nested loop over every child for each member: 36 s for 12,000 members, and
    quadratic. Returns whether it analysed. PostgreSQL only; `SKIP_LOCKED` as above."""
    if conn.dialect.name != "postgresql":
        return False
    row = conn.exec_driver_sql(
        "SELECT s.n_mod_since_analyze, c.reltuples FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE c.oid = to_regclass(%s)", (table.name,)).first()
    if row is None:
        return False
    changed, counted = row
    if changed < max(STALE_ROWS, STALE_SHARE * max(counted, 0)):
        return False
    _analyse(conn, table)
    return True


def analyse_if_grown(conn: sa.Connection, table: sa.Table) -> bool:
    """Fresh statistics for a table about to be read by many keys (`col IN (...)`), on either database:
    on SQLite an ANALYZE when it has grown well past its statistics (`grown_past_statistics`; 105 ms
    against 2 ms for a 500-key lookup in 900,000 audit rows, each chunk of an SLA repair), on
    PostgreSQL `refresh_if_stale`. Returns whether it analysed."""
    if conn.dialect.name == "postgresql":
        return refresh_if_stale(conn, table)
    if not grown_past_statistics(conn, table):
        return False
    conn.exec_driver_sql(f'ANALYZE "{table.name}"')
    return True


def grown_past_statistics(conn: sa.Connection, table: sa.Table) -> bool:
    """Whether a SQLite table's rows (its largest rowid) exceed the rows its statistics count by
    STALE_ROWS and STALE_SHARE. SQLite keeps a table's statistics from its last ANALYZE (`caseloom
    init` runs one) and never updates them itself: a table that has grown manyfold since is planned as
    the small table it was, and a lookup of many keys (`col IN (...)`) then scans it whole. False on
    other databases."""
    if conn.dialect.name != "sqlite":
        return False
    try:  # each index's row says how many rows it holds; a partial one fewer, the primary key's all of them
        stats = [row[0] for row in conn.exec_driver_sql("SELECT stat FROM sqlite_stat1 WHERE tbl = ? AND stat IS NOT NULL",
                                                        (table.name,))]
    except sa.exc.OperationalError:  # no sqlite_stat1: never analysed
        stats = []
    counted = max((int(str(stat).split()[0]) for stat in stats), default=0)
    rows = conn.exec_driver_sql(f'SELECT max(rowid) FROM "{table.name}"').scalar() or 0
    return rows - counted >= max(STALE_ROWS, STALE_SHARE * counted)


def _keyed_columns(table: sa.Table) -> list[str]:
    """The columns of `table`'s primary key and indexes: those the lookups after a load find rows
    by and join on. A load's ANALYZE samples the rows once whatever it analyses, but the
    statistics of every other column (long texts, the text search's words) took a third of it
    more on the bench's largest table. The other columns keep their statistics until autovacuum
    analyses the whole table: an ANALYZE of some columns leaves the count of rows changed since
    the last whole one as it was, so autovacuum still sees the load."""
    names = dict.fromkeys(column.name for column in table.primary_key.columns)
    for index in sorted(table.indexes, key=lambda i: i.name or ""):
        names.update(dict.fromkeys(column.name for column in index.columns))
    return list(names)


def _analyse(conn: sa.Connection, table: sa.Table, columns: list[str] | None = None) -> None:
    quote = conn.dialect.identifier_preparer.quote
    only = f" ({', '.join(quote(name) for name in columns)})" if columns else ""
    conn.exec_driver_sql(f"ANALYZE (SKIP_LOCKED) {quote(table.name)}{only}")
