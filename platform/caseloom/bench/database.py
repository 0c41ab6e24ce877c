"""The bench's own database: a SQLite file in a temporary folder, or a database it creates on a
PostgreSQL server; snapshots of it, and plain driver connections for the baselines."""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ..database import SQLITE_PRAGMAS, SQLITE_SIDE_FILES

BENCH_DB = f"caseloom_bench_{os.getpid()}"  # one per run: runs side by side never meet


class ScratchDatabase:
    """Created empty for one bench run and dropped at the end; never the user's database."""

    def __init__(self, folder: Path, server_url: str | None = None):
        self.folder = folder
        if server_url is None or make_url(server_url).get_backend_name() == "sqlite":
            self.kind = "sqlite"
            self.path = folder / "bench.db"
            self.url = f"sqlite:///{self.path}"
        else:
            self.kind = "postgresql"
            self.server = make_url(server_url)
            self.url = self.server.set(database=BENCH_DB).render_as_string(hide_password=False)
            self._admin(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)', f'CREATE DATABASE "{BENCH_DB}"')
        self._snapshots = 0
        self._server_version: int | None = None

    @property
    def label(self) -> str:
        return "SQLite" if self.kind == "sqlite" else "PostgreSQL"

    def snapshot(self) -> str:
        """A copy of the database as it is now (for a baseline to redo the same work on); every
        connection to it must be closed first. Returns the copy's name."""
        self._snapshots += 1
        if self.kind == "sqlite":
            copy = self.folder / f"snapshot{self._snapshots}.db"
            copy.unlink(missing_ok=True)
            with closing(sqlite3.connect(self.path)) as source, closing(sqlite3.connect(copy)) as target:
                # the work measured next starts with an empty WAL and no checkpoint still to run
                source.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                source.backup(target)
            return str(copy)
        name = f"{BENCH_DB}_snapshot{self._snapshots}"
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                    f'CREATE DATABASE "{name}" TEMPLATE "{BENCH_DB}"{self._file_copy()}')
        return name

    def _file_copy(self) -> str:
        """PostgreSQL 15 copies a template through the WAL and the shared buffers by default: gigabytes
        of WAL and dirty pages that the next checkpoint, in the middle of the work measured next,
        would write out. FILE_COPY copies the files, between two checkpoints, so the work starts
        with none still to run (as the SQLite snapshot's TRUNCATE checkpoint does)."""
        if self._server_version is None:
            engine = sa.create_engine(self.server)
            try:
                with engine.connect() as conn:
                    self._server_version = int(conn.exec_driver_sql("SHOW server_version_num").scalar_one())
            finally:
                engine.dispose()
        return " STRATEGY = FILE_COPY" if self._server_version >= 150000 else ""

    def drop_snapshot(self, name: str) -> None:
        if self.kind == "sqlite":
            for suffix in ("", *SQLITE_SIDE_FILES):  # the copy and the files beside it
                Path(name + suffix).unlink(missing_ok=True)
        else:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def connect(self, name: str | None = None):
        """A plain DB-API connection (sqlite3 or psycopg) to the database or one of its snapshots."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(name or self.path, isolation_level=None)
            for pragma in SQLITE_PRAGMAS:  # the settings the platform's own connections use
                conn.execute(pragma)
            return conn
        import psycopg

        url = self.server.set(drivername="postgresql", database=name or BENCH_DB)
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)

    def url_of(self, name: str | None = None) -> str:
        """The SQLAlchemy URL of the database or one of its snapshots."""
        if self.kind == "sqlite":
            return f"sqlite:///{name or self.path}"
        return self.server.set(database=name or BENCH_DB).render_as_string(hide_password=False)

    @property
    def placeholder(self) -> str:
        return "?" if self.kind == "sqlite" else "%s"

    def drop(self) -> None:
        """The database and the run's folder (a SQLite run's database, its queue and its logs) go."""
        if self.kind == "postgresql":
            self._admin(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)

    def _admin(self, *statements: str) -> None:
        engine = sa.create_engine(self.server, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.exec_driver_sql(statement)
        finally:
            engine.dispose()
