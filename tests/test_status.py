"""System status (caseloom.status): the administrators' page `/ui/status`, `GET /api/caseloom/status` and
`caseloom status`, one reading of the health checks, the job workers, the jobs and the e-mail.

The jobs and workers are made as the platform makes them (create_job, claim_job, finish_job and fail_job on
sys_job; a worker's stamp in sys_worker), on both databases; a worker that stopped is a finished process's pid."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from caseloom.cli import main
from caseloom.config import Config
from caseloom.health import Health
from caseloom.jobs import JobQueue, claim_job, create_job, fail_job, finish_job, liveness, report_progress, workers
from caseloom.query import Query, Term
from caseloom.records import now
from caseloom.runtime import Runtime
from caseloom.status import ENDED_SHOWN, read_status
from conftest import DEFINITIONS, ROOT, basic, free_port, sqlite_plans, ui_sign_in


def text_of(html: str) -> str:
    """A page's words as a person reads them: no tags, one space between words."""
    inline = re.sub(r"</?(a|strong|code|span)\b[^>]*>", "", html)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", inline)).replace("&#39;", "'").replace("&amp;", "&")


def gone_pid() -> int:
    """The pid of a process of this machine that has ended."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(timeout=30)
    return ended.pid


@dataclasses.dataclass
class Scene:
    case_number: str
    case_id: str
    queued: str
    running: str
    lost: str
    done: str
    failed: str
    slice_id: str
    worker: str


def scene(runtime: Runtime) -> Scene:
    """A live worker (on another machine), a queued job and a running one on a case, a job whose worker has
    stopped, a slice of the running one, a job done and one failed, and e-mail in four states."""
    with runtime.transaction() as service:
        case = service.query("sn_customerservice_case", Query(Term("active", "eq", True), (("number", False),)),
                             ["sys_id", "number"], 1)[0]
        for state in ("ready", "ready", "sent", "error"):
            service.insert("sys_email", {"recipients": "ann@example.test", "subject": "s", "body": "b", "state": state})
    worker = "elsewhere/1:42:feed"  # a worker on another machine: only its heartbeats tell whether it lives
    workers.stamp(runtime.engine, runtime.storage, worker, 2)
    storage = runtime.storage
    target = {"target_table": "sn_customerservice_case", "target_sys_id": case["sys_id"]}
    with runtime.engine.begin() as conn:
        queued = create_job(conn, storage, "status_test_queued", **target)
        running = create_job(conn, storage, "status_test_running", **target, total=400)
        lost = create_job(conn, storage, "status_test_lost", **target)
        slice_id = create_job(conn, storage, "status_test_slice", target_table="sys_job", target_sys_id=running)
        done = create_job(conn, storage, "status_test_done", **target)
        failed = create_job(conn, storage, "status_test_failed")
    with runtime.engine.begin() as conn:
        assert claim_job(conn, storage, running, worker)
        report_progress(conn, storage, running, 100, 400, worker=worker)
        assert claim_job(conn, storage, lost, f"{liveness.node()}:{gone_pid()}:dead")
        assert claim_job(conn, storage, done, worker)
        assert finish_job(conn, storage, done, "3 child records created", done=3, total=3, worker=worker)
        assert fail_job(conn, storage, failed, "the SMTP server refused the sign-in")
        job = storage.internal("sys_job")  # ended a second apart: the failed one last
        ended = conn.execute(sa.select(job.c.updated_on).where(job.c.id == done)).scalar_one()
        conn.execute(sa.update(job).where(job.c.id == failed).values(updated_on=ended + dt.timedelta(seconds=1)))
    return Scene(case["number"], case["sys_id"], queued, running, lost, done, failed, slice_id, worker)


def test_the_page_shows_health_workers_jobs_and_email(client, app):
    s = scene(app.extensions["caseloom"])
    ui_sign_in(client, "admin")
    page = client.get("/ui/status")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    words = text_of(html)
    assert "Up: the database, the queue and 1 job worker answer." in words
    assert "1 job is lost: its worker stopped or went silent" in words
    assert re.search(r"Database Up (sqlite|postgresql) [\d.]+; answered in [\d.]+ ms", words)
    assert re.search(r"Queue Up sqlite; \d+ task messages? waiting for a worker", words)
    assert "Job workers Up 1 alive" in words
    assert re.search(r"elsewhere/1 42 2 \d+ s ago Yes", words)
    # the jobs in progress, the oldest first: each with its record, state, progress and worker
    active = words[words.index("Jobs in progress"):words.index("Last ended")]
    order = [active.index(name) for name in ("Status test queued", "Status test running", "Status test lost",
                                             "Status test slice")]
    assert order == sorted(order)
    assert f'<a href="/sn_customerservice_case.do?sys_id={s.case_id}">{s.case_number}</a>' in html
    assert "Status test running Case " + s.case_number + " Running 25% 100 of 400" in active
    assert re.search(r"elsewhere:42, heard from \d+ Seconds? ago", active)
    assert re.search(r"Status test lost Case \w+ Running: lost \(the worker running it \([^)]+\) had stopped\)", active)
    assert f"Status test slice a slice of job {s.running[:8]} Queued" in active
    assert 'class="lost"' in html
    ended = words[words.index("Last ended"):words.index("E-mail")]
    assert "Status test failed Failed 0 " in ended and "the SMTP server refused the sign-in" in ended
    assert f"Status test done Case {s.case_number} Done 3 of 3" in ended and "3 child records created" in ended
    assert ended.index("Status test failed") < ended.index("Status test done")  # the newest first
    email = words[words.index("E-mail"):]
    assert "Ready: 2" in email and "Sent: 1" in email and "Error: 1" in email
    assert "The oldest message waiting for delivery was written 0 minutes ago." in email
    assert 'href="/sys_email_list.do?sysparm_query=state%3Dready"' in html
    # it draws itself again every 5 seconds, and its part alone is the part
    assert 'hx-get="/ui/status?part=1" hx-trigger="every 5s"' in html and "updated every 5 seconds" in words
    part = client.get("/ui/status?part=1").get_data(as_text=True)
    assert part.lstrip().startswith("<div id=\"system-status\"") and "<html" not in part
    assert "Status test running" in part


def test_the_page_is_for_administrators_and_in_their_menu(client):
    assert client.get("/ui/status").status_code == 302  # to the sign-in
    ui_sign_in(client, "agent")
    assert client.get("/ui/status").status_code == 403
    assert "System status" not in client.get("/").get_data(as_text=True)
    client.get("/logout")
    ui_sign_in(client, "admin")
    assert '<a href="/ui/status">System status</a>' in client.get("/").get_data(as_text=True).replace("\n", "")


def test_the_page_says_which_part_is_down(client):
    """No worker stamped: the workers are down, as /health says, and the verdict names them."""
    ui_sign_in(client, "admin")
    words = text_of(client.get("/ui/status").get_data(as_text=True))
    assert "Down: no job worker is alive. /health answers 503." in words
    assert "Job workers Down 0 alive" in words and "No job is queued or running." in words


def test_the_api_answers_the_same_reading_for_administrators(client, app):
    s = scene(app.extensions["caseloom"])
    assert client.get("/api/caseloom/status").status_code == 401
    assert client.get("/api/caseloom/status", headers=basic("agent")).status_code == 403
    answer = client.get("/api/caseloom/status", headers=basic("admin"))
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    result = answer.json["result"]
    assert result["status"] == "ok" and result["health"]["workers"]["alive"] == 1
    assert result["health"] == client.get("/health").json | {"database": result["health"]["database"],
                                                             "queue": result["health"]["queue"],
                                                             "workers": result["health"]["workers"]}
    assert result["database"]["kind"] in ("sqlite", "postgresql") and result["database"]["version"]
    active = {j["name"]: j for j in result["jobs"]["active"]}
    assert list(active) == ["status_test_queued", "status_test_running", "status_test_lost", "status_test_slice"]
    running = active["status_test_running"]
    assert (running["state"], running["done"], running["total"], running["target_sys_id"]) == ("running", 100, 400, s.case_id)
    assert running["worker"] == "elsewhere:42" and running["lost"] is None
    assert running["heard_seconds"] >= 0 and running["seconds"] >= 0
    assert active["status_test_lost"]["lost"].startswith("the worker running it (")
    assert active["status_test_slice"]["slice_of"] == s.running and active["status_test_slice"]["target_table"] is None
    assert active["status_test_queued"]["worker"] is None
    ended = [(j["name"], j["state"], j["message"]) for j in result["jobs"]["ended"]]
    assert ended[:2] == [("status_test_failed", "failed", "the SMTP server refused the sign-in"),
                         ("status_test_done", "done", "3 child records created")]
    email = result["email"]
    assert email["by_state"]["ready"] >= 2 and email["by_state"]["error"] >= 1 and email["waiting"] >= 2
    assert email["sent_last_minute"] == 0 and email["oldest_waiting_seconds"] >= 0
    assert result["problems"] == {}
    assert s.worker.rsplit(":", 1)[1] not in answer.get_data(as_text=True)  # a run's token is its own


def test_only_the_last_jobs_to_end_are_listed(runtime):
    job, start = runtime.storage.internal("sys_job"), now()
    with runtime.engine.begin() as conn:
        for i in range(ENDED_SHOWN + 5):
            ended = create_job(conn, runtime.storage, f"status_test_{i:02d}")
            finish_job(conn, runtime.storage, ended, done=i)
            conn.execute(sa.update(job).where(job.c.id == ended).values(updated_on=start + dt.timedelta(seconds=i)))
    found = read_status(runtime, JobQueue(runtime), Health())
    assert [line.job.name for line in found.ended] == [f"status_test_{i:02d}" for i in range(ENDED_SHOWN + 4, 4, -1)]


def environment(config: Config, **extra: str) -> dict:
    return {"CASELOOM_DATABASE_URL": config.database_url, "CASELOOM_DEFINITIONS": str(DEFINITIONS),
            "CASELOOM_QUEUE": config.queue, "CASELOOM_INSTANCE": config.instance, **extra}


def test_the_command_prints_the_reading_and_exits_1_when_a_part_is_down(config, runtime):
    runner = CliRunner()
    down = runner.invoke(main, ["status"], env=environment(config))
    assert down.exit_code == 1, down.output
    assert down.output.splitlines()[0] == "status: down (workers)"
    assert "workers: down (none seen within 30 s), 0 alive" in down.output
    s = scene(runtime)
    up = runner.invoke(main, ["status"], env=environment(config))
    assert up.exit_code == 0, up.output
    lines = up.output.splitlines()
    assert lines[0] == "status: ok"
    assert re.fullmatch(r"database: up, (sqlite|postgresql) [\d.]+, [\d.]+ ms", lines[1])
    assert re.fullmatch(r"queue: up, sqlite, \d+ task message\(s\) waiting", lines[2])
    assert lines[3] == "workers: up, 1 alive"
    assert re.fullmatch(r"  elsewhere/1 pid 42, 2 thread\(s\), seen \d+ s ago", lines[4])
    assert "jobs in progress: 4, 1 lost" in lines
    assert any(line.startswith(f"  {s.running} status_test_running running on sn_customerservice_case {s.case_id}, "
                               "100 of 400, ") for line in lines)
    assert any(line.startswith(f"  {s.slice_id} status_test_slice queued (a slice of {s.running})") for line in lines)
    assert any(f"{s.lost} status_test_lost running" in line and "; LOST: the worker running it (" in line for line in lines)
    assert any(line.startswith(f"  {s.failed} status_test_failed failed, 0 done, ")
               and line.endswith(": the SMTP server refused the sign-in") for line in lines)
    assert re.search(r"^e-mail: .*2 ready.*1 sent, 1 error.*; the oldest waiting written 0 min ago; 0 delivered in the last "
                     r"minute$", up.output, re.M)
    as_json = runner.invoke(main, ["status", "--json"], env=environment(config))
    assert as_json.exit_code == 0
    body = json.loads(as_json.output)
    assert body["status"] == "ok" and [j["name"] for j in body["jobs"]["active"]][1] == "status_test_running"


def test_the_command_says_the_queue_is_down_and_shows_no_secret(config, runtime):
    scene(runtime)
    queue = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    found = CliRunner().invoke(main, ["status"], env=environment(config, CASELOOM_QUEUE=queue))
    assert found.exit_code == 1
    assert found.output.splitlines()[:3][0] == "status: down (queue)"
    assert "queue: down (ConnectionError), redis, its waiting messages not counted" in found.output
    assert "s3cret" not in found.output and "jobs in progress: 4, 1 lost" in found.output


def test_a_database_nobody_answers_is_down_and_nothing_else_is_read(definitions, tmp_path):
    url = f"postgresql+psycopg://caseloom:s3cret-pw@127.0.0.1:{free_port()}/caseloom"
    config = Config(database_url=url, definitions=str(DEFINITIONS), ui=str(ROOT / "ui"), instance=str(tmp_path / "i"),
                    secret_key="test-secret", queue=f"sqlite:///{tmp_path / 'queue.db'}")
    runtime = Runtime(config, definitions)
    try:
        found = read_status(runtime, JobQueue(runtime), Health())
    finally:
        runtime.engine.dispose()
    assert not found.ok and found.problems == {"database": "OperationalError"}
    assert found.active == [] and found.email is None
    body = json.dumps(found.as_json())
    assert "s3cret" not in body and "127.0.0.1" not in body
    printed = CliRunner().invoke(main, ["status"], env=environment(config))
    assert printed.exit_code == 1 and printed.output.splitlines()[0] == "status: down (database, workers)"
    assert "database: down (OperationalError), postgresql" in printed.output and "s3cret" not in printed.output


@pytest.mark.parametrize("user, status", [("admin", 200), ("manager", 403), ("agent", 403), ("customer", 403)])
def test_who_may_read_the_status(client, user, status):
    assert client.get("/api/caseloom/status", headers=basic(user)).status_code == status


def test_the_email_part_is_left_out_when_it_cannot_be_read(client, runtime):
    with runtime.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE sys_email"))
    result = client.get("/api/caseloom/status", headers=basic("admin")).json["result"]
    assert result["email"] is None and result["problems"] == {"email": result["problems"]["email"]}
    assert result["problems"]["email"] in ("OperationalError", "ProgrammingError")
    assert result["health"]["database"]["ok"]


def test_an_administrator_stops_a_job_from_the_page_and_comes_back_to_it(client, app):
    s = scene(app.extensions["caseloom"])
    ui_sign_in(client, "admin")
    html = client.get("/ui/status").get_data(as_text=True)
    assert html.count(">Stop</button>") == 4  # every job in progress
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    answer = client.post(f"/ui/job/{s.queued}/cancel", data={"csrf_token": token, "back": "/ui/status"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/ui/status"
    words = text_of(client.get("/ui/status").get_data(as_text=True))
    assert "Status test queued canceled by System Administrator before it started." in words
    ended = words[words.index("Last ended"):words.index("E-mail")]
    assert f"Status test queued Case {s.case_number} Canceled 0 " in ended
    assert "Status test queued" not in words[words.index("Jobs in progress"):words.index("Last ended")]
    elsewhere = client.post(f"/ui/job/{s.running}/cancel", data={"csrf_token": token, "back": "https://evil.example/"})
    assert elsewhere.headers["Location"] == f"/sn_customerservice_case.do?sys_id={s.case_id}"  # not off the site


def test_the_reaper_and_the_status_read_a_few_jobs_by_index_among_many_ended(runtime):
    """With thousands of ended jobs and the statistics SQLite's hourly ANALYZE keeps (which average the rows
    per state), each statement of the reaper's round and of the status's jobs reads along an index that starts
    with the state: none reads the whole of sys_job."""
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner and its statistics; PostgreSQL's plans are in test_statistics")
    from caseloom.jobs.progress import resume_lost
    from caseloom.status import _jobs

    job, start = runtime.storage.internal("sys_job"), now() - dt.timedelta(days=30)
    rows = [{"id": f"{i:032x}", "name": "status_test", "state": "done" if i % 50 else "failed", "done": 1, "total": 1,
             "created_on": start + dt.timedelta(minutes=i), "updated_on": start + dt.timedelta(minutes=i, seconds=5)}
            for i in range(20_000)]
    with runtime.engine.begin() as conn:
        conn.execute(sa.insert(job), rows)
        create_job(conn, runtime.storage, "status_test_queued")
        conn.exec_driver_sql("ANALYZE sys_job")
    found: dict = {}

    def read() -> None:
        resume_lost(runtime.engine, runtime.storage)
        with runtime.engine.connect() as conn:
            found["active"], found["ended"] = _jobs(conn, runtime)

    plans = sqlite_plans(runtime.engine, "sys_job", read)
    assert [line.job.name for line in found["active"]] == ["status_test_queued"] and len(found["ended"]) == ENDED_SHOWN
    assert found["ended"][0].job.id == f"{19_999:032x}"
    assert len(plans) >= 6  # the reaper's running and stale jobs; the status's two states active, three ended
    for statement, plan in plans:
        assert re.search(r"SEARCH sys_job USING INDEX ix_sys_job_state\w* \(state=\?", plan), (statement, plan)
