"""Engines for SQLite and PostgreSQL, with SQLite set up for real transactions.

The set-up is SQLAlchemy event listeners attached to the engines Caseloom makes (`make_engine`,
and the web app's engine through `prepare_engine`), never to the Engine class: another engine
in the same process (a library's, a test's) keeps SQLite's defaults."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not a POSIX system: SQLite's writers do not take turns (see `Turns`)
    fcntl = None  # type: ignore[assignment]

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

# WAL: readers never wait for the writer; NORMAL: a commit does not wait for the disk (WAL keeps it
# safe from corruption); a page cache of up to 256 MB per connection (allocated as pages are used),
# so a change to a hundred thousand records is done in memory and written once. Commits do not run the
# WAL checkpoint themselves (copying the pages they wrote into the database file, with an fsync):
# a background thread does it after them (`Checkpointer`), as SQLite's WAL documentation suggests
# for applications that care about commit latency. A commit still checkpoints if the WAL reaches
# 1 GiB, should the background thread fall behind.
SQLITE_CACHE_KB, SQLITE_JOB_CACHE_KB = 262_144, 65_536
SQLITE_BUSY_MS = 30_000  # how long a connection waits for the write lock
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", f"PRAGMA busy_timeout={SQLITE_BUSY_MS}",
                  f"PRAGMA cache_size=-{SQLITE_CACHE_KB}", "PRAGMA wal_autocheckpoint=262144")
DB_FILE = "caseloom_sqlite_file"  # connection info: the database file, for its checkpointer
# SQL functions of every SQLite connection, for what SQLite's own cannot say (see setwrite.joined_set)
JOINED_SET = "caseloom_joined_set"


def _joined_set(*texts: object) -> str | None:
    """The distinct non-empty texts given, sorted and joined by commas; NULL when there are none."""
    found = sorted({str(text) for text in texts if text not in (None, "")})
    return ",".join(found) if found else None


def _sqlite_connect(dbapi_connection, connection_record):
    if isinstance(dbapi_connection, sqlite3.Connection):
        # Let SQLAlchemy emit BEGIN itself so SAVEPOINTs work (pysqlite's own handling breaks them).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        dbapi_connection.create_function(JOINED_SET, -1, _joined_set, deterministic=True)
        path = cursor.execute("PRAGMA database_list").fetchone()[2]
        cursor.close()
        if path:  # not an in-memory database
            connection_record.info[DB_FILE] = path


def _sqlite_commit(conn):
    path = conn.info.get(DB_FILE)
    if path:
        Checkpointer.after_commit(path)


class Checkpointer:
    """Checkpoints one SQLite database's WAL in a background thread of this process, after
    commits (PASSIVE: it never blocks readers or writers). The thread starts with the first
    commit and ends after a minute without one; a forked process (a server worker) gets its own."""

    IDLE = 60.0
    SETTLE = 0.05  # the commit event comes just before the commit: let it land
    _running: dict[tuple[int, str], Checkpointer] = {}
    _lock = threading.Lock()

    def __init__(self, key: tuple[int, str]):
        self.key, self.path = key, key[1]
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    @classmethod
    def after_commit(cls, path: str) -> None:
        key = (os.getpid(), path)
        with cls._lock:
            checkpointer = cls._running.get(key)
            if checkpointer is None:
                checkpointer = cls._running[key] = cls(key)
            checkpointer.wake.set()
            if checkpointer.thread is None:
                checkpointer.thread = threading.Thread(target=checkpointer._run, name="sqlite-checkpoint", daemon=True)
                checkpointer.thread.start()

    def _run(self) -> None:
        while True:
            if not self.wake.wait(self.IDLE):
                with self._lock:
                    if not self.wake.is_set():
                        self._running.pop(self.key, None)
                        return
            self.wake.clear()
            time.sleep(self.SETTLE)
            self.checkpoint()

    def checkpoint(self) -> None:
        try:
            uri = f"file:{urllib.parse.quote(self.path)}?mode=rw"  # never creates a database that is gone
            with closing(sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)) as conn:
                for _ in range(20):  # frames a commit is still writing: try again shortly
                    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames <= 0 or done >= frames or self.wake.is_set():
                        return
                    time.sleep(self.SETTLE)
        except sqlite3.Error:
            pass  # the database is gone or busy: the next commit tries again


WRITE_LOCK = "caseloom_write_lock"  # an execution option: begin with the write lock held


@contextmanager
def job_cache(conn: sa.Connection, kb: int = SQLITE_JOB_CACHE_KB) -> Iterator[None]:
    """A background job's connection keeps a 64 MB page cache while the job runs: it commits
    about once a second, so a bigger cache buys it little, and a worker's memory stays bounded
    whatever the size of the job. A long read that passes over every row once (an export) asks for
    less (`kb`): its pages are not read again."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection  # outside any transaction: a pragma, not a statement of one
    before = raw.execute("PRAGMA cache_size").fetchone()[0]  # the engine's own (a worker's is smaller)
    raw.execute(f"PRAGMA cache_size=-{kb}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA cache_size={before}")


# SQLite has one writer at a time, and its busy handler is not fair: a connection waiting for the
# write lock sleeps and tries again (every 100 ms once it has waited a while), so a job that commits
# a unit of work and at once begins the next one keeps the lock for as long as it runs, and every
# other writer (a request's save, the SLA clock) fails after SQLITE_BUSY_MS. Writers take turns
# instead (`Turns`): a transaction that begins with the write lock says so while it waits for it,
# and first gives way, for GIVE_WAY seconds at most, while another one says so. A job's next unit so
# lets in the writers that came during its last one: they wait one unit at most. A writer taking its
# turn tries for the lock every POLL seconds rather than in the busy handler's 100 ms sleeps, so the
# lock passes from one to the next within milliseconds.
WRITERS_FILE = "-writers"  # beside a SQLite database: its writers' turns (see `Turns`)
# What SQLite, and Caseloom's turns, keep beside a database file.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal", WRITERS_FILE)
TURNS = "caseloom_turns"  # connection info: the connection's `Turns`, or False (in-memory, not POSIX)
TAKE_TURN = "caseloom_take_turn"  # an execution option: False for a writer that would rather skip


class Turns:
    """A connection's handle on the database's `-writers` file, beside its WAL: a writer waiting for
    the write lock holds a shared flock on it (one per connection, each its own open file, released
    when the process dies); a writer that can take an exclusive one knows nobody waits."""

    POLL = 0.002  # seconds between two tries for the lock, and two looks while giving way
    GIVE_WAY = 1.0  # seconds a writer gives way at most (a waiter may itself wait for a third)

    def __init__(self, path: str):
        # read-only is enough for a flock, so a process of another user may share the file; open as
        # long as the connection (closed with it, by GC)
        self.file = os.fdopen(os.open(path + WRITERS_FILE, os.O_RDONLY | os.O_CREAT, 0o666), "rb")

    @classmethod
    def of(cls, conn: sa.Connection) -> Turns | None:
        turns = conn.info.get(TURNS)
        if turns is None:
            path = conn.info.get(DB_FILE)
            try:
                turns = conn.info[TURNS] = cls(path) if path and fcntl is not None else False
            except OSError:  # a directory it cannot write in: no turns, as before
                turns = conn.info[TURNS] = False
        return turns or None

    def begin(self, raw: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE in its turn: after giving way, saying it waits while it tries for the lock
        every POLL seconds, for as long as the connection's busy timeout (then SQLite's error)."""
        self.give_way()
        fcntl.flock(self.file, fcntl.LOCK_SH)
        try:
            timeout = raw.execute("PRAGMA busy_timeout").fetchone()[0]
            raw.execute("PRAGMA busy_timeout=0")
            try:
                deadline = time.monotonic() + timeout / 1000
                while True:
                    try:
                        raw.execute("BEGIN IMMEDIATE")
                        return
                    except sqlite3.OperationalError as exc:
                        if not is_busy(exc) or time.monotonic() >= deadline:  # as SQLAlchemy's own BEGIN raises it
                            raise sa.exc.OperationalError("BEGIN IMMEDIATE", (), exc) from exc
                    time.sleep(self.POLL)
            finally:
                raw.execute(f"PRAGMA busy_timeout={timeout}")
        finally:
            fcntl.flock(self.file, fcntl.LOCK_UN)

    def give_way(self) -> None:
        """Return when no other writer waits for the lock, or after GIVE_WAY seconds."""
        deadline = time.monotonic() + self.GIVE_WAY
        while True:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(self.POLL)
                continue
            fcntl.flock(self.file, fcntl.LOCK_UN)
            return


def _sqlite_begin(conn):
    options = conn.get_execution_options()
    if not options.get(WRITE_LOCK):
        conn.exec_driver_sql("BEGIN")
        return
    turns = Turns.of(conn) if options.get(TAKE_TURN, True) else None
    if turns is None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        turns.begin(conn.connection.dbapi_connection)


# SQLite's set-up, event by event: pragmas on connect, BEGIN (IMMEDIATE under WRITE_LOCK), the
# checkpointer after commit.
SQLITE_LISTENERS = (("connect", _sqlite_connect), ("begin", _sqlite_begin), ("commit", _sqlite_commit))


# A server database's pooled connection is pinged before use only when it sat idle in the pool for
# longer than this: one that came back a moment ago is almost surely alive, and the ping is a round
# trip (one of the seven a one-record API read made). One that died after its last use (the
# server restarted within that moment) fails its next statement; SQLAlchemy then sees the
# disconnect and replaces every connection of the pool, as after a failed ping.
PING_IDLE_SECONDS = 1.0
RETURNED = "caseloom_returned"  # connection info: when it went back to the pool (time.monotonic)


def _returned(dbapi_connection, connection_record) -> None:
    connection_record.info[RETURNED] = time.monotonic()


def _ping_when_idle(dialect: sa.Dialect):
    def ping(dbapi_connection, connection_record, connection_proxy) -> None:
        if time.monotonic() - connection_record.info.get(RETURNED, 0.0) <= PING_IDLE_SECONDS:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the driver's error for a dead connection: the pool opens another
            raise sa.exc.DisconnectionError(str(exc)) from exc
        if not alive:
            raise sa.exc.DisconnectionError("the database connection did not answer a ping")
    return ping


# PostgreSQL goes on with a statement whose client has died (a worker killed mid-batch, a server
# process its master replaced after a timeout) until the statement ends, holding its transaction's
# row locks; from PostgreSQL 14 on, a connection that checks its client this often while a statement
# runs ends it within that time of the client's death. Set for each connection Caseloom opens.
CLIENT_CHECK_MS = 1000


# PostgreSQL compiles a statement the planner costs above `jit_above_cost` to machine code first: about
# 100 ms, on Debian's defaults, for a count of a major case's e-mails (300,000 of them) that then runs in
# 170. The platform's statements are a page's, a count's or a job's batch, never the long analytical
# queries compiling pays back on; so each connection it opens runs without.
JIT = "off"


def _connection_settings(dbapi_connection, connection_record) -> None:
    """Each connection's settings: no JIT compiling (JIT); from PostgreSQL 14 on, its client checked."""
    setting = f"SET jit = {JIT}"
    if dbapi_connection.info.server_version >= 140000:  # psycopg's connection: the server's version
        setting += f"; SET client_connection_check_interval = {CLIENT_CHECK_MS}"
    _session_setting(dbapi_connection, setting)


def _session_setting(dbapi_connection, statement: str) -> None:
    """A SET for the connection's whole life, run outside any transaction."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True  # no transaction left open by the SET
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
        dbapi_connection.autocommit = autocommit


# How long a request of the server waits for one lock on PostgreSQL (a row another transaction is
# changing, a table a definition change alters) before the statement fails with 55P03, which the
# server answers 503 with nothing changed (`is_transient`): as long as a request waits for SQLite's
# write lock (SQLITE_BUSY_MS). Without it a request waits for as long as the holder runs (a major
# case's close cascading to a million children holds their rows for minutes), and a definition
# change's ALTER TABLE waiting for its lock holds up every request after it on that table.
# Workers and the command line wait as long as it takes: a job would rather be late than fail.
REQUEST_LOCK_WAIT_MS = SQLITE_BUSY_MS


def requests_engine(engine: sa.Engine) -> sa.Engine:
    """The server's engine (`prepare_engine` first): on PostgreSQL each of its connections waits at
    most REQUEST_LOCK_WAIT_MS for a lock. Idempotent."""
    if engine.dialect.name == "postgresql" and not event.contains(engine, "connect", _request_lock_wait):
        event.listen(engine, "connect", _request_lock_wait)
    return engine


def _request_lock_wait(dbapi_connection, connection_record) -> None:
    _session_setting(dbapi_connection, f"SET lock_timeout = {REQUEST_LOCK_WAIT_MS}")


# psycopg forgets every statement it prepared at each ROLLBACK (and deallocates them on the server: a
# rolled-back DDL statement could have left them wrong), so a connection whose transactions end in a
# rollback never runs a prepared statement: each statement is planned every time (1.74 ms for a
# form's record read with its display values, ten tables joined, against 0.28 ms prepared). A
# transaction that has only read (its statements all SELECT, or EXPLAIN without ANALYZE) ends with
# COMMIT instead: the same for the data (nothing was written; its locks and settings are the
# transaction's either way), and psycopg keeps its statements. A write, a SET, a savepoint or a
# COPY (`written`) makes the transaction's end the ROLLBACK it was; so does an error in it.
PLAIN = "caseloom_plain_read"  # connection info: the transaction has only read so far
READS = ("SELECT", "EXPLAIN (FORMAT JSON)")
HEAD = 32  # characters of a statement enough to see which of READS it begins with (after some blanks)


def one_of(dialect: sa.Dialect, column: sa.ColumnElement, name: str) -> sa.ColumnElement:
    """`column` is one of the list parameter `name`: on PostgreSQL one array parameter (`= ANY`), which
    psycopg converts once whatever the list's length (a statement of more than 50 parameters is parsed
    anew at each execution: a millisecond for 200), given as the array's text (`ArrayText`); elsewhere
    an expanding IN list."""
    if dialect.name == "postgresql":
        return column == sa.any_(_array(column, sa.bindparam(name, type_=ArrayText())))
    return column.in_(sa.bindparam(name, expanding=True))


LONG_LIST = 50  # values from which a list is one array parameter on PostgreSQL (`in_list`)


def in_list(column: sa.ColumnElement, values: Sequence[Any], negate: bool = False) -> sa.ColumnElement:
    """`column IN (values)` (`NOT IN` with `negate`), for a query whose database is not known yet: a list
    of more than LONG_LIST values is, on PostgreSQL, `= ANY` (`<> ALL`) of one array parameter given as
    its text. psycopg parses a statement of more than 50 parameters anew at every execution, and each
    length of list is a statement of its own for the server; an array is one statement whatever its
    length. (A short list stays a list: a plan made for any array assumes ten values.)"""
    if len(values) <= LONG_LIST or isinstance(column.type, sa.types.NullType):  # (an array needs a type)
        return column.not_in(values) if negate else column.in_(values)
    return _InList(column, sa.bindparam(None, list(values), type_=column.type, expanding=True), negate)


class _InList(sa.sql.expression.ColumnElement):
    inherit_cache = True
    type = sa.Boolean()
    _is_implicitly_boolean = True  # a condition of its own (SQLite's `x IN (...)`, never `(x IN (...)) = 1`)
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("values", InternalTraversal.dp_clauseelement), ("negate", InternalTraversal.dp_boolean)]

    def __init__(self, column: sa.ColumnElement, values: sa.BindParameter, negate: bool) -> None:
        self.column, self.values, self.negate = column, values, negate


@compiles(_InList)
def _in_list(element: _InList, compiler, **kw) -> str:
    column, values = element.column, element.values
    return compiler.process(column.not_in(values) if element.negate else column.in_(values), **kw)


@compiles(_InList, "postgresql")
def _any_of_array(element: _InList, compiler, **kw) -> str:
    if kw.get("literal_binds"):  # SQL to read or run elsewhere: the values written out, as a list
        return _in_list(element, compiler, **kw)
    column = element.column
    # the list's own parameter (by its key: a statement cached with another list takes that list's values)
    array = _array(column, sa.bindparam(element.values.key, element.values.value, type_=ArrayText()))
    return compiler.process(column != sa.all_(array) if element.negate else column == sa.any_(array), **kw)


def _array(column: sa.ColumnElement, given: sa.BindParameter) -> sa.Cast:
    """The parameter `given` (an `ArrayText`) as an array of values compared with `column`."""
    return sa.cast(given, postgresql.ARRAY(unbounded(column.type)))


def unbounded(kind: sa.types.TypeEngine) -> sa.types.TypeEngine:
    """An array's element type for values compared with a column of `kind`: text and numbers without
    their length or scale, since a cast to `varchar(32)[]` or `numeric(18, 6)[]` would cut or round a
    value to fit, and it could then match a row it does not equal."""
    if isinstance(kind, sa.String):
        return sa.String()
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
        return sa.Numeric()
    return kind


def array_text(values: Sequence[Any]) -> str | list:
    """PostgreSQL's text form of an array of `values` (`{"a","b\\"c",NULL}`), for a parameter the
    statement casts to its array type: built with one join, where psycopg adapts a list element by
    element (about 3 µs each: 6 ms for 200 rows of ten columns, more than the UPDATE they feed takes
    in the server). Values it has no text for here (an aware datetime, a number that is not finite,
    another type) leave the list as it is, for psycopg to adapt."""
    kinds = {type(v) for v in values}
    kinds.discard(type(None))
    if kinds <= {str}:  # the usual case: sys_ids, keys, choices
        return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"
    if not kinds <= _TEXTS.keys():
        return list(values)
    parts = []
    for v in values:
        text = "NULL" if v is None else _TEXTS[type(v)](v)
        if text is None:
            return list(values)
        parts.append(text)
    return "{" + ",".join(parts) + "}"


def _quoted(text: str) -> str:
    """An array element's text in double quotes: as itself, whatever it holds (commas, braces, blanks,
    the word NULL), with only a backslash and a double quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_TEXTS: dict[type, Callable[[Any], str | None]] = {
    str: _quoted, int: str, bool: lambda v: "t" if v else "f",
    float: lambda v: repr(v) if math.isfinite(v) else None,
    decimal.Decimal: lambda v: str(v) if v.is_finite() else None,
    dt.date: lambda v: _quoted(v.isoformat()),
    dt.datetime: lambda v: _quoted(v.isoformat(sep=" ")) if v.tzinfo is None else None}


class ArrayText(sa.types.TypeDecorator):
    """A list parameter sent as its array's text (`array_text`), for `CAST(:p AS type[])`. Untyped (no
    `::TEXT` of its own), so the server reads it as the array type of the cast and a plan made for its
    value sees the array's elements (a text cast to an array at run time is not folded: `= ANY` then
    compares each row with every element in turn, not through a hash of them)."""

    impl = sa.types.NullType
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return value if value is None or isinstance(value, str) else array_text(value)


def dict_rows(result: sa.CursorResult) -> list[dict]:
    """A result's rows as dicts of their columns: all fetched at once and zipped with the keys, about
    half the cost of turning each RowMapping into a dict (which counts when a batch reads hundreds)."""
    keys = tuple(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result.all()]


def written(conn: sa.Connection) -> None:
    """The transaction wrote in a way the engine's events do not see (COPY through the driver): its
    rollback must roll back."""
    conn.info[PLAIN] = False


def _plain_begin(conn: sa.Connection) -> None:
    conn.info[PLAIN] = True


def _plain_statement(conn, cursor, statement, parameters, context, executemany) -> None:
    if conn.info.get(PLAIN) and not statement[:HEAD].lstrip().upper().startswith(READS):
        conn.info[PLAIN] = False


def _plain_end(conn: sa.Connection) -> None:
    """A rollback of a transaction that only read: commit it first, and the rollback finds nothing to do."""
    if conn.invalidated or not conn.info.pop(PLAIN, False):  # a lost connection has nothing to commit
        return
    from psycopg.pq import TransactionStatus

    raw = conn.connection.dbapi_connection
    if raw is not None and raw.info.transaction_status == TransactionStatus.INTRANS:
        raw.commit()


# A statement psycopg prepared reads the columns as they were: after a change of definitions alters a
# column's type (a string's max_length too), running it again fails ("cached plan must not change
# result type"). A process that takes up a new set of definitions (`forget_statements`) has each of its
# engine's connections replaced at its next checkout, and stops preparing on the one it holds.
EPOCHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> how many sets it has taken up
EPOCH = "caseloom_epoch"  # connection info: the engine's epoch when the connection was opened


def forget_statements(engine: sa.Engine, holding: sa.Connection | None = None) -> None:
    """The database's tables may have changed: no connection of `engine` runs a statement it prepared
    before. Those in the pool are replaced when next checked out; `holding`, the caller's own, stops
    preparing for the rest of its use (it is replaced when it comes back)."""
    if engine.dialect.driver != "psycopg":
        return
    EPOCHS[engine] = EPOCHS.get(engine, 0) + 1
    raw = holding.connection.dbapi_connection if holding is not None and not holding.invalidated else None
    if raw is not None:
        raw.prepare_threshold = None  # psycopg's documented switch: run every statement unprepared


def _opened_in_epoch(engine: sa.Engine):
    def opened(dbapi_connection, connection_record) -> None:
        connection_record.info[EPOCH] = EPOCHS.get(engine, 0)
    return opened


def _replace_if_stale(engine: sa.Engine):
    def check(dbapi_connection, connection_record, connection_proxy) -> None:
        if connection_record.info.get(EPOCH, 0) != EPOCHS.get(engine, 0):
            raise sa.exc.DisconnectionError("the definitions changed: a new connection, no statement prepared")
    return check


def prepare_engine(engine: sa.Engine) -> sa.Engine:
    """Set up an engine Caseloom uses (SQLite: pragmas, transactions SAVEPOINTs work in, the WAL
    checkpointer; PostgreSQL: connections pinged when they were idle, PING_IDLE_SECONDS, checking
    their client while a statement runs, CLIENT_CHECK_MS, and transactions that only read ending
    with a COMMIT, PLAIN); call it before the engine's first connection. Idempotent."""
    if engine.dialect.name == "sqlite":
        for name, listener in SQLITE_LISTENERS:
            if not event.contains(engine, name, listener):
                event.listen(engine, name, listener)
    elif not event.contains(engine, "checkin", _returned):
        event.listen(engine, "checkin", _returned)
        event.listen(engine, "checkout", _ping_when_idle(engine.dialect))
        if engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _connection_settings)
            if engine.dialect.driver == "psycopg":
                event.listen(engine, "connect", _opened_in_epoch(engine))
                event.listen(engine, "checkout", _replace_if_stale(engine))
                event.listen(engine, "begin", _plain_begin)
                event.listen(engine, "before_cursor_execute", _plain_statement)
                event.listen(engine, "rollback", _plain_end)
    return engine


@contextmanager
def write_transaction(engine: sa.Engine, wait: float | None = None) -> Iterator[sa.Connection]:
    """A transaction for claiming work: on SQLite it holds the write lock from its first statement
    (BEGIN IMMEDIATE), so rows it reads stay unclaimed until it commits and a second claimer waits;
    on PostgreSQL it is a plain transaction whose reads lock rows with FOR UPDATE SKIP LOCKED.
    `wait`: on SQLite, the seconds it waits for the write lock at most (30 otherwise); still held
    by another connection after that, it raises an OperationalError that `is_busy` tells. A writer
    with a `wait` would rather skip its work than wait for it (a heartbeat): it does not take a turn
    (`Turns`), so a job's next unit does not give way to it."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_LOCK: True, TAKE_TURN: wait is None})
        with _lock_wait(conn, wait), conn.begin():
            yield conn


@contextmanager
def _lock_wait(conn: sa.Connection, wait: float | None) -> Iterator[None]:
    if wait is None or conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection  # outside any transaction: a pragma, not a statement of one
    raw.execute(f"PRAGMA busy_timeout={max(0, round(wait * 1000))}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "database is locked": another connection held the write lock for
    longer than this one would wait."""
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.OperationalError) and (getattr(orig, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


# PostgreSQL's errors that mean "try again": a serialization failure, a deadlock, a lock not available
# (a lock not had within `lock_timeout`)
LOCK_NOT_AVAILABLE = "55P03"
RETRY_STATES = frozenset({"40001", "40P01", LOCK_NOT_AVAILABLE})


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` says the database could not do the work now, not that it was wrong: SQLite's
    write lock held too long (`is_busy`), or PostgreSQL's RETRY_STATES. Its transaction is rolled back
    whole; the same work may succeed a moment later."""
    orig = getattr(exc, "orig", exc)
    return is_busy(exc) or getattr(orig, "sqlstate", None) in RETRY_STATES


def is_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached at all (PostgreSQL down or restarting, its
    connection lost; SQLite's file not there to open): nothing was done, and the same request may
    succeed once it is back."""
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None)
    if state is not None:
        return state.startswith("08") or state in ("57P01", "57P02", "57P03")  # connection exception, shutdown
    text = str(orig).lower()
    return any(words in text for words in ("connection refused", "connection failed", "could not connect",
                                           "server closed the connection", "unable to open database file"))


def engine_options(url: str, pool_size: int = 10) -> dict:
    """Engine settings: SQLite waits up to 30 s for the write lock; a server database keeps a pool
    of `pool_size` connections (CASELOOM_DB_POOL_SIZE; `caseloom serve` and `caseloom worker` size it
    from their threads) and opens up to as many more at a peak."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_size": pool_size, "max_overflow": pool_size}  # pinged when idle: prepare_engine


def absolute_url(url: str) -> str:
    """A SQLite URL with its file made absolute against the working directory (and its folder
    created), so every component (CLI, Flask-SQLAlchemy, worker) opens the same file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + ":memory:"):
        path = Path(url[len(prefix):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def make_engine(url: str, pool_size: int = 10, cache_kb: int = SQLITE_CACHE_KB) -> sa.Engine:
    """An engine set up by `prepare_engine`; on SQLite each connection keeps up to `cache_kb` of pages."""
    url = absolute_url(url)
    engine = prepare_engine(sa.create_engine(url, **engine_options(url, pool_size)))
    if engine.dialect.name == "sqlite" and cache_kb != SQLITE_CACHE_KB:
        def _cache(dbapi_connection, connection_record):  # after the pragmas of _sqlite_connect
            dbapi_connection.execute(f"PRAGMA cache_size=-{cache_kb}")

        event.listen(engine, "connect", _cache)
    return engine


def worker_engine(url: str, pool_size: int) -> sa.Engine:
    """The engine of a `caseloom worker` process: on SQLite, each of its connections (a job thread's,
    the heartbeats', the clock's) keeps the 64 MB page cache of a job. A worker runs jobs that commit
    often, over data that can be far larger than its memory; with the 256 MB of a server's
    connections, each of the several it holds could keep that much of what it once read (a worker
    delivering 100,000 e-mails in the bench, among a million cases, peaked at 624 MB)."""
    return make_engine(url, pool_size, SQLITE_JOB_CACHE_KB)
