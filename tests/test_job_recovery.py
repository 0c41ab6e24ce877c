"""A background action whose worker died is resumed quickly, by a new `caseloom worker`, by a
restarted embedded server, or by starting the action again, and every member still gets exactly
one child; a run that lost its job (wrongly taken for lost) commits nothing more.

The figures the README quotes (how long after a kill a job is resumed) are printed by these
tests: run them with `-s` to see them."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from caseloom.access import SYSTEM
from caseloom.actions import run_action
from caseloom.effects import lists as list_effects
from caseloom.jobs import DONE, QUEUED, RUNNING, claim_job, execute_job, get_job, liveness, registry
from caseloom.memberlists import lists_for
from caseloom.query import parse_encoded
from caseloom.records import now
from caseloom.runtime import Runtime
from conftest import DEFINITIONS, ROOT, free_port

CASE = "sn_customerservice_case"
MEMBERS = 40_000  # two batches of the job: the first commits, the worker is killed in the second


def major_with_members(runtime: Runtime, n: int, country: str) -> str:
    """An accepted major case whose recipients list holds `n` new accounts of `country`."""
    with runtime.transaction() as service:
        service.insert_many("customer_account", ({"name": f"{country} {i}", "country": country} for i in range(n)))
        list_id = service.insert("sn_publications_recipients_list",
                                 {"name": country, "type": "accounts", "conditions": f"country={country}"})["sys_id"]
    with runtime.transaction() as service:
        lists_for(service, "sn_publications_recipients_list").refresh(list_id)
        major = service.insert(CASE, {"short_description": "Outage", "state": 10, "major_case_state": "proposed",
                                      "recipient_list": list_id})["sys_id"]
        run_action(service, CASE, major, "accept_major_case", {})  # a candidate created directly: now the major case
    return major


def children(runtime: Runtime, major: str) -> tuple[int, int]:
    """(children of the major case, distinct accounts among them)."""
    with runtime.transaction(SYSTEM) as service:
        rows = service.query(CASE, parse_encoded(f"parent={major}"), ["account"])
    return len(rows), len({r["account"] for r in rows})


def job_row(runtime: Runtime, job_id: str):
    with runtime.engine.connect() as conn:
        return get_job(conn, runtime.storage, job_id)


def wait_for(check, timeout: float, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(step)
    return check()


def run_by(runtime: Runtime, job_id: str, pid: int) -> bool:
    """Whether the job is running (or done) under a run of process `pid` or one of its children (the
    worker process `caseloom serve` runs beside gunicorn)."""
    job = job_row(runtime, job_id)
    return job.state in (RUNNING, DONE) and any(f":{p}:" in (job.worker or "") for p in family(pid))


def family(pid: int) -> set[int]:
    """`pid` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def start_action(api, major: str, comments: str):
    r = api.post(f"/api/caseloom/actions/{CASE}/{major}/create_child_cases", json={"comments": comments})
    assert r.status_code == 202, r.json
    return r.json["result"]["job"], r.json["message"]


def stamp(runtime: Runtime, job_id: str, **values) -> None:
    table = runtime.storage.internal("sys_job")
    with runtime.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == job_id).values(**values))


def report(name: str, seconds: float) -> None:
    print(f"\n[job recovery] {name}: {seconds:.2f} s", flush=True)


# -- in process -------------------------------------------------------------------------------------


def test_a_run_that_lost_its_job_commits_no_batch_of_children(config, definitions, monkeypatch):
    """The first run is paused between two batches, silent as a frozen process; a second run takes
    the job over and finishes it; the first, going on, finds it lost its job and stops before
    committing another batch. Every member has exactly one child."""
    monkeypatch.setattr(list_effects, "SET_BATCH", 2)
    monkeypatch.setattr(registry, "heartbeat", lambda beat, every: contextlib.nullcontext())
    runtime = Runtime(dataclasses.replace(config, job_commit_seconds=0), definitions)
    try:
        major = major_with_members(runtime, 8, "YY")
        with runtime.transaction() as service:
            job_id = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"}).job
        paused, resume = threading.Event(), threading.Event()

        def pause_once(service) -> None:  # a commit hook: runs after each committed batch
            if not paused.is_set():
                paused.set()
                resume.wait(30)

        runtime.commit_hooks.append(pause_once)
        first = concurrent.futures.ThreadPoolExecutor(1).submit(execute_job, runtime, job_id)
        try:
            assert paused.wait(30)
            first_worker = job_row(runtime, job_id).worker
            assert children(runtime, major) == (2, 2)
            assert execute_job(runtime, job_id).state == RUNNING  # heard from lately: left alone
            stamp(runtime, job_id, heartbeat_on=now() - dt.timedelta(minutes=1))
            second = execute_job(runtime, job_id)
            # the second run made six; its counts go on from the two the first one committed
            assert (second.state, second.done, second.total, second.message) == (DONE, 8, 8, "8 child records created")
        finally:
            resume.set()
        assert first.result(30).state == DONE and job_row(runtime, job_id).worker != first_worker
        assert children(runtime, major) == (8, 8)
    finally:
        runtime.engine.dispose()


def test_starting_the_action_again_resumes_a_job_whose_worker_died(app, as_user):
    runtime = app.extensions["caseloom"]
    major = major_with_members(runtime, 5, "XX")
    mim = as_user("mim")
    job_id, message = start_action(mim, major, "first")
    assert message == "Create child cases started"
    with runtime.engine.begin() as conn:
        claim_job(conn, runtime.storage, job_id, "elsewhere.example:4242:0")
    assert start_action(mim, major, "second") == (job_id, "Create child cases is already running")

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stamp(runtime, job_id, worker=f"{liveness.node()}:{dead.pid}:0")  # the worker holding it has died
    again, message = start_action(mim, major, "third")
    assert again == job_id
    assert message == (f"Create child cases resumed, with the inputs it was started with: the worker running it "
                       f"({liveness.describe_worker(f'{liveness.node()}:{dead.pid}:0')}) had stopped")
    assert mim.get(f"/api/caseloom/jobs/{job_id}").json["result"]["state"] == QUEUED
    assert execute_job(runtime, job_id).state == DONE
    assert children(runtime, major) == (5, 5)
    with runtime.transaction(SYSTEM) as service:
        child = service.query(CASE, parse_encoded(f"parent={major}"), ["sys_id"])[0]["sys_id"]
        notes = service.query("sys_journal_field", parse_encoded(f"element_id={child}"), ["value"])
    assert [n["value"] for n in notes] == ["first"]


# -- real processes, killed -------------------------------------------------------------------------


def environment(config, tmp_path, **extra: str) -> dict:
    return {**os.environ, "CASELOOM_DATABASE_URL": config.database_url, "CASELOOM_DEFINITIONS": str(DEFINITIONS),
            "CASELOOM_QUEUE": config.queue, "CASELOOM_INSTANCE": str(tmp_path / "instance"),
            "CASELOOM_UI": str(ROOT / "ui"), "CASELOOM_SCRIPTS": str(ROOT / "scripts"),
            "CASELOOM_SECRET_KEY": "test-secret",
            "CASELOOM_JOB_COMMIT_SECONDS": "0",  # commit after every batch, so there is a middle to kill it in
            **extra}


@contextlib.contextmanager
def processes():
    """Start processes with `start(*args, env=...)`; whatever is still running at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str, env: dict, cwd) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "caseloom.cli", *args], env=env, cwd=cwd,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def kill_mid_job(runtime: Runtime, job_id: str, process: subprocess.Popen, total: int) -> None:
    """Wait until the process has committed part of the job, then kill -9 it."""
    assert wait_for(lambda: run_by(runtime, job_id, process.pid) and job_row(runtime, job_id).done > 0, 60), \
        job_row(runtime, job_id)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert wait_for(lambda: not job_locked(runtime, job_id), 60), "the killed worker's transaction never ended"
    assert 0 < children(runtime, job_row(runtime, job_id).target_sys_id)[0] < total, "killed in the middle"


def job_locked(runtime: Runtime, job_id: str) -> bool:
    """Whether another transaction holds the job's row. On PostgreSQL the killed worker's server
    process goes on with its statement (a batch of children) until it finds its client gone, and
    its transaction holds the row till then: a new start of the action meanwhile rightly says the
    job is already running. SQLite's locks go with the process."""
    if runtime.engine.dialect.name != "postgresql":
        return False
    table = runtime.storage.internal("sys_job")
    with runtime.engine.begin() as conn:
        mine = sa.select(table.c.id).where(table.c.id == job_id).with_for_update(skip_locked=True)
        return conn.execute(mine).first() is None


@pytest.mark.parametrize("start_again", [False, True], ids=["a new worker alone", "the action started again"])
def test_a_killed_workers_job_is_resumed_within_seconds_by_the_next_worker(app, as_user, config, tmp_path,
                                                                           start_again):
    """kill -9 a `caseloom worker` in the middle of create_child_cases. A new worker's reaper finds
    the job when it starts (same machine, its process gone) and runs it; or, first, a second start
    of the action says it resumed the job (not "already running"). Every member: one child."""
    runtime = app.extensions["caseloom"]
    major = major_with_members(runtime, MEMBERS, "KK")
    mim = as_user("mim")
    job_id, _ = start_action(mim, major, "hello")  # enqueued in the test's queue file
    env = environment(config, tmp_path)
    with processes() as start:
        kill_mid_job(runtime, job_id, start("worker", "--workers", "1", env=env, cwd=tmp_path), MEMBERS)
        assert job_row(runtime, job_id).state == RUNNING  # as the dead worker left it
        if start_again:
            again, message = start_action(mim, major, "hello again")
            assert again == job_id and message.startswith("Create child cases resumed") and "had stopped" in message
            assert job_row(runtime, job_id).state == QUEUED
        started = time.monotonic()
        second = start("worker", "--workers", "1", env=env, cwd=tmp_path)
        assert wait_for(lambda: run_by(runtime, job_id, second.pid), 30), job_row(runtime, job_id)
        report(f"killed worker ({'the action started again' if start_again else 'a new worker alone'}): "
               "resumed after the new worker started", time.monotonic() - started)
        assert time.monotonic() - started < 15
        assert wait_for(lambda: job_row(runtime, job_id).state == DONE, 120, 0.1), job_row(runtime, job_id)
    assert children(runtime, major) == (MEMBERS, MEMBERS)


def test_a_silent_worker_on_another_machine_is_resumed_once_its_heartbeat_is_old(config, runtime, tmp_path):
    """A worker elsewhere cannot be looked up by pid: its job is resumed when its heartbeat is older
    than CASELOOM_JOB_LOST_SECONDS (3 s here; 30 s by default), and not before."""
    major = major_with_members(runtime, 5, "EE")
    with runtime.transaction() as service:
        job_id = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"}).job
    with runtime.engine.begin() as conn:
        claim_job(conn, runtime.storage, job_id, "elsewhere.example:4242:0")
    last_heard = time.monotonic()
    with processes() as start:
        worker = start("worker", "--workers", "1", env=environment(config, tmp_path, CASELOOM_JOB_LOST_SECONDS="3"),
                       cwd=tmp_path)
        assert wait_for(lambda: run_by(runtime, job_id, worker.pid), 30), job_row(runtime, job_id)
        resumed = time.monotonic() - last_heard
        report("silent worker on another machine (lost after 3 s): resumed after its last heartbeat", resumed)
        assert 3 <= resumed < 12
        assert wait_for(lambda: job_row(runtime, job_id).state == DONE, 30, 0.1), job_row(runtime, job_id)
    assert children(runtime, major) == (5, 5)


def http(method: str, url: str, user: str, body: dict | None = None) -> tuple[int, dict]:
    token = base64.b64encode(f"{user}:{user}".encode()).decode()
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def serving(base: str) -> bool:
    try:
        return http("GET", f"{base}/api/caseloom/jobs/{'0' * 32}", "admin")[0] == 404
    except OSError:
        return False


def test_a_restarted_embedded_server_resumes_its_job_at_once(config, runtime, tmp_path):
    """`caseloom serve` runs jobs in-process with the embedded queue: kill -9 it mid-job, start it
    again, and the job goes on as soon as it is up (its process is gone from this node), not once the
    job is lost (CASELOOM_JOB_LOST_SECONDS, ten minutes here, so a slow start cannot be mistaken)."""
    major = major_with_members(runtime, MEMBERS, "SS")
    port = free_port()
    base, env = f"http://127.0.0.1:{port}", environment(config, tmp_path, CASELOOM_JOB_LOST_SECONDS="600")
    with processes() as start:
        server = start("serve", "--port", str(port), env=env, cwd=tmp_path)
        assert wait_for(lambda: serving(base), 60, 0.2)
        status, body = http("POST", f"{base}/api/caseloom/actions/{CASE}/{major}/create_child_cases", "mim",
                            {"comments": "hello"})
        assert status == 202, body
        job_id = body["result"]["job"]
        kill_mid_job(runtime, job_id, server, MEMBERS)
        killed = time.monotonic()
        again = start("serve", "--port", str(port), env=env, cwd=tmp_path)
        assert wait_for(lambda: run_by(runtime, job_id, again.pid), 60), job_row(runtime, job_id)
        resumed = time.monotonic()
        report("embedded server killed and started again: resumed after the restart", resumed - killed)
        assert resumed - killed < 60
        assert wait_for(lambda: job_row(runtime, job_id).state == DONE, 120, 0.1), job_row(runtime, job_id)
        status, body = http("GET", f"{base}/api/caseloom/jobs/{job_id}", "mim")
        assert status == 200 and body["result"]["state"] == "done"
    assert children(runtime, major) == (MEMBERS, MEMBERS)


@pytest.mark.parametrize("value", ["0", "soon", "-5"])
def test_caseloom_worker_refuses_a_lost_seconds_setting_it_cannot_use(config, tmp_path, value):
    ran = subprocess.run([sys.executable, "-m", "caseloom.cli", "worker"], capture_output=True, text=True, timeout=60,
                         env=environment(config, tmp_path, CASELOOM_JOB_LOST_SECONDS=value), cwd=tmp_path)
    assert ran.returncode == 1
    assert f"caseloom worker: CASELOOM_JOB_LOST_SECONDS={value!r}: expected a number of seconds" in ran.stderr
