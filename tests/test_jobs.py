"""Background jobs: the queue from CASELOOM_QUEUE, sys_job progress, re-runs that do no work twice,
the jobs API, and `caseloom worker` in a real subprocess."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
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
    JobQueue,
    claim_job,
    create_job,
    finish_job,
    get_job,
    job,
    make_huey,
    report_progress,
)
from caseloom.query import Query, Term
from caseloom.runtime import Runtime
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


# -- sys_job ----------------------------------------------------------------------------------------


def test_a_job_is_claimed_once_and_a_stale_or_failed_one_again(runtime):
    storage = runtime.storage
    with runtime.engine.begin() as conn:
        job_id = create_job(conn, storage, "test_make_groups", created_by="admin", total=5)
        assert get_job(conn, storage, job_id).state == QUEUED
        assert claim_job(conn, storage, job_id) is True
        assert claim_job(conn, storage, job_id) is False  # running, and reporting: nobody else runs it
        report_progress(conn, storage, job_id, 2, message="two down")
        assert get_job(conn, storage, job_id).as_result() == {"state": RUNNING, "done": 2, "total": 5, "message": "two down"}
        table = storage.internal("sys_job")
        silent = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)
        conn.execute(sa.update(table).where(table.c.id == job_id).values(updated_on=silent))
        assert claim_job(conn, storage, job_id) is True  # its worker went silent: a re-run may take it
        finish_job(conn, storage, job_id, "all done", done=5)
        assert claim_job(conn, storage, job_id) is False  # done is done
        assert get_job(conn, storage, "f" * 32) is None


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


# -- the jobs API -----------------------------------------------------------------------------------


def test_the_jobs_api_shows_progress(app, client, as_user):
    rt = app.extensions["caseloom"]
    with rt.engine.begin() as conn:
        job_id = create_job(conn, rt.storage, "test_make_groups", created_by="agent")
    url = f"/api/caseloom/jobs/{job_id}"
    assert as_user("agent").get(url).json == {"result": {"state": "queued", "done": 0, "total": 0, "message": None}}

    with rt.engine.begin() as conn:
        claim_job(conn, rt.storage, job_id)
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
