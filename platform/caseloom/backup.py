"""Backup and restore of the database (`caseloom backup FILE`, `caseloom restore FILE`).

SQLite is copied with its online backup API: one step under one read transaction, so the copy
is a consistent snapshot even while a server writes. PostgreSQL is dumped with `pg_dump
--format=custom` and restored with `pg_restore` in a single transaction. The connection reaches
pg_dump and pg_restore through libpq's environment variables, so the password is never on a
command line or in a message."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import urllib.parse
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from .database import SQLITE_SIDE_FILES

# Every Caseloom database has this table (caseloom.storage): a file without it is some other database.
MARKER_TABLE = "sys_meta"
# Where Debian and Ubuntu install each PostgreSQL version's programs, when they are not on PATH.
PG_BIN_DIRS = Path("/usr/lib/postgresql")
# A URL's connection parameters as libpq's environment variables (query keys are libpq's own names).
LIBPQ_ENV = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE",
             "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
             "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME",
             "options": "PGOPTIONS", "service": "PGSERVICE", "passfile": "PGPASSFILE",
             "target_session_attrs": "PGTARGETSESSIONATTRS", "gssencmode": "PGGSSENCMODE",
             "channel_binding": "PGCHANNELBINDING"}
# How each kind of backup file begins, and what to call it in a message.
FILE_KINDS = (("sqlite", b"SQLite format 3\x00", "a SQLite database"),
              ("postgresql", b"PGDMP", "a PostgreSQL backup (a pg_dump archive)"))
KIND_NAMES = {kind: name for kind, _, name in FILE_KINDS}


class BackupError(Exception):
    """Why a backup or restore did not happen, naming the file or the database (never its password)."""


@dataclass(frozen=True)
class Done:
    """What a backup wrote or a restore read: the file, its size and the database (password hidden)."""

    file: Path
    size: int
    database: str


def backup(database_url: str, file: str | Path) -> Done:
    """Write a consistent copy of the database to `file`, through `file`.part renamed when complete,
    so a failure leaves no half-written file (and an older `file` as it was)."""
    database = database_for(database_url)
    target = Path(file)
    if target.is_dir():
        raise BackupError(f"{target} is a folder: give the name of the backup file to write")
    if not target.parent.is_dir():
        raise BackupError(f"{target}: the folder {target.parent} does not exist")
    if database.is_file(target):
        raise BackupError(f"{target} is the database itself: give the backup another name")
    part = target.with_name(target.name + ".part")
    try:
        part.unlink(missing_ok=True)  # left by a backup that was killed
        _create_private(part)
        database.dump(part)
        database.check(part)  # what a restore would refuse is no backup: never reported as one
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return Done(target, target.stat().st_size, database.label)


def _create_private(path: Path) -> None:
    """An empty file only its owner may read: a backup holds every user's password hash."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise BackupError(f"cannot write {path}: {exc.strerror}") from None


def restore(database_url: str, file: str | Path) -> Done:
    """Replace everything in the database with the backup in `file`, once it is checked to be a
    whole backup of the database's kind; a restore that fails leaves the database as it was."""
    database = database_for(database_url)
    source = Path(file)
    if not source.is_file():
        raise BackupError(f"{source}: no such file" + (" (it is a folder)" if source.is_dir() else ""))
    kind = file_kind(source)
    if kind != database.kind:
        what = KIND_NAMES.get(kind, "neither a SQLite database nor a pg_dump archive")
        raise BackupError(f"{source} is {what}; the database {database.label} needs {KIND_NAMES[database.kind]}")
    database.load(source)
    _forget_workers(database_url)
    return Done(source, source.stat().st_size, database.label)


def _forget_workers(database_url: str) -> None:
    """The restored `sys_worker` rows are the processes of the database the backup was taken from:
    none of them works on this one (`/health` would count them, and their jobs would look claimed).
    A worker running here stamps its row again at its next heartbeat."""
    from .database import absolute_url

    engine = sa.create_engine(absolute_url(database_url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            if sa.inspect(conn).has_table("sys_worker"):
                conn.execute(sa.delete(sa.table("sys_worker")))
    finally:
        engine.dispose()


def not_caseloom(file: Path, what: str) -> BackupError:
    return BackupError(f"{file} is {what} but not a Caseloom one (it has no {MARKER_TABLE} table): "
                       "give a file `caseloom backup` wrote")


def file_kind(path: Path) -> str | None:
    """The kind of database a file is a backup of ("sqlite", "postgresql") by how it begins, or None."""
    try:
        with path.open("rb") as stream:
            head = stream.read(16)
    except OSError as exc:
        raise BackupError(f"{path}: cannot read it: {exc.strerror}") from None
    return next((kind for kind, magic, _ in FILE_KINDS if head.startswith(magic)), None)


def database_for(database_url: str) -> SQLiteDatabase | PostgresDatabase:
    try:
        url = make_url(database_url)
    except sa.exc.ArgumentError:
        raise BackupError("CASELOOM_DATABASE_URL is not a database URL (expected sqlite:///FILE "
                          "or postgresql+psycopg://USER:PASSWORD@HOST/NAME)") from None
    label = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise BackupError(f"{label} is an in-memory database: there is no file to back up or restore")
        path = Path(url.database).resolve()
        return SQLiteDatabase(path, f"sqlite:///{path}")
    if url.get_backend_name() == "postgresql":
        return PostgresDatabase(url, label)
    raise BackupError(f"{label}: backup and restore know SQLite and PostgreSQL databases, "
                      f"not {url.get_backend_name()}")


@dataclass(frozen=True)
class SQLiteDatabase:
    path: Path
    label: str
    kind = "sqlite"

    def is_file(self, file: Path) -> bool:
        """Whether `file` is the database's own file (or a file SQLite keeps beside it)."""
        return file.resolve() in {self.path, *(self.path.with_name(self.path.name + s) for s in SQLITE_SIDE_FILES)}

    def dump(self, part: Path) -> None:
        if not self.path.is_file():
            raise BackupError(f"no database at {self.path} (has `caseloom init` been run?)")
        try:
            with closing(_open_sqlite(self.path, "rw")) as live, closing(sqlite3.connect(part)) as copy:
                live.backup(copy)  # all pages in one step: one read transaction, one snapshot
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        except sqlite3.Error as exc:
            raise BackupError(f"copying {self.path} to {part} failed: {exc}") from None

    def check(self, part: Path) -> None:
        with closing(_open_sqlite(part, "ro")) as copy:
            if copy.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (MARKER_TABLE,)).fetchone() is None:
                raise BackupError(f"{self.path} is not a Caseloom database (it has no {MARKER_TABLE} table): "
                                  "has `caseloom init` been run on it? No backup was written")

    def load(self, file: Path) -> None:
        try:
            with closing(_open_sqlite(file, "ro")) as source:
                _check_sqlite_backup(source, file)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with closing(sqlite3.connect(self.path, timeout=30)) as live:
                    source.backup(live)  # one step under the write lock: readers see all of it or none
        except sqlite3.Error as exc:
            raise BackupError(f"{file} could not be restored into {self.path}: {exc}") from None


def _open_sqlite(path: Path, mode: str) -> sqlite3.Connection:
    """A connection that never creates a database that is not there."""
    return sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode={mode}", uri=True, timeout=30)


def _check_sqlite_backup(source: sqlite3.Connection, file: Path) -> None:
    problems = [row[0] for row in source.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise BackupError(f"{file} is a damaged SQLite database: {'; '.join(problems[:3])}")
    if source.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MARKER_TABLE,)).fetchone() is None:
        raise not_caseloom(file, "a SQLite database")


@dataclass(frozen=True)
class PostgresDatabase:
    url: URL
    label: str
    kind = "postgresql"

    def is_file(self, file: Path) -> bool:
        return False

    def dump(self, part: Path) -> None:
        self._run("pg_dump", "--format=custom", "--no-password", f"--file={part.resolve()}",
                  failed=f"pg_dump of {self.label} failed")

    def check(self, part: Path) -> None:
        listing = self._run("pg_restore", "--list", str(part.resolve()), failed=f"pg_dump of {self.label} failed")
        if not marked_schemas(listing):
            raise BackupError(f"{self.label} is not a Caseloom database (it has no {MARKER_TABLE} table): "
                              "has `caseloom init` been run on it? No backup was written")

    def load(self, file: Path) -> None:
        listing = self._run("pg_restore", "--list", str(file.resolve()),
                            failed=f"{file} is not a pg_dump custom archive pg_restore can read")
        schemas = marked_schemas(listing)
        if not schemas:
            raise not_caseloom(file, "a pg_dump archive")
        self._run("pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", "--no-password",
                  f"--dbname=dbname={_conninfo_value(self.url.database or '')}", str(file.resolve()),
                  failed=f"{file} could not be restored into {self.label} (nothing was changed)")
        self._drop_tables_not_in(listing, schemas, file)

    def _drop_tables_not_in(self, listing: str, schemas: set[str], file: Path) -> None:
        """--clean drops only what the archive holds: a table made since the backup is dropped here,
        so the database holds what the file holds, as a restored SQLite file does."""
        engine = sa.create_engine(self.url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                inspector = sa.inspect(conn)
                quote = conn.dialect.identifier_preparer.quote
                for schema in sorted(schemas):
                    for table in inspector.get_table_names(schema=schema):
                        if not archive_has_table(listing, schema, table):
                            conn.exec_driver_sql(f"DROP TABLE {quote(schema)}.{quote(table)}")
        except sa.exc.SQLAlchemyError as exc:
            raise BackupError(f"{file} was restored into {self.label}, but the tables made since the "
                              f"backup could not be dropped: {exc.orig or exc}") from None
        finally:
            engine.dispose()

    def _run(self, program: str, *args: str, failed: str) -> str:
        """Run a PostgreSQL client program with the connection in its environment; its stdout."""
        try:
            ran = subprocess.run([pg_program(program), *args], env=libpq_environment(self.url),
                                 capture_output=True, text=True, check=False)
        except OSError as exc:
            raise BackupError(f"{failed}: {exc}") from None
        if ran.returncode != 0:
            message = ran.stderr.strip() or f"exit status {ran.returncode}"
            if self.url.password:
                message = message.replace(str(self.url.password), "***")
            raise BackupError(f"{failed}: {message}")
        return ran.stdout


def libpq_environment(url: URL, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The process environment with the URL's connection parameters as libpq variables (PGHOST, ...)."""
    params = {"host": url.host, "port": url.port, "user": url.username, "password": url.password,
              "dbname": url.database}
    for key, value in url.query.items():
        if key not in LIBPQ_ENV or not isinstance(value, str):
            raise BackupError(f"{url.render_as_string(hide_password=True)}: the parameter {key!r} cannot be "
                              f"given to pg_dump and pg_restore (known: {', '.join(sorted(LIBPQ_ENV))})")
        params[key] = value
    env = dict(base)
    env.update({LIBPQ_ENV[key]: str(value) for key, value in params.items() if value is not None})
    return env


def pg_program(name: str) -> str:
    """`name` on PATH, else the newest version's under /usr/lib/postgresql."""
    found = shutil.which(name)
    if found:
        return found
    installed = sorted(PG_BIN_DIRS.glob(f"*/bin/{name}"), key=lambda path: _version(path.parent.parent.name))
    if not installed:
        raise BackupError(f"{name} not found on PATH or in {PG_BIN_DIRS}/*/bin: install the PostgreSQL "
                          "client programs (e.g. apt-get install postgresql-client)")
    return str(installed[-1])


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".")) if re.fullmatch(r"\d+(\.\d+)*", name) else (-1,)


# A table's line in `pg_restore --list`: "215; 1259 495991 TABLE public sys_meta postgres".
_TABLE_ENTRY = re.compile(r"^\d+; \d+ \d+ TABLE (.*)$", re.MULTILINE)


def archive_has_table(listing: str, schema: str, table: str) -> bool:
    """Whether the archive holds the table (names may hold spaces, so a line's start is compared)."""
    return any(rest.startswith(f"{schema} {table} ") for rest in _TABLE_ENTRY.findall(listing))


def marked_schemas(listing: str) -> set[str]:
    """The schemas in which the archive holds a Caseloom database (its marker table)."""
    return {rest.split(" ", 1)[0] for rest in _TABLE_ENTRY.findall(listing)
            if rest.split(" ", 2)[1:2] == [MARKER_TABLE]}


def _conninfo_value(value: str) -> str:
    """A value for a libpq connection string, quoted (so a name with = or spaces stays a name)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def live_workers(database_url: str) -> list[str]:
    """The job workers (each a `caseloom serve` or `caseloom worker`) seen alive on the database now,
    as `node pid N, seen S s ago`: what a restore would pull the data from under. Read without the
    definitions (a restore needs none), as jobs.workers reads them, by its own liveness rule."""
    from .database import absolute_url
    from .jobs.liveness import timing
    from .jobs.progress import _now
    from .jobs.workers import SeenWorker

    table = sa.table("sys_worker", sa.column("id"), sa.column("node"), sa.column("pid"), sa.column("threads"),
                     sa.column("seen_on", sa.DateTime))
    engine = sa.create_engine(absolute_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("sys_worker"):
                return []
            at = _now(conn)
            seen = [SeenWorker(r.id, r.node, r.pid, r.threads, max((at - r.seen_on).total_seconds(), 0.0))
                    for r in conn.execute(sa.select(table).order_by(table.c.seen_on.desc()))]
    except sa.exc.SQLAlchemyError:
        return []  # no database to read yet: nothing runs on it
    finally:
        engine.dispose()
    lost_after = timing().lost_after
    return [f"{w.node} pid {w.pid}, seen {w.last_seen_seconds:.0f} s ago" for w in seen if w.alive(lost_after)]
