"""Statistics during bulk loads on PostgreSQL (caseloom.bulk.keep_statistics_fresh): a table a load
of row batches grows is analysed again as it grows, a table autovacuum holds is skipped, not waited
for, and a table other connections filled is analysed before a job plans on it (refresh_if_stale).
The tables a set-based job writes beside its records are left to autovacuum (caseloom.setinsert)."""

from __future__ import annotations

import dataclasses
import time

import pytest
import sqlalchemy as sa

from caseloom import bulk
from caseloom.actions import run_action
from caseloom.effects import lists
from caseloom.jobs import DONE, execute_job
from caseloom.runtime import Runtime
from test_job_recovery import CASE, children, major_with_members


@pytest.fixture
def pg_engine(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's statistics: SQLite's ANALYZE is run once, after a load")
    engine = sa.create_engine(database_url)
    table = sa.Table("stats_probe", sa.MetaData(), sa.Column("n", sa.Integer))
    table.create(engine)
    try:
        yield engine, table
    finally:
        table.drop(engine)
        engine.dispose()


def _load(conn: sa.Connection, table: sa.Table, rows: int) -> None:
    conn.execute(sa.text(f"INSERT INTO {table.name} SELECT g FROM generate_series(1, {rows}) AS g"))
    bulk.keep_statistics_fresh(conn, table, rows)


def _reltuples(conn: sa.Connection, table: sa.Table) -> float:
    return float(conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE relname = %s", (table.name,)).scalar())


def test_a_table_a_job_grows_is_analysed_again(pg_engine):
    engine, table = pg_engine
    with engine.begin() as conn:
        _load(conn, table, bulk.ANALYZE_EVERY - 1)  # below the mark: left to autovacuum
        assert _reltuples(conn, table) <= 0
        _load(conn, table, 1)
        assert _reltuples(conn, table) == bulk.ANALYZE_EVERY


def test_a_table_autovacuum_holds_is_skipped_not_waited_for(pg_engine):
    engine, table = pg_engine
    with engine.connect() as vacuum, engine.begin() as conn:
        vacuum.exec_driver_sql(f"LOCK TABLE {table.name} IN SHARE UPDATE EXCLUSIVE MODE")  # as (auto)VACUUM holds it
        conn.exec_driver_sql("SET LOCAL lock_timeout = '3s'")  # waiting for it would fail the load
        _load(conn, table, bulk.ANALYZE_EVERY)
        assert _reltuples(conn, table) <= 0  # not analysed this time
        vacuum.rollback()
        _load(conn, table, bulk.ANALYZE_EVERY)  # the next mark, once the lock is gone
        assert _reltuples(conn, table) == 2 * bulk.ANALYZE_EVERY


STALE = [  # (rows the statistics counted, rows another connection wrote since, analysed now)
    (0, bulk.STALE_ROWS - 1, False),
    (0, bulk.STALE_ROWS, True),
    (10_000, 1_999, False),  # under a fifth of what was counted
    (10_000, 2_000, True),
]


@pytest.mark.parametrize(("counted", "written", "analysed"), STALE)
def test_a_table_other_workers_filled_is_analysed_before_a_job_plans_on_it(pg_engine, counted, written, analysed):
    """A resumed job counts the members still without a child, among children the slices of other
    workers made, each in its own connection (too few each for keep_statistics_fresh)."""
    engine, table = pg_engine
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table.name} SELECT g FROM generate_series(1, {counted}) AS g"))
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
    with engine.begin() as conn:  # counted by the server before ANALYZE, so that ANALYZE takes them off
        conn.exec_driver_sql(f"ANALYZE {table.name}")
    with engine.begin() as other:
        other.execute(sa.text(f"INSERT INTO {table.name} SELECT g FROM generate_series(1, {written}) AS g"))
        other.exec_driver_sql("SELECT pg_stat_force_next_flush()")  # its count, as the server knows it, now
    for _ in range(100):
        with engine.connect() as conn:
            if conn.exec_driver_sql("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = %s",
                                    (table.name,)).scalar() == written:
                break
        time.sleep(0.05)
    else:
        pytest.fail(f"the server never counted the {written} rows written")
    with engine.begin() as conn:
        assert bulk.refresh_if_stale(conn, table) is analysed
        assert _reltuples(conn, table) == (counted + written if analysed else counted)


def test_a_bulk_insert_plan_lives_no_longer_than_its_table(database_url):
    """The compiled INSERT is kept with the table, and used again: once the table (and its MetaData) is
    let go, nothing of the bulk writer keeps it alive, as a module-level cache of tables did (each
    test's and each change of definitions' whole MetaData, up to 512 of them)."""
    import gc
    import weakref

    engine = sa.create_engine(database_url)
    metadata = sa.MetaData()
    table = sa.Table("plan_probe", metadata, sa.Column("n", sa.Integer), sa.Column("label", sa.String(20)))
    plan = bulk._plan(table, ("n", "label"), engine.dialect)
    assert bulk._plan(table, ("n", "label"), engine.dialect) is plan
    assert "INSERT INTO plan_probe" in plan[0]
    gone = weakref.ref(metadata)
    del table, metadata
    gc.collect()
    assert gone() is None
    engine.dispose()


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def test_the_records_a_set_update_touched_are_joined_never_compared_with_every_id(pg_engine):
    """After an UPDATE sets a value the statistics have never seen, a condition on it looks selective
    to the planner. The touched records were `sys_id = ANY(ARRAY(SELECT ...))`: beside that condition it
    became a filter comparing each row with every touched id (quadratic: 2.2 s for 10,000). They are a
    semi-join now, with no merge join (which walked the whole primary key) while they are read; the
    setting is as it was afterwards."""
    from caseloom.setwrite import touched_ids

    engine, _ = pg_engine
    probe = sa.Table("touched_probe", sa.MetaData(), sa.Column("sys_id", sa.String(32), primary_key=True),
                     sa.Column("state", sa.Integer, index=True))
    probe.create(engine)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO touched_probe SELECT md5(g::text), 1 FROM generate_series(1, 20000) g")
            conn.exec_driver_sql("ANALYZE touched_probe")
            conn.exec_driver_sql("UPDATE touched_probe SET state = 18 WHERE sys_id IN "
                                 "(SELECT md5(g::text) FROM generate_series(1, 20000, 10) g)")
            with touched_ids(conn, sa.select(probe.c.sys_id).where(probe.c.state == 18)) as touched:
                assert conn.exec_driver_sql("SHOW enable_mergejoin").scalar() == "off"
                count = sa.select(sa.func.count()).select_from(probe).where(touched.where(probe), probe.c.state == 18)
                sql = count.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
                plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar()[0]["Plan"]
                nodes = list(_plan_nodes(plan))
                assert not any("ANY" in node.get("Filter", "") for node in nodes), plan
                assert any(node.get("Join Type") == "Semi" or node["Node Type"] == "Nested Loop" for node in nodes)
                assert conn.execute(count).scalar_one() == 2000
            assert conn.exec_driver_sql("SHOW enable_mergejoin").scalar() == "on"
    finally:
        probe.drop(engine)


def test_the_records_a_set_update_touched_are_read_along_their_run_of_the_key(pg_engine):
    """A major case's children were made together, so their keys are one run of the primary key. The
    touched records come with the range of their keys (it selects nothing more): the planner reads that
    run, where it hashed the touched ids and scanned the whole table for them (0.52 s against 0.14 s
    among a million cases for 100,000 children)."""
    from caseloom.setwrite import touched_ids

    engine, _ = pg_engine
    probe = sa.Table("touched_run", sa.MetaData(), sa.Column("sys_id", sa.String(32), primary_key=True),
                     sa.Column("parent", sa.String(32)), sa.Column("state", sa.Integer))
    probe.create(engine)
    try:
        with engine.begin() as conn:  # 200,000 records; the newest 20,000 are one parent's children
            conn.exec_driver_sql("INSERT INTO touched_run SELECT lpad(to_hex(g), 32, '0'), "
                                 "CASE WHEN g > 180000 THEN 'major' END, 1 FROM generate_series(1, 200000) g")
            conn.exec_driver_sql("ANALYZE touched_run")
            with touched_ids(conn, sa.select(probe.c.sys_id).where(probe.c.parent == "major")) as touched:
                assert (touched.low, touched.high) == (f"{180001:032x}", f"{200000:032x}")
                states = sa.select(probe.c.state).where(touched.where(probe)).distinct()
                sql = states.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
                nodes = list(_plan_nodes(conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar()[0]["Plan"]))
                scans = [node for node in nodes if node.get("Relation Name") == "touched_run"]
                assert scans and all(node["Node Type"] != "Seq Scan" for node in scans), scans
                assert conn.execute(states).scalars().all() == [1]
    finally:
        probe.drop(engine)


def _analyses(runtime: Runtime, tables: list[str]) -> dict[str, int]:
    """How many times each table was analysed by a command (autovacuum's are counted apart)."""
    with runtime.engine.connect() as conn:
        return dict(conn.exec_driver_sql("SELECT relname, analyze_count FROM pg_stat_user_tables "
                                         "WHERE relname = ANY(%s)", (tables,)).all())


def test_a_set_based_job_leaves_the_tables_it_writes_alongside_to_autovacuum(config, definitions, monkeypatch):
    """Creating children batch by batch in INSERT ... SELECTs runs no ANALYZE of the tables it
    writes beside the children (their task SLAs', the journal's), even where a load of row batches
    would: what reads those rows next is keyed by the children. (The children's own table is
    analysed as it grows, as the members' is after a list's refresh: a job plans on them.)
    Analysing the two after each batch had cost 1.7 to 2.1 s of 100,000 children on PostgreSQL."""
    if not config.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's statistics")
    monkeypatch.setattr(bulk, "ANALYZE_EVERY", 1)  # rows inserted one batch at a time are analysed at once
    monkeypatch.setattr(lists, "SET_BATCH", 40)
    runtime = Runtime(dataclasses.replace(config, job_commit_seconds=0), definitions)
    try:
        major = major_with_members(runtime, 200, "ST")
        cases, slas, journal = (runtime.storage.physical(name).name for name in (CASE, "task_sla", "sys_journal_field"))
        before = _analyses(runtime, [slas, journal])
        with runtime.transaction() as service:
            job_id = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"}).job
        job = execute_job(runtime, job_id)
        assert (job.state, job.done) == (DONE, 200)
        assert children(runtime, major) == (200, 200)
        with runtime.engine.connect() as conn:
            attached = conn.exec_driver_sql(f"SELECT count(*) FROM {slas} t JOIN {cases} c ON c.sys_id = t.task "
                                            "WHERE c.parent = %s", (major,)).scalar()
            entries = conn.exec_driver_sql(f"SELECT count(*) FROM {journal} j JOIN {cases} c "
                                           "ON c.sys_id = j.element_id WHERE c.parent = %s", (major,)).scalar()
        assert attached >= 200 and entries == 200  # the job wrote both tables
        assert _analyses(runtime, [slas, journal]) == before
    finally:
        runtime.engine.dispose()
