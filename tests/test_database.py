"""SQLite commits leave the WAL checkpoint to a background thread of the process."""

from __future__ import annotations

import contextlib
import sqlite3
import time

import pytest

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
