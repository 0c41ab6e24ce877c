"""New indexes on tables that hold rows, built (and old ones dropped) on PostgreSQL without stopping
the writes to them.

A plain `CREATE INDEX` takes its table's SHARE lock for the whole build: every insert, update and
delete of the table waits until the index is built, and a trigram or text index over a million cases
takes tens of seconds; a `DROP INDEX` waits for every transaction on its table, and every statement
after it waits behind it. So a schema change (`caseloom.migrate`) builds a new index of a table that
holds rows after its transaction commits, with `CREATE INDEX CONCURRENTLY`, and drops an index it
no longer wants with `DROP INDEX CONCURRENTLY`: the table is read and written meanwhile, and queries
run without the index until it is there (slower, never wrong). An index of an empty table, a new
table's among them, is built or dropped in the transaction, as before.

A concurrent build waits for the transactions already writing to the table (at most
BUILD_LOCK_WAIT_MS), and one that fails, or whose process dies, leaves an *invalid* index behind.
Such an index is dropped and built again by the next schema change or `caseloom init`; a build that
did not happen is reported, never hidden. SQLite builds in the transaction: its writer holds the
whole database anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

log = logging.getLogger(__name__)
BUILD_LOCK_WAIT_MS = 30_000  # how long a concurrent build waits for the transactions writing to its table
LATER = "caseloom_indexes_later"  # Connection.info: the builds a committed schema change leaves to do


@dataclass(frozen=True)
class IndexBuild:
    name: str
    table: str
    create: str | None  # the whole CREATE INDEX CONCURRENTLY statement; None: the index is dropped
    analyze: bool = False  # an index of an expression: the planner knows its values only after ANALYZE

    @classmethod
    def drop(cls, name: str, table: str) -> IndexBuild:
        return cls(name, table, None)


def has_rows(conn: sa.Connection, table: str) -> bool:
    return conn.exec_driver_sql(f'SELECT EXISTS (SELECT 1 FROM "{table}")').scalar()


def invalid(conn: sa.Connection) -> set[str]:
    """The names of the invalid indexes of the current schema (PostgreSQL): left by a concurrent build
    that failed or whose process died."""
    return set(conn.exec_driver_sql(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND NOT i.indisvalid"
    ).scalars())


def validity(conn: sa.Connection, name: str) -> bool | None:
    """Whether the index `name` of the current schema is valid (False: a concurrent build left it
    invalid), or None when there is none."""
    return conn.execute(sa.text(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relname = :n"),
        {"n": name}).scalar()


def drop_if_invalid(conn: sa.Connection, name: str, concurrently: bool = False) -> bool:
    """Drop the index `name` if it is invalid (`concurrently`: outside a transaction, never holding up
    the table's writes); returns whether a valid one is there."""
    valid = validity(conn, name)
    if valid is False:
        conn.exec_driver_sql(f'DROP INDEX {"CONCURRENTLY " if concurrently else ""}"{name}"')
    return bool(valid)


def keep_for_later(conn: sa.Connection, builds: list[IndexBuild]) -> None:
    conn.info[LATER] = list(builds)


def take_later(conn: sa.Connection) -> list[IndexBuild]:
    """The builds the schema change just made on `conn` left for after its commit (taken once)."""
    return conn.info.pop(LATER, [])


def build_later(engine: sa.Engine, builds: list[IndexBuild], beat: Callable[[], None] | None = None) -> list[str]:
    """Build `builds` concurrently, each on a connection of its own outside any transaction, once the
    schema change that planned them has committed; returns a sentence for each index not built.
    `beat` is called every second while they build (a server process is busy, not stuck)."""
    if not builds:
        return []
    # the new indexes first, so a lookup an old one served always has one; an old one of a new one's name before it
    made = {b.name for b in builds if b.create is not None}
    builds = sorted(builds, key=lambda b: 1 if b.create is not None else 0 if b.name in made else 2)
    done = threading.Event()
    beating = None
    if beat is not None:
        def _beat() -> None:
            while not done.wait(1):
                beat()
        beating = threading.Thread(target=_beat, name="index-build-beat", daemon=True)
        beating.start()
    notes: list[str] = []
    left = list(builds)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            before = conn.exec_driver_sql("SHOW lock_timeout").scalar()
            conn.exec_driver_sql(f"SET lock_timeout = {BUILD_LOCK_WAIT_MS}")
            failed = False
            while left:
                build = left[0]
                if build.create is None and build.name not in made and failed:
                    left.pop(0)
                    notes.append(f"the index {build.name} of {build.table} is kept until the index that "
                                 f"replaces it is built")  # its lookups keep an index meanwhile
                    continue
                started = time.monotonic()
                log.info("index-build: %s %s of %s, concurrently", "building" if build.create else "dropping",
                         build.name, build.table)
                note = _build(conn, build)  # raises when the connection itself is lost: this build is left
                left.pop(0)
                if note:
                    log.warning("index-build: %s", note[0])
                else:
                    log.info("index-build: %s %s of %s in %.1f s", "built" if build.create else "dropped",
                             build.name, build.table, time.monotonic() - started)
                failed = failed or bool(note and build.create is not None)
                notes += note
            conn.exec_driver_sql(f"SET lock_timeout = '{before}'")  # the pool's connection as it was
    except sa.exc.DBAPIError as exc:  # the database or the connection went away: the change is made all the same
        lost = [_not_done(build, _reason(exc)) for build in left]
        for note in lost:
            log.warning("index-build: %s", note)
        notes += lost
    finally:
        done.set()
        if beating is not None:
            beating.join()
    return notes


def _reason(exc: sa.exc.DBAPIError) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def _not_done(build: IndexBuild, reason: str) -> str:
    if build.create is None:
        return (f"the index {build.name} of {build.table} was not dropped ({reason}); the change itself is made: "
                f"the next change of definitions or `caseloom init` drops it")
    return (f"the index {build.name} of {build.table} was not built ({reason}); the change itself is made, and "
            f"queries run without the index: the next change of definitions or `caseloom init` builds it")


def _build(conn: sa.Connection, build: IndexBuild) -> list[str]:
    """Build or drop one index; a sentence when that failed. A lost connection (the server ended the
    session, or went away) is raised: nothing more can be done on it."""
    if build.create is None:
        try:
            conn.exec_driver_sql(f'DROP INDEX CONCURRENTLY IF EXISTS "{build.name}"')
            return []
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            return [_not_done(build, _reason(exc))]
    try:
        if not drop_if_invalid(conn, build.name, concurrently=True):  # none there, or only a broken one
            conn.exec_driver_sql(build.create)
        if build.analyze:
            conn.exec_driver_sql(f'ANALYZE "{build.table}"')
        return []
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise  # the invalid index it leaves is dropped by the next schema change
        try:
            drop_if_invalid(conn, build.name, concurrently=True)
        except sa.exc.DBAPIError:
            pass  # the next schema change drops it
        return [_not_done(build, _reason(exc))]
