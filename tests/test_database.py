"""SQLite commits leave the WAL checkpoint to a background thread of the process; PostgreSQL
connections end a statement whose client died."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from caseloom.database import Checkpointer


def checkpointed_count(path: str, table: str) -> int:
    """Rows of `table` in the database file itself, ignoring its WAL (what a checkpoint has copied)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as conn:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def test_a_commit_returns_before_the_checkpoint_and_a_background_thread_runs_it(runtime, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite matter: PostgreSQL checkpoints on its own")
    path = database_url[len("sqlite:///"):]
    with runtime.transaction() as service:
        service.insert_many("customer_account", ({"name": f"Checkpointed {i}"} for i in range(500)))
        total = service.conn.exec_driver_sql("SELECT count(*) FROM customer_account").scalar()
    deadline = time.monotonic() + 10
    copied = None
    while copied != total and time.monotonic() < deadline:
        try:
            copied = checkpointed_count(path, "customer_account")
        except sqlite3.DatabaseError:  # read mid-checkpoint, the file half written ("malformed"): not yet
            copied = None
        if copied != total:
            time.sleep(0.05)
    assert copied == total
    assert any(key[1] == path for key in Checkpointer._running)  # the thread that did it waits for the next commit


def test_a_statement_whose_process_died_ends_within_seconds_on_postgresql(runtime, database_url):
    """A process killed in the middle of a statement (a worker mid-batch) leaves PostgreSQL's server
    process running it until it ends, with its transaction's locks, unless the connection checks its
    client (`client_connection_check_interval`, set on every connection Caseloom opens): then it ends
    within a second or so. Here a 120 s statement, killed after it started, must be gone in 20 s."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL matter: SQLite's statements die with their process")
    with runtime.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW client_connection_check_interval").scalar() == "1s"
    name = f"caseloom_dying_{uuid.uuid4().hex[:12]}"
    url = sa.engine.make_url(database_url).update_query_dict({"application_name": name})
    script = ("import sys; from caseloom.database import make_engine\n"
              "with make_engine(sys.argv[1]).connect() as conn: conn.exec_driver_sql('SELECT pg_sleep(120)')")
    dying = subprocess.Popen([sys.executable, "-c", script, url.render_as_string(hide_password=False)])

    def running() -> bool:
        with runtime.engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n "
                                        "AND state = 'active'"), {"n": name}).scalar() > 0

    try:
        deadline = time.monotonic() + 30
        while not running():
            assert dying.poll() is None and time.monotonic() < deadline, "the statement never started"
            time.sleep(0.1)
    finally:
        dying.kill()
        dying.wait()
    deadline = time.monotonic() + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(), "the dead process's statement still runs"
