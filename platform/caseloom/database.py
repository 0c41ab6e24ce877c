"""Engines for SQLite and PostgreSQL, with SQLite set up for real transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

# WAL: readers never wait for the writer; NORMAL: a commit does not wait for the disk (WAL keeps it
# safe from corruption); a 64 MB page cache for lists over a million rows.
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=30000",
                  "PRAGMA cache_size=-65536")


@event.listens_for(Engine, "connect")
def _sqlite_connect(dbapi_connection, connection_record):
    if isinstance(dbapi_connection, sqlite3.Connection):
        # Let SQLAlchemy emit BEGIN itself so SAVEPOINTs work (pysqlite's own handling breaks them).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()


WRITE_LOCK = "caseloom_write_lock"  # an execution option: begin with the write lock held


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn):
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_LOCK) else "BEGIN")


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction for claiming work: on SQLite it holds the write lock from its first statement
    (BEGIN IMMEDIATE), so rows it reads stay unclaimed until it commits and a second claimer waits;
    on PostgreSQL it is a plain transaction whose reads lock rows with FOR UPDATE SKIP LOCKED."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_LOCK: True})
        with conn.begin():
            yield conn


def engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 10}


def absolute_url(url: str) -> str:
    """A SQLite URL with its file made absolute against the working directory (and its folder
    created), so every component (CLI, Flask-SQLAlchemy, worker) opens the same file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + ":memory:"):
        path = Path(url[len(prefix):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def make_engine(url: str) -> sa.Engine:
    url = absolute_url(url)
    return sa.create_engine(url, **engine_options(url))
