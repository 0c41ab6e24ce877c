"""Background jobs: the queue from CASELOOM_QUEUE, sys_job progress, re-runs that do no work twice,
the jobs API, and `caseloom worker` in a real subprocess."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from huey import RedisHuey, SqliteHuey

from caseloom.access import Actor
from caseloom.jobs import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    ClaimLost,
    JobQueue,
    claim_job,
    create_job,
    execute_job,
    finish_job,
    get_job,
    job,
    liveness,
    make_huey,
    progress,
    registry,
    release_job,
    report_progress,
    workers,
)
from caseloom.jobs.liveness import DEFAULT_LOST_SECONDS
from caseloom.jobs.progress import STALE_AFTER, hold, resume_lost
from caseloom.migrate import migrate
from caseloom.query import Query, Term
from caseloom.records import now
from caseloom.runtime import Runtime
from caseloom.users import add_user
from conftest import DEFINITIONS, ROOT, basic

GROUPS = ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]
CRASH_AFTER: list[int] = []  # the test job stops once after this many groups, as if its worker died


@job("test_make_groups")
def make_groups(run) -> str:
    """An idempotent job: one group per name in params, made only when it is not there yet."""
    names = run.params["names"]
    for i, name in enumerate(names, start=1):
        with run.transaction() as service:
            if not service.query("sys_user_group", Query(Term("name", "eq", name)), ["sys_id"]):
                service.insert("sys_user_group", {"name": name, "description": f"made by {service.actor.user_name}"})
            run.progress(service.conn, i, len(names), f"group {name}")
        if CRASH_AFTER and i == CRASH_AFTER[0]:
            CRASH_AFTER.clear()
            raise RuntimeError("worker lost")
    return f"{len(names)} groups"


@pytest.fixture
def queue(runtime):
    return JobQueue(runtime, make_huey(runtime.config.queue, immediate=True))


def load(runtime: Runtime, job_id: str):
    with runtime.engine.connect() as conn:
        return get_job(conn, runtime.storage, job_id)


def groups(runtime: Runtime) -> list[dict]:
    with runtime.transaction() as service:
        return service.query("sys_user_group", Query(Term("name", "in", GROUPS)), ["name", "description"])


# -- the queue ------------------------------------------------------------------------------------


def test_sqlite_queue_is_a_file_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    huey = make_huey("sqlite:///var/jobs/queue.db")
    assert isinstance(huey, SqliteHuey)
    assert huey.storage.filename == str(tmp_path / "var" / "jobs" / "queue.db")
    assert (tmp_path / "var" / "jobs" / "queue.db").exists()


def test_redis_queue_from_its_url():
    huey = make_huey("redis://127.0.0.1:6390/3")  # no connection is made until a task is enqueued
    assert isinstance(huey, RedisHuey)
    assert {k: huey.storage.pool.connection_kwargs[k] for k in ("host", "port", "db")} == {
        "host": "127.0.0.1", "port": 6390, "db": 3}


@pytest.mark.parametrize("url", ["postgresql://localhost/q", "queue.db", "sqlite:///:memory:"])
def test_an_unusable_queue_url_is_refused_naming_the_variable(url):
    with pytest.raises(ValueError, match="CASELOOM_QUEUE=.*expected sqlite:///path/to/queue.db or redis://"):
        make_huey(url)


# -- sys_job: claiming, holding, losing ------------------------------------------------------------

ELSEWHERE = "elsewhere.example:4242:0a0b0c0d"  # a run on another machine: only its heartbeat tells
SILENT = dt.timedelta(seconds=DEFAULT_LOST_SECONDS + 5)


def stamp(runtime: Runtime, job_id: str, **values) -> None:
    table = runtime.storage.internal("sys_job")
    with runtime.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == job_id).values(**values))


def new_job(runtime: Runtime, name: str = "test_make_groups", **kw) -> str:
    with runtime.engine.begin() as conn:
        return create_job(conn, runtime.storage, name, created_by="admin", **kw)


def dead_worker() -> str:
    """The worker id of a process of this machine that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{liveness.node()}:{child.pid}:deadbeef"


def test_a_job_is_claimed_once_and_a_lost_or_failed_one_again(runtime):
    storage = runtime.storage
    job_id = new_job(runtime, total=5)
    with runtime.engine.begin() as conn:
        assert get_job(conn, storage, job_id).state == QUEUED
        assert claim_job(conn, storage, job_id, ELSEWHERE) is True
        assert claim_job(conn, storage, job_id, "other:1:1") is False  # running, heard from: nobody else runs it
        hold(conn, storage, job_id, ELSEWHERE)
        report_progress(conn, storage, job_id, 2, message="two down", worker=ELSEWHERE)
        assert get_job(conn, storage, job_id).as_result() == {"state": RUNNING, "done": 2, "total": 5, "message": "two down"}
    stamp(runtime, job_id, heartbeat_on=now() - SILENT)
    with runtime.engine.begin() as conn:
        assert claim_job(conn, storage, job_id, "other:1:1") is True  # its worker went silent: a new run takes it
        assert get_job(conn, storage, job_id).worker == "other:1:1"
    with runtime.engine.begin() as conn:  # the first run, should it come back, can commit nothing more
        with pytest.raises(ClaimLost, match="no longer holds the job"):
            hold(conn, storage, job_id, ELSEWHERE)
        with pytest.raises(ClaimLost):
            report_progress(conn, storage, job_id, 3, worker=ELSEWHERE)
        assert finish_job(conn, storage, job_id, "mine", worker=ELSEWHERE) is False
        assert finish_job(conn, storage, job_id, "all done", done=5, worker="other:1:1") is True
        assert claim_job(conn, storage, job_id, "third:1:1") is False  # done is done
        assert get_job(conn, storage, "f" * 32) is None


def _this_process_unknown_run() -> str:
    return f"{liveness.node()}:{os.getpid()}:00000000"  # this pid, but no run of this process: a reused pid


LOSTNESS = {
    "another machine, heard from": (lambda: ELSEWHERE, dt.timedelta(0), None),
    "another machine, silent": (lambda: ELSEWHERE, SILENT, "had not been heard from for 30 s"),
    "this machine, process gone": (dead_worker, dt.timedelta(0), "had stopped"),
    "this machine, process alive": (lambda: f"{liveness.node()}:{os.getppid()}:0", dt.timedelta(0), None),
    "this machine, process alive but silent": (lambda: f"{liveness.node()}:{os.getppid()}:0", SILENT,
                                               "had not been heard from"),
    "this process, a run it does not know": (_this_process_unknown_run, dt.timedelta(0), "had stopped"),
    "this process, one of its runs": ("own", dt.timedelta(0), None),
    "another pid namespace of this host": (lambda: f"{liveness.node()}9:1:0", dt.timedelta(0), None),
}


@pytest.mark.parametrize("worker, silence, reason", LOSTNESS.values(), ids=LOSTNESS.keys())
def test_a_running_job_is_lost_when_silent_or_its_process_is_gone(runtime, worker, silence, reason):
    job_id = new_job(runtime)
    own = liveness.new_worker_id()
    worker_id = own if worker == "own" else worker()
    with liveness.running(own):
        with runtime.engine.begin() as conn:
            assert claim_job(conn, runtime.storage, job_id, worker_id)
        if silence:
            stamp(runtime, job_id, heartbeat_on=now() - silence)
        with runtime.engine.begin() as conn:
            released = release_job(conn, runtime.storage, get_job(conn, runtime.storage, job_id))
            job_row = get_job(conn, runtime.storage, job_id)
    if reason is None:
        assert released is None and (job_row.state, job_row.worker) == (RUNNING, worker_id)
    else:
        assert reason in released and job_row.state == QUEUED and job_row.worker is None
        assert job_row.message == f"resumed: {released}"
        assert liveness.describe_worker(worker_id) in released  # host:pid, as people read it


def test_the_reaper_resumes_lost_jobs_once_and_leaves_live_ones(runtime, queue):
    lost, alive, forgotten = new_job(runtime), new_job(runtime), new_job(runtime)
    for job_id, worker in ((lost, dead_worker()), (alive, ELSEWHERE)):
        with runtime.engine.begin() as conn:
            claim_job(conn, runtime.storage, job_id, worker)
    stamp(runtime, forgotten, updated_on=now() - STALE_AFTER * 2)  # queued, its task message lost
    with runtime.engine.begin() as conn:  # the job's params: what test_make_groups makes
        table = runtime.storage.internal("sys_job")
        conn.execute(sa.update(table).values(params='{"names": ["Alpha"]}'))

    assert sorted(resume_lost(runtime.engine, runtime.storage)) == sorted([lost, forgotten])
    assert resume_lost(runtime.engine, runtime.storage) == []  # a second reaper finds nothing left to take
    stamp(runtime, lost, state=RUNNING, worker=dead_worker())  # lost again; this time the queue's reaper runs it
    assert queue.reap() == [lost]
    assert load(runtime, lost).state == DONE and load(runtime, alive).state == RUNNING


def test_migrating_an_older_database_adds_the_worker_and_heartbeat_of_jobs(runtime):
    """A database made before jobs had a worker and a heartbeat gets them from `caseloom init`
    (the migration), and the jobs it holds keep working."""
    job_id = new_job(runtime)
    with runtime.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_sys_job_state"))
        conn.execute(sa.text("ALTER TABLE sys_job DROP COLUMN worker"))
        conn.execute(sa.text("ALTER TABLE sys_job DROP COLUMN heartbeat_on"))
    assert migrate(runtime.engine, runtime.storage) == [
        "add field sys_job.worker", "add field sys_job.heartbeat_on", "create index ix_sys_job_state on sys_job"]
    with runtime.engine.begin() as conn:
        assert claim_job(conn, runtime.storage, job_id, ELSEWHERE)
        assert get_job(conn, runtime.storage, job_id).worker == ELSEWHERE


def test_a_bad_lost_seconds_setting_is_refused_naming_the_variable(runtime, monkeypatch):
    monkeypatch.setenv("CASELOOM_JOB_LOST_SECONDS", "soon")
    with pytest.raises(ValueError, match="CASELOOM_JOB_LOST_SECONDS='soon': expected a number of seconds"):
        JobQueue(runtime, make_huey(runtime.config.queue)).consumer()
    monkeypatch.setenv("CASELOOM_JOB_LOST_SECONDS", "6")
    assert (liveness.timing().heartbeat, liveness.timing().reap_every) == (1, 2)


# -- runs: a re-run does no work twice; a run that lost its job commits nothing -------------------


def test_a_rerun_after_a_crash_does_no_work_twice(runtime, queue):
    CRASH_AFTER[:] = [2]
    job_id = queue.start("test_make_groups", actor=Actor("admin", frozenset({"admin"})), params={"names": GROUPS})
    crashed = load(runtime, job_id)
    assert (crashed.state, crashed.done, crashed.total, crashed.message) == (FAILED, 2, 5, "RuntimeError: worker lost")
    assert sorted(g["name"] for g in groups(runtime)) == ["Alpha", "Bravo"]

    queue.enqueue_job(job_id)  # the re-run
    rerun = load(runtime, job_id)
    assert (rerun.state, rerun.done, rerun.total, rerun.message) == (DONE, 5, 5, "5 groups")
    made = groups(runtime)
    assert sorted(g["name"] for g in made) == GROUPS  # each once
    assert {g["description"] for g in made} == {"made by admin"}  # written as the user who started it

    queue.enqueue_job(job_id)  # a done job runs no more
    assert load(runtime, job_id) == rerun
    assert len(groups(runtime)) == 5


# test_tick pauses once after its second tick, between units ("between"), or inside its third unit
# before it commits ("inside"): it sets the event, then waits for PAUSE["resume"]
PAUSE: dict[str, threading.Event] = {}


def _pause(where: str) -> None:
    if where in PAUSE:
        PAUSE.pop(where).set()
        PAUSE["resume"].wait(30)


@job("test_tick")
def tick(run) -> str:
    """Not idempotent by itself: it trusts the progress committed with its work (`done`) to know
    where to go on. Two runs that both committed would write some tick twice."""
    names = run.params["names"]
    for i in range(run.job.done, len(names)):
        with run.transaction() as service:
            service.insert("sys_user_group", {"name": names[i], "description": run.worker})
            if i == 2:
                _pause("inside")
            run.progress(service.conn, i + 1, len(names))
        if i == 1:
            _pause("between")
    return f"{len(names)} ticks"


def test_a_run_wrongly_taken_for_lost_cannot_commit_after_another_took_its_job(runtime, monkeypatch):
    """The first run is alive but silent (as a frozen process would be); a second run takes the job
    over and finishes it. When the first goes on, its next unit finds it no longer holds the job:
    it rolls back and stops, and every tick is written exactly once."""
    monkeypatch.setattr(registry, "heartbeat", lambda beat, every: contextlib.nullcontext())  # silent runs
    job_id = new_job(runtime, "test_tick", params={"names": GROUPS})
    PAUSE.update(between=threading.Event(), resume=threading.Event())
    paused = PAUSE["between"]
    first = concurrent.futures.ThreadPoolExecutor(1).submit(execute_job, runtime, job_id)
    try:
        assert paused.wait(30), "the first run should pause after two ticks"
        first_worker = load(runtime, job_id).worker
        assert load(runtime, job_id).done == 2
        assert execute_job(runtime, job_id).state == RUNNING  # alive and heard from: not taken
        stamp(runtime, job_id, heartbeat_on=now() - SILENT)
        second = execute_job(runtime, job_id)  # silent too long: taken over, done
        assert (second.state, second.done, second.message) == (DONE, 5, "5 ticks")
    finally:
        PAUSE["resume"].set()
    assert first.result(30).state == DONE  # the first run stopped and left the job as the second ended it
    made = groups(runtime)
    assert sorted(g["name"] for g in made) == GROUPS  # each tick once
    by = {g["name"]: g["description"] for g in made}
    assert {by["Alpha"], by["Bravo"]} == {first_worker} and first_worker not in {by[n] for n in GROUPS[2:]}
    assert load(runtime, job_id).worker != first_worker


def test_on_postgresql_a_unit_of_work_in_progress_keeps_its_job(runtime, monkeypatch):
    """A run inside a unit of work holds its job's row locked: however long the unit lasts, no
    other run can take the job (on SQLite the unit holds the write lock, so nobody even looks)."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("on SQLite a unit of work holds the write lock: another claimer waits for it to end")
    monkeypatch.setattr(registry, "heartbeat", lambda beat, every: contextlib.nullcontext())
    monkeypatch.setenv("CASELOOM_JOB_LOST_SECONDS", "0.3")
    job_id = new_job(runtime, "test_tick", params={"names": GROUPS})
    PAUSE.update(inside=threading.Event(), resume=threading.Event())
    first = concurrent.futures.ThreadPoolExecutor(1).submit(execute_job, runtime, job_id)
    try:
        assert PAUSE["inside"].wait(30)
        time.sleep(0.5)  # its last sign of life is older than the 0.3 s allowed
        looked = time.monotonic()
        assert execute_job(runtime, job_id).state == RUNNING  # yet its row is locked: it is not taken,
        assert resume_lost(runtime.engine, runtime.storage) == []
        assert time.monotonic() - looked < 5  # and nobody waits for the unit to end to find that out
    finally:
        PAUSE["resume"].set()
    assert (first.result(30).state, load(runtime, job_id).done) == (DONE, 5)
    assert sorted(g["name"] for g in groups(runtime)) == GROUPS


def test_on_sqlite_a_heartbeat_skips_its_beat_while_another_connection_writes(runtime):
    """A long job on SQLite holds the write lock from one commit to the next. Its heartbeat does not
    wait the connection's 30 s for the lock and then fail (the unit stamps the job when it commits):
    it skips that beat, and the next one, the lock free, stamps the job."""
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("on PostgreSQL a beat leaves out the job's row while the run's unit holds it locked")
    job_id = new_job(runtime)
    before = now() - dt.timedelta(seconds=20)
    stamp(runtime, job_id, state=RUNNING, worker=ELSEWHERE, heartbeat_on=before)
    writer = sqlite3.connect(runtime.engine.url.database, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # as a run's unit of work holds it
    try:
        asked = time.monotonic()
        progress.beat(runtime.engine, runtime.storage, job_id, ELSEWHERE)  # no "database is locked"
        assert time.monotonic() - asked < 10  # not the connection's 30 s
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert heartbeat_of(runtime, job_id) == before
    progress.beat(runtime.engine, runtime.storage, job_id, ELSEWHERE)
    assert heartbeat_of(runtime, job_id) > before
    with runtime.engine.connect() as conn:  # the connection waits its 30 s again for other work
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_on_sqlite_a_jobs_units_keep_their_worker_present(runtime, monkeypatch):
    """Through a long job on SQLite the worker's presence thread seldom has the write lock, and
    /health would count the busy worker as gone: the job's units stamp it, and the thread skips a
    beat it cannot have at once instead of waiting 30 s and failing."""
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("on PostgreSQL the presence thread is not held up by a unit of work")
    monkeypatch.setenv("CASELOOM_JOB_LOST_SECONDS", "3600")  # the presence thread stamps once, at start
    presence = workers.Presence(runtime.engine, runtime.storage, 2)
    presence.start()
    try:
        assert wait_for(lambda: presence_seen(runtime, presence.worker_id) is not None)
        long_ago = now() - dt.timedelta(minutes=5)
        table = runtime.storage.internal("sys_worker")
        with runtime.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.id == presence.worker_id).values(seen_on=long_ago))
        job_id = new_job(runtime, params={"names": GROUPS})
        assert execute_job(runtime, job_id).state == DONE
        assert presence_seen(runtime, presence.worker_id) > long_ago  # stamped by the job's units
        writer = sqlite3.connect(runtime.engine.url.database, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # as a job's unit of work holds it
        try:
            asked = time.monotonic()
            presence.stamp()  # no "database is locked"
            assert time.monotonic() - asked < 10
        finally:
            writer.execute("ROLLBACK")
            writer.close()
    finally:
        presence.stop()
    assert presence_seen(runtime, presence.worker_id) is None  # a graceful stop removes its row
    assert execute_job(runtime, new_job(runtime, params={"names": GROUPS})).state == DONE
    assert presence_seen(runtime, presence.worker_id) is None  # and jobs no longer stamp it


def presence_seen(runtime: Runtime, worker_id: str) -> dt.datetime | None:
    table = runtime.storage.internal("sys_worker")
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(table.c.seen_on).where(table.c.id == worker_id)).scalar()


def wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def heartbeat_of(runtime: Runtime, job_id: str) -> dt.datetime:
    table = runtime.storage.internal("sys_job")
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(table.c.heartbeat_on).where(table.c.id == job_id)).scalar_one()


def test_starting_a_unique_job_twice_returns_the_active_one(runtime):
    queue = JobQueue(runtime, make_huey(runtime.config.queue))  # a real (SQLite) queue: nothing consumes it here
    first = queue.start("test_make_groups", target_table="sys_user_group", target_sys_id="a" * 32,
                        params={"names": GROUPS}, unique=True)
    again = queue.start("test_make_groups", target_table="sys_user_group", target_sys_id="a" * 32, unique=True)
    other = queue.start("test_make_groups", target_table="sys_user_group", target_sys_id="b" * 32, unique=True)
    assert again == first and other != first
    assert queue.huey.pending_count() == 2


@pytest.mark.parametrize("name, created_by, message", [
    ("no_such_job", "system", "no job named 'no_such_job' is registered"),
    ("test_make_groups", "nobody", "user 'nobody', who started the job, no longer exists or is inactive"),
])
def test_a_job_that_cannot_run_fails_saying_why(runtime, queue, name, created_by, message):
    with runtime.engine.begin() as conn:
        job_id = create_job(conn, runtime.storage, name, created_by=created_by, params={"names": GROUPS})
    queue.enqueue_job(job_id)
    failed = load(runtime, job_id)
    assert failed.state == FAILED and failed.message.startswith(message)
    assert groups(runtime) == []


# -- the jobs API and the progress fragment ---------------------------------------------------------


def a_case(runtime: Runtime) -> str:
    with runtime.transaction() as service:
        return service.insert("sn_customerservice_case", {"short_description": "Jobs on me"})["sys_id"]


def test_the_jobs_api_shows_progress(app, client, as_user):
    rt = app.extensions["caseloom"]
    case = a_case(rt)
    job_id = new_job(rt, target_table="sn_customerservice_case", target_sys_id=case)
    url = f"/api/caseloom/jobs/{job_id}"
    assert as_user("agent").get(url).json == {"result": {"state": "queued", "done": 0, "total": 0, "message": None}}

    with rt.engine.begin() as conn:
        claim_job(conn, rt.storage, job_id, ELSEWHERE)
        report_progress(conn, rt.storage, job_id, 40, 120, "40 of 120 children")
    assert as_user("agent").get(url).json == {
        "result": {"state": "running", "done": 40, "total": 120, "message": "40 of 120 children"}}

    with rt.engine.begin() as conn:
        finish_job(conn, rt.storage, job_id, "120 children", done=120)
    response = as_user("manager").get(url)
    assert response.status_code == 200
    assert response.json["result"] == {"state": "done", "done": 120, "total": 120, "message": "120 children"}


def test_the_jobs_api_needs_a_user_and_says_404_for_an_unknown_job(client, as_user):
    missing = as_user("agent").get("/api/caseloom/jobs/" + "0" * 32)
    assert missing.status_code == 404
    assert missing.json["status"] == "failure" and "no job with id" in missing.json["error"]["detail"]
    assert client.get("/api/caseloom/jobs/" + "0" * 32).status_code == 401
    assert client.get("/api/caseloom/jobs/x", headers=basic("agent", "wrong")).status_code == 401


ROLES = ["agent", "mim", "author", "admin", "norole"]
# who sees which job: a case's job (read access to cases), jobs without a target record
# (admins and who started them), and a job whose case was deleted (admins only: they see every job)
SEES = {
    "a case's job": ("case", "mim", {"agent", "mim", "admin"}),
    "e-mail delivery, started by the system": (None, "system", {"admin"}),
    "a job without a target, started by the author": (None, "author", {"author", "admin"}),
    "a job without a target, started by the user with no roles": (None, "norole", {"norole", "admin"}),
    "the job of a deleted case": ("deleted", "mim", {"admin"}),
}


@pytest.fixture
def jobs_to_see(app) -> dict[str, str]:
    """One job for each case of SEES (its key -> job id); the user 'norole' (no roles at all) exists."""
    rt = app.extensions["caseloom"]
    with rt.transaction() as service:
        add_user(service, "norole", "norole", [])
    made = {}
    for key, (target, created_by, _) in SEES.items():
        values = {}
        if target:
            case = a_case(rt)
            values = {"target_table": "sn_customerservice_case", "target_sys_id": case}
            if target == "deleted":
                with rt.transaction() as service:
                    service.delete("sn_customerservice_case", case)
        with rt.engine.begin() as conn:
            made[key] = create_job(conn, rt.storage, "action:create_child_cases", created_by=created_by, **values)
    return made


def sign_in(client, user: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page) or re.search(r'name="csrf-token" content="([^"]+)"', page)
    answer = client.post("/login", data={"user_name": user, "user_password": user, "csrf_token": token.group(1)})
    assert answer.status_code == 302, answer.get_data(as_text=True)


@pytest.mark.parametrize("user", ROLES)
def test_only_who_may_read_a_jobs_record_sees_the_job(client, jobs_to_see, user):
    """The jobs API and the progress fragment answer alike: 200 to who may see the job, else 403."""
    for key, job_id in jobs_to_see.items():
        sees = user in SEES[key][2]
        r = client.get(f"/api/caseloom/jobs/{job_id}", headers=basic(user, user))
        if sees:
            assert r.status_code == 200 and r.json["result"]["state"] == "queued", key
        else:
            assert r.status_code == 403, (key, r.json)
            assert r.json["status"] == "failure" and r.json["error"]["message"] == "User Not Authorized"
            detail = r.json["error"]["detail"]
            assert f"user {user!r} may not see job {job_id}" in detail
            assert "queued" not in r.get_data(as_text=True)
            if SEES[key][0] == "deleted" and user in ("agent", "mim"):  # who may read cases hears it is gone
                assert "no longer exists" in detail
            elif SEES[key][0]:  # a record there, but not theirs to read: said so, without its sys_id
                assert "record they may not read" in detail and "no longer exists" not in detail
    sign_in(client, user)
    for key, job_id in jobs_to_see.items():
        sees = user in SEES[key][2]
        r = client.get(f"/ui/job/{job_id}")
        assert r.status_code == (200 if sees else 403), key
        assert ("queued" in r.get_data(as_text=True)) == sees, key
    assert client.get(f"/ui/job/{'0' * 32}").status_code == 404


# -- `caseloom worker` ----------------------------------------------------------------------------


def test_caseloom_worker_processes_a_queued_job_and_stops(config, definitions, mailbox, tmp_path):
    config = dataclasses.replace(config, queue=f"sqlite:///{tmp_path / 'worker-queue.db'}",
                                 smtp_host="127.0.0.1", smtp_port=mailbox.port)
    runtime = Runtime(config, definitions)
    try:
        with runtime.transaction() as service:
            email = service.insert("sys_email", {"recipients": "ann@example.test", "subject": "from the worker", "body": "b"})
        job_id = JobQueue(runtime).start("deliver_email")  # queued in the SQLite file; nothing runs it yet
        assert load(runtime, job_id).state == QUEUED

        env = {**os.environ, "CASELOOM_DATABASE_URL": config.database_url, "CASELOOM_DEFINITIONS": str(DEFINITIONS),
               "CASELOOM_QUEUE": config.queue, "CASELOOM_SMTP_HOST": "127.0.0.1",
               "CASELOOM_SMTP_PORT": str(mailbox.port), "CASELOOM_INSTANCE": str(tmp_path / "instance")}
        worker = subprocess.Popen([sys.executable, "-m", "caseloom.cli", "worker", "--workers", "2"], env=env,
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 20
            while load(runtime, job_id).state != DONE and time.monotonic() < deadline and worker.poll() is None:
                time.sleep(0.1)
            assert load(runtime, job_id).state == DONE
            table = runtime.storage.internal("sys_job")

            def runs():
                with runtime.engine.connect() as conn:
                    return conn.execute(sa.select(table.c.state, table.c.done)
                                        .where(table.c.name == "deliver_email")).all()

            # The worker's start-up sweep may have queued a second delivery run, which may be the one
            # that sends the message: wait until every run has finished, then look.
            deadline = time.monotonic() + 20
            while ({state for state, _ in runs()} != {DONE} or not mailbox.subjects()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert mailbox.subjects() == ["from the worker"]  # exactly once, whoever sent it
            # the sweep delivers outside any job, so the job may have found nothing left to send
            assert {state for state, _ in runs()} == {DONE} and sum(done for _, done in runs()) <= 1
            worker.send_signal(signal.SIGINT)  # graceful: running tasks finish, then it exits
            output, _ = worker.communicate(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
        assert worker.returncode == 0, output
        assert "caseloom worker: 2 thread(s) on sqlite:///" in output
        with runtime.transaction() as service:
            assert service.get("sys_email", email["sys_id"])["state"] == "sent"
    finally:
        runtime.engine.dispose()


def test_the_platform_names_no_application_table():
    """The jobs code is platform code: nothing specific to case management."""
    source = "".join(p.read_text() for p in (ROOT / "platform" / "caseloom" / "jobs").glob("*.py"))
    source += Path(ROOT / "platform" / "caseloom" / "web" / "jobs_api.py").read_text()
    for name in ("sn_customerservice", "customer_account", "major_case"):
        assert name not in source


@pytest.mark.parametrize("database, says", [
    ("sqlite:///{tmp}/never/made.db", "no database at {tmp}/never/made.db (run `caseloom init` first)"),
    ("postgresql+psycopg://caseloom:s3cret@127.0.0.1:1/caseloom",
     "the database postgresql+psycopg://caseloom:***@127.0.0.1:1/caseloom cannot be reached"),
])
@pytest.mark.parametrize("command", ["cancel", "undo"])
def test_a_job_command_without_its_database_says_so_in_one_line(tmp_path, monkeypatch, database, says, command):
    """It printed a traceback of 72 to 128 lines (and made an empty SQLite file)."""
    from click.testing import CliRunner

    from caseloom.cli import main
    from conftest import DEFINITIONS

    monkeypatch.setenv("CASELOOM_DATABASE_URL", database.format(tmp=tmp_path))
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
    result = CliRunner().invoke(main, ["job", command, "0" * 32])
    assert result.exit_code == 1
    assert result.output == f"caseloom job {command}: {says.format(tmp=tmp_path)}\n"
    assert not (tmp_path / "never").exists()


def test_a_forms_job_panel_finds_its_running_job_among_many_ended(client, runtime):
    """The form reads at most RECORD_JOBS of its record's jobs, the queued and running ones first: a job still
    queued is its panel even behind 150 newer ended ones."""
    from conftest import ui_sign_in

    case = "sn_customerservice_case"
    with runtime.transaction() as service:
        sys_id = service.query(case, Query(Term("active", "eq", True)), ["sys_id"], 1)[0]["sys_id"]
    name, target = "action:create_child_cases", {"target_table": case, "target_sys_id": sys_id}
    with runtime.engine.begin() as conn:
        waiting = create_job(conn, runtime.storage, name, **target)
        for _ in range(progress.RECORD_JOBS + 50):
            finish_job(conn, runtime.storage, create_job(conn, runtime.storage, name, **target), "nothing to do")
    ui_sign_in(client, "manager")
    page = client.get(f"/{case}.do?sys_id={sys_id}").get_data(as_text=True)
    assert f'id="job-{waiting}"' in page and "Create child cases: queued" in page
