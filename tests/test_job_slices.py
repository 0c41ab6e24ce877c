"""One job, several workers: create_child_cases in slices on PostgreSQL (caseloom.jobs.slices).

The parent job plans slices of CASELOOM_JOB_SLICE_ROWS members; idle workers claim them from the
queue (Redis here) while the parent runs the ones nobody has taken and adds their progress up.
Whatever dies when, every member gets exactly one child: a slice picks its work by the state of
the data, and a lost slice or parent is resumed by another worker's reaper.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import zlib

import pytest
import sqlalchemy as sa

from caseloom.access import SYSTEM
from caseloom.actions import run_action
from caseloom.jobs import CANCELED, DONE, JobQueue, execute_job, get_job, stop_job, undo_job
from caseloom.jobs.slices import JOB as SLICE
from caseloom.runtime import Runtime
from test_job_recovery import CASE, children, environment, job_row, major_with_members, processes, wait_for

REDIS_URL = os.environ.get("CASELOOM_TEST_REDIS_URL")
needs_postgres = pytest.mark.skipif(not os.environ.get("CASELOOM_TEST_POSTGRES_URL"), reason="PostgreSQL only: "
                                    "set CASELOOM_TEST_POSTGRES_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="set CASELOOM_TEST_REDIS_URL (redis://127.0.0.1:6379/0)")


@pytest.fixture
def pg_config(config):
    if not config.database_url.startswith("postgresql"):
        pytest.skip("slices run on PostgreSQL; SQLite has one writer at a time")
    return config


def slices(runtime: Runtime, job_id: str) -> list:
    table = runtime.storage.internal("sys_job")
    with runtime.engine.connect() as conn:
        ids = conn.execute(sa.select(table.c.id).where(table.c.target_table == "sys_job", table.c.target_sys_id == job_id,
                                                       table.c.name == SLICE)).scalars().all()
        return sorted((get_job(conn, runtime.storage, i) for i in ids), key=lambda j: j.params["slice"])


def numbers(runtime: Runtime, major: str) -> list[str]:
    physical = runtime.storage.physical(CASE)
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(physical.c.number).where(physical.c.parent == major)).scalars().all()


@needs_postgres
def test_a_big_list_is_made_in_slices_that_add_up_and_undo_together(pg_config, definitions):
    runtime = Runtime(dataclasses.replace(pg_config, job_slice_rows=100, job_commit_seconds=0), definitions)
    try:
        major = major_with_members(runtime, 1_050, "SL")
        with runtime.transaction() as service:
            job_id = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"}).job
        job = execute_job(runtime, job_id)  # no other worker: the parent runs every slice itself
        assert (job.state, job.done, job.total) == (DONE, 1_050, 1_050)
        assert job.message == "1050 child records created"
        parts = slices(runtime, job_id)
        assert [(j.params["slice"], j.state) for j in parts] == [(i, DONE) for i in range(1, 12)]
        assert [j.done for j in parts] == [100] * 10 + [50]
        assert children(runtime, major) == (1_050, 1_050)
        made = numbers(runtime, major)
        assert len(set(made)) == 1_050 and all(n.startswith("CS") for n in made)
        with runtime.transaction() as service:
            undone = undo_job(service, job_id)
        assert undone.removable == 1_050
        assert children(runtime, major) == (0, 0)
    finally:
        runtime.engine.dispose()


@needs_postgres
def test_small_lists_and_sqlite_are_not_sliced(pg_config, definitions):
    runtime = Runtime(dataclasses.replace(pg_config, job_slice_rows=100), definitions)
    try:
        major = major_with_members(runtime, 199, "SM")  # under two slices' worth
        with runtime.transaction() as service:
            job_id = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"}).job
        assert execute_job(runtime, job_id).state == DONE
        assert slices(runtime, job_id) == []
        assert children(runtime, major) == (199, 199)
    finally:
        runtime.engine.dispose()


@needs_postgres
def test_a_failed_slice_fails_the_job_and_a_rerun_finishes_it(pg_config, definitions):
    runtime = Runtime(dataclasses.replace(pg_config, job_slice_rows=100, job_commit_seconds=0), definitions)
    try:
        major = major_with_members(runtime, 300, "SF")
        with runtime.transaction() as service:
            job_id = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"}).job
        broken = {"on": True}
        from caseloom.effects import lists

        real = lists.fill_children

        def fill(service, spec, mtype, after, end, batch_done):
            if broken["on"] and after:  # every slice but the first
                raise RuntimeError("disk full")
            return real(service, spec, mtype, after, end, batch_done)

        lists.fill_children = fill
        try:
            job = execute_job(runtime, job_id)
        finally:
            lists.fill_children = real
        assert job.state == "failed" and "slice 2 of 3 failed: RuntimeError: disk full" in job.message
        assert children(runtime, major) == (100, 100)
        broken["on"] = False
        job = execute_job(runtime, job_id)  # a re-run (failed jobs may be claimed again)
        assert (job.state, job.done, job.total) == (DONE, 300, 300)
        assert children(runtime, major) == (300, 300)
        assert [j.state for j in slices(runtime, job_id)] == [DONE] * 3
    finally:
        runtime.engine.dispose()


@needs_postgres
@pytest.mark.parametrize("dies", ["after its last unit", "after its first unit"])
def test_a_slice_run_again_after_dying_counts_what_its_first_run_made(pg_config, definitions, monkeypatch, dies):
    """A worker dies after a slice's units committed (its children and its progress) but before the
    slice was marked done. The slice's next run finds less or nothing left; its count, and the
    job's, go on from what the first run committed, so the job ends with every member counted."""
    from caseloom.effects import lists
    from caseloom.jobs import slices as slicing
    from caseloom.jobs.children import children_slice

    monkeypatch.setattr(lists, "SET_BATCH", 40)
    runtime = Runtime(dataclasses.replace(pg_config, job_slice_rows=100, job_commit_seconds=0), definitions)
    try:
        major = major_with_members(runtime, 300, "SD")
        with runtime.transaction() as service:
            job_id = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"}).job
        died = []

        def dying(run):  # the second slice's first run: its work commits, then the worker is gone
            if run.params["slice"] != 2 or died:
                return children_slice(run)
            died.append(run.job.id)
            if dies == "after its first unit":
                fill = lists.fill_children

                def one_unit(service, spec, mtype, after, end, batch_done):
                    def done_then_gone(added):
                        batch_done(added)  # commits this unit with the slice's progress
                        raise RuntimeError("the worker is gone")
                    return fill(service, spec, mtype, after, end, done_then_gone)

                monkeypatch.setattr(lists, "fill_children", one_unit)
                try:
                    children_slice(run)  # gone after its first unit
                finally:
                    monkeypatch.setattr(lists, "fill_children", fill)
            else:
                children_slice(run)
                raise RuntimeError("the worker is gone")

        monkeypatch.setitem(slicing.KINDS, "children_from_list", dying)
        job = execute_job(runtime, job_id)
        assert job.state == "failed" and "slice 2 of 3 failed" in job.message
        made = 100 if dies == "after its last unit" else 40
        assert slices(runtime, job_id)[1].done == made
        assert children(runtime, major) == (100 + made, 100 + made)  # the third slice has not run
        job = execute_job(runtime, job_id)  # a re-run: the failed slice runs again
        assert (job.state, job.done, job.total) == (DONE, 300, 300)
        assert [j.done for j in slices(runtime, job_id)] == [100, 100, 100]
        assert slices(runtime, job_id)[1].message == "100 child records created"
        assert children(runtime, major) == (300, 300)
    finally:
        runtime.engine.dispose()


@needs_postgres
def test_stopping_the_job_stops_its_queued_slices(pg_config, definitions):
    runtime = Runtime(dataclasses.replace(pg_config, job_slice_rows=100), definitions)
    try:
        major = major_with_members(runtime, 400, "SX")
        with runtime.transaction() as service:
            job_id = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"}).job
        planned = {}

        def stop_after_plan(service) -> None:  # a commit hook: the unit that planned the slices has committed
            if not planned and slices(runtime, job_id):
                planned["yes"] = True
                with runtime.transaction() as admin:
                    stop_job(admin, job_id)

        runtime.commit_hooks.append(stop_after_plan)
        job = execute_job(runtime, job_id)
        assert job.state == CANCELED and job.message.startswith("stopped by")
        assert {j.state for j in slices(runtime, job_id)} == {CANCELED}
        assert children(runtime, major) == (0, 0)
    finally:
        runtime.engine.dispose()


# -- several worker processes on Redis ------------------------------------------------------------------

def redis_queue(request) -> str:
    """A Redis database of its own for this test (1 to 15 by the test's name), emptied first."""
    import redis

    base = REDIS_URL.rsplit("/", 1)[0]
    url = f"{base}/{zlib.crc32(request.node.name.encode()) % 15 + 1}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def on_redis(pg_config, definitions, request):
    """(config, runtime) on the test's PostgreSQL database with a Redis queue of its own."""
    config = dataclasses.replace(pg_config, queue=redis_queue(request))
    runtime = Runtime(config, definitions)
    yield config, runtime
    runtime.engine.dispose()


def started_job(runtime: Runtime, country: str) -> tuple[str, str]:
    """(major case, its create_child_cases job, queued) over MEMBERS new accounts of `country`."""
    major = major_with_members(runtime, MEMBERS, country)
    with runtime.transaction() as service:
        return major, run_action(service, CASE, major, "create_child_cases", {"comments": "hello"}).job


def pids(runtime: Runtime, job_id: str) -> set[int]:
    return {int(j.worker.split(":")[-2]) for j in slices(runtime, job_id) if j.worker}


MEMBERS = 12_000
SLICE_ROWS = "1000"


@needs_postgres
@needs_redis
def test_two_workers_share_one_job(on_redis, tmp_path):
    config, runtime = on_redis
    major, job_id = started_job(runtime, "TW")
    env = environment(config, tmp_path, CASELOOM_JOB_SLICE_ROWS=SLICE_ROWS, CASELOOM_JOB_COMMIT_SECONDS="1")
    with processes() as start:
        workers = [start("worker", "--workers", "1", env=env, cwd=tmp_path) for _ in range(2)]
        JobQueue(runtime).enqueue_job(job_id)
        assert wait_for(lambda: job_row(runtime, job_id).state == DONE, 180, 0.2), job_row(runtime, job_id)
        assert pids(runtime, job_id) == {w.pid for w in workers}  # both ran slices
    assert job_row(runtime, job_id).done == MEMBERS
    assert children(runtime, major) == (MEMBERS, MEMBERS)
    assert len(set(numbers(runtime, major))) == MEMBERS


@needs_postgres
@needs_redis
@pytest.mark.parametrize("victim", ["parent", "other"], ids=["the worker running the parent", "the other worker"])
def test_killing_one_of_two_workers_mid_job_leaves_one_child_per_member(on_redis, tmp_path, victim):
    config, runtime = on_redis
    major, job_id = started_job(runtime, "KW")
    env = environment(config, tmp_path, CASELOOM_JOB_SLICE_ROWS=SLICE_ROWS, CASELOOM_JOB_LOST_SECONDS="3")
    with processes() as start:
        workers = {w.pid: w for w in (start("worker", "--workers", "1", env=env, cwd=tmp_path) for _ in range(2))}
        JobQueue(runtime).enqueue_job(job_id)
        # both at work, some children committed, far from done
        assert wait_for(lambda: len(pids(runtime, job_id)) == 2 and 0 < job_row(runtime, job_id).done, 120, 0.05), \
            job_row(runtime, job_id)
        parent_pid = int(job_row(runtime, job_id).worker.split(":")[-2])
        killed = parent_pid if victim == "parent" else next(p for p in workers if p != parent_pid)
        os.kill(killed, signal.SIGKILL)
        workers[killed].wait(timeout=10)
        assert children(runtime, major)[0] < MEMBERS, "killed in the middle"
        started = time.monotonic()
        assert wait_for(lambda: job_row(runtime, job_id).state == DONE, 180, 0.2), job_row(runtime, job_id)
        print(f"\n[slices] one of two workers killed ({victim}): the survivor finished in "
              f"{time.monotonic() - started:.1f} s")
    assert children(runtime, major) == (MEMBERS, MEMBERS)
    assert len(set(numbers(runtime, major))) == MEMBERS
    assert job_row(runtime, job_id).done == MEMBERS
    assert {j.state for j in slices(runtime, job_id)} == {DONE}
    with runtime.transaction(SYSTEM) as service:
        assert undo_job(service, job_id).removable == MEMBERS  # the slices' work is the job's
