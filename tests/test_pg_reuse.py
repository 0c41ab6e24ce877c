"""The suite's own PostgreSQL databases (tests/pg_reuse.py): a database put back after a test holds
what the template holds (rows in the same order, statistics, planner sizes, sequences), and one
whose schema a test changed is never given out again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import sqlalchemy as sa

from conftest import POSTGRES_URL, pg_pool

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL only: set CASELOOM_TEST_POSTGRES_URL")


def _state(name: str) -> tuple:
    """Every user table's rows in the order a scan reads them, the statistics, sizes and sequences."""
    with psycopg.connect(pg_pool().conninfo, dbname=name) as conn:
        tables = [table for _, _, table in conn.execute(
            "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY c.relname").fetchall()]
        rows = {table: conn.execute(f'SELECT md5(string_agg(x::text, \'|\')) FROM (SELECT x FROM "{table}" x) y')
                .fetchone()[0] for table in tables}
        stats = conn.execute("SELECT tablename, attname, null_frac, n_distinct, most_common_vals::text, "
                             "histogram_bounds::text, correlation FROM pg_stats WHERE schemaname = 'public' "
                             "ORDER BY 1, 2").fetchall()
        sizes = conn.execute("SELECT c.relname, c.relpages, c.reltuples, c.relallvisible FROM pg_class c "
                             "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                             "ORDER BY 1").fetchall()
        sequences = conn.execute("SELECT sequencename, last_value FROM pg_sequences ORDER BY 1").fetchall()
    return rows, stats, sizes, sequences


def _template(templates) -> str:
    return sa.engine.make_url(templates["postgresql"]).database


@contextmanager
def changed_and_given_again(template: str | None, *changes: str) -> Iterator[tuple[str, str]]:
    """(the database a test had, the one the next test gets): the first got `changes` and was
    given back, the second is given back when done."""
    name = pg_pool().acquire(template)
    with psycopg.connect(pg_pool().conninfo, dbname=name, autocommit=True) as conn:
        for change in changes:
            conn.execute(change)
    pg_pool().release(name)
    again = pg_pool().acquire(template)
    try:
        yield name, again
    finally:
        pg_pool().release(again)


CHANGES = [  # what a test did to its database, in SQL
    "UPDATE sys_user SET email = 'changed@example.com' WHERE user_name = 'agent'",
    "DELETE FROM sys_user_has_role",
    "INSERT INTO sys_properties SELECT (jsonb_populate_record(NULL::sys_properties, to_jsonb(p) || "
    "jsonb_build_object('sys_id', md5(p.sys_id || g), 'name', p.name || '.' || g))).* "
    "FROM sys_properties p, generate_series(1, 20) g",  # enough rows to be analysed
    "ANALYZE sys_user",
    "SELECT nextval(sequencename::regclass) FROM pg_sequences",
    "UPDATE sys_user SET email = email WHERE false",  # nothing at all
    "BEGIN; UPDATE sys_user SET email = 'rolled-back@example.com'; ROLLBACK",
    "CREATE TEMPORARY TABLE probe AS SELECT * FROM sys_user",  # the catalogs written, the schema the same
    "VACUUM sys_user",  # the planner's sizes
]


@pytest.fixture(params=[True, False], ids=["by its counters", "by its rows"])
def counted(request, monkeypatch):
    """What changed found from the server's activity counters (PostgreSQL 15 and later), and from each
    table's rows (the way for older servers)."""
    if request.param and not pg_pool().counted:
        pytest.skip("the server keeps no activity counters a test can rely on (PostgreSQL 15 and later do)")
    monkeypatch.setattr(pg_pool(), "_counted", request.param)
    return request.param


@pytest.mark.parametrize("change", CHANGES)
def test_a_database_put_back_holds_what_the_template_holds(templates, change, counted):
    template = _template(templates)
    expected = _state(template)
    with changed_and_given_again(template, change) as (name, again):
        assert again == name  # put back, not copied afresh
        assert _state(again) == expected


SCHEMA_CHANGES = [
    "ALTER TABLE sys_user ADD COLUMN probe text",
    "CREATE INDEX probe ON sys_user (email)",
    "CREATE TABLE probe (n int)",
    "DROP TABLE sys_properties",
    "TRUNCATE sys_user",
    "CREATE FUNCTION probe() RETURNS int LANGUAGE sql AS 'SELECT 1'",
]


@pytest.mark.parametrize("change", SCHEMA_CHANGES)
def test_a_database_whose_schema_a_test_changed_is_dropped(templates, change, counted):
    template = _template(templates)
    with changed_and_given_again(template, change) as (name, again):
        assert again != name
        with psycopg.connect(pg_pool().conninfo, dbname=pg_pool().admin) as conn:
            assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()[0] == 0
        assert _state(again) == _state(template)


def test_an_empty_database_is_given_back_empty():
    with changed_and_given_again(None, "CREATE TABLE probe (n int PRIMARY KEY)", "CREATE SCHEMA elsewhere",
                                 "CREATE TABLE elsewhere.probe (n int)") as (name, again):
        assert again == name
        with psycopg.connect(pg_pool().conninfo, dbname=again) as conn:
            assert conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'").fetchone()[0] == 0
            assert [n for n, in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                                             "AND nspname <> 'information_schema'")] == ["public"]
